#!/usr/bin/env bash
# make demo: 8 workers add 1 to a shared counter file 25 times each by
# read-sleep-write, each step under `redlock run`; then the same without the
# lock, to show the lost updates the lock prevents.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/redlock}
WORKERS=8
STEPS=25
work=$(mktemp -d /tmp/redlock-demo-XXXXXX)
server_pid=""

cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${REDLOCK_URL:-}" ]; then
    sh tests/deps.sh
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
           || echo $((20000 + RANDOM % 20000)))
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$work" --loglevel warning --daemonize no >"$work/redis.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.05
    done
    export REDLOCK_URL="redis://127.0.0.1:$port"
    echo "started a throwaway redis-server on 127.0.0.1:$port (pid $server_pid)"
else
    echo "using REDLOCK_URL=$REDLOCK_URL"
fi

# One step of the critical section: enter (mkdir is an atomic test-and-set:
# it fails if someone else is inside), read, sleep, write, leave.
cat >"$work/step.sh" <<'STEP'
#!/usr/bin/env bash
dir=$1
if ! mkdir "$dir/inside" 2>/dev/null; then echo x >>"$dir/overlaps"; fi
n=$(cat "$dir/counter")
sleep 0.005
echo $((n + 1)) >"$dir/counter"
[ -n "${REDLOCK_FENCE:-}" ] && echo "$REDLOCK_FENCE" >>"$dir/fences"
rmdir "$dir/inside" 2>/dev/null || true
STEP
chmod +x "$work/step.sh"

run_workers() { # $1: with or without
    local dir=$work/$1
    mkdir -p "$dir"
    echo 0 >"$dir/counter"
    : >"$dir/overlaps"
    : >"$dir/fences"
    local pids=()
    for w in $(seq 1 $WORKERS); do
        (
            for _ in $(seq 1 $STEPS); do
                if [ "$1" = with ]; then
                    "$BIN" run -q -t 10s -w 30s demo-counter -- "$work/step.sh" "$dir" || exit 1
                else
                    "$work/step.sh" "$dir"
                fi
            done
        ) &
        pids+=($!)
    done
    local fail=0
    for p in "${pids[@]}"; do wait "$p" || fail=1; done
    return $fail
}

echo "== $WORKERS workers x $STEPS increments, each under 'redlock run demo-counter'"
start=$(date +%s.%N)
run_workers with &
runner=$!
while kill -0 $runner 2>/dev/null; do
    printf '   counter %s / %d\r' "$(cat "$work/with/counter" 2>/dev/null || echo 0)" $((WORKERS * STEPS))
    sleep 0.5
done
wait $runner
echo
secs=$(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || echo "?")
counter=$(cat "$work/with/counter")
overlaps=$(wc -l <"$work/with/overlaps")
nf=$(wc -l <"$work/with/fences")
first=$(head -1 "$work/with/fences")
last=$(tail -1 "$work/with/fences")
if sort -n -c "$work/with/fences" 2>/dev/null && [ "$(sort -un "$work/with/fences" | wc -l)" = "$nf" ]; then
    increasing=yes
else
    increasing=no
fi
echo "   counter $counter / $((WORKERS * STEPS)) in ${secs}s"
echo "   at most one worker inside at any moment: $([ "$overlaps" = 0 ] && echo yes || echo "NO ($overlaps overlaps)")"
echo "   fence tokens: $nf seen, $first .. $last, strictly increasing in entry order: $increasing"

echo "== the same $WORKERS workers without the lock"
run_workers without
ucounter=$(cat "$work/without/counter")
uoverlaps=$(wc -l <"$work/without/overlaps")
echo "   counter $ucounter / $((WORKERS * STEPS)): $(( WORKERS * STEPS - ucounter )) updates lost, $uoverlaps times two workers were inside at once"

if [ "$counter" = $((WORKERS * STEPS)) ] && [ "$overlaps" = 0 ] && [ "$increasing" = yes ]; then
    echo "demo: OK, the lock kept every update"
else
    echo "demo: FAILED"; exit 1
fi
