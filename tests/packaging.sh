#!/usr/bin/env bash
# tests/packaging.sh (make test-packaging) - redlock-c the ways its users get
# it, each from a fresh build and install in a temp dir, each program run
# against a redis-server this script starts on a free loopback port:
#   1. make install PREFIX=...        a program built with pkg-config
#   2. cmake --install                a CMake project with find_package(redlock)
#   3. a copy of the source tree      a CMake project with add_subdirectory(redlock-c)
#   4. make static                    the musl-linked redlock command: run, status
# Along the way: sonames, the exported symbols of both shared libraries, the
# CMake package's version check. Needs cmake, pkg-config, redis-server,
# musl-gcc, file, readelf (.ci/run installs them).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/redlock-packaging.XXXXXX")
redis_pid=
cleanup() {
    if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { echo "== packaging: $*"; }
fail() {
    echo "packaging: FAILED: $*" >&2
    exit 1
}
# Run a command; show its output only when it fails.
quiet() {
    if ! "$@" >"$tmp/step.log" 2>&1; then
        cat "$tmp/step.log" >&2
        fail "$*"
    fi
}

missing=
for tool in cmake pkg-config redis-server musl-gcc file readelf nm cc make; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    echo "packaging: missing:$missing" >&2
    echo "    apt-get install -y cmake pkg-config redis-server musl-tools file binutils build-essential" >&2
    exit 1
fi

hdr_version() { sed -n "s/^#define REDLOCK_VERSION_$1 \([0-9]*\).*/\1/p" "$root/redlock.h"; }
major=$(hdr_version MAJOR)
minor=$(hdr_version MINOR)
version=$(sed -n 's/^#define REDLOCK_VERSION "\(.*\)"/\1/p' "$root/redlock.h")
jobs=2

# ---- a redis-server of our own ----------------------------------------------

# The process_id that the Redis on 127.0.0.1:$1 reports, if one answers.
redis_pid_on() {
    # shellcheck disable=SC2016 # the inner script expands its own $1
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "INFO server\r\n" >&3
        while IFS= read -r line <&3; do
            case $line in process_id:*) echo "${line#process_id:}" | tr -d "\r"; exit 0 ;; esac
        done
        exit 1' _ "$1" 2>/dev/null || true
}

start_redis() {
    mkdir -p "$tmp/redis"
    for _ in $(seq 20); do
        local port=$((20000 + RANDOM % 40000))
        [ -z "$(redis_pid_on "$port")" ] || continue
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --dir "$tmp/redis" --logfile "$tmp/redis/log" &
        redis_pid=$!
        for _ in $(seq 50); do
            # ours, not another server that took the port first
            if [ "$(redis_pid_on "$port")" = "$redis_pid" ]; then
                url="redis://127.0.0.1:$port"
                return 0
            fi
            kill -0 "$redis_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
        redis_pid=
    done
    cat "$tmp/redis/log" >&2 || true
    fail "could not start redis-server on a free port"
}

# ---- checks ----------------------------------------------------------------------

last_fence=0
# Run a consumer program; it must do a lock cycle with a fence above the last.
run_consumer() {
    local what=$1 out
    shift
    out=$("$@" "$url") || fail "$what: $* $url"
    echo "   $what: $out"
    local fence=${out##*fence }
    [ "$fence" -gt "$last_fence" ] 2>/dev/null || fail "$what: fence '$fence' after $last_fence"
    last_fence=$fence
}

needs_libredlock() { readelf -d "$1" | grep -q "NEEDED.*\[libredlock\.so\.$major\]"; }
soname_of() { readelf -d "$1" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p'; }
exports_of() { nm -D --defined-only "$1" | awk '{ print $NF }' | sort; }

start_redis
echo "   redis-server pid $redis_pid at $url"

# ---- 1. make install + pkg-config -----------------------------------------------

step "make install PREFIX=\$tmp/make-prefix, a program built with pkg-config"
quiet make -s -C "$root" BUILD="$tmp/make" PREFIX="$tmp/make-prefix" install
mp=$tmp/make-prefix
for f in include/redlock.h include/redlock_transport.h lib/libredlock.a "lib/libredlock.so.$version" "lib/libredlock.so.$major" \
    lib/libredlock.so lib/pkgconfig/redlock.pc bin/redlock; do
    [ -e "$mp/$f" ] || fail "make install did not install $f"
done
[ "$(soname_of "$mp/lib/libredlock.so")" = "libredlock.so.$major" ] || fail "soname of make's library"
quiet sh "$root/tests/check-exports.sh" "$mp/lib/libredlock.so"
export PKG_CONFIG_PATH=$mp/lib/pkgconfig
[ "$(pkg-config --modversion redlock)" = "$version" ] || fail "pkg-config --modversion"
# shellcheck disable=SC2046 # word splitting of pkg-config output is intended
quiet cc -std=c11 -Wall -Wextra -Wpedantic -Werror "$root/tests/consumer/main.c" \
    $(pkg-config --cflags --libs redlock) -o "$tmp/pc-consumer"
unset PKG_CONFIG_PATH
needs_libredlock "$tmp/pc-consumer" || fail "pkg-config consumer does not link libredlock.so.$major"
LD_LIBRARY_PATH=$mp/lib ldd "$tmp/pc-consumer" | grep -q "$mp/lib/libredlock.so.$major" ||
    fail "pkg-config consumer does not load the installed library"
run_consumer "pkg-config (shared)" env LD_LIBRARY_PATH="$mp/lib" "$tmp/pc-consumer"
# the man pages: section 1 for the command, section 3 for every function
# (a name that shares a page is a symlink to it), and all gone on uninstall
for f in share/man/man1/redlock.1 share/man/man3/redlock.3 share/man/man3/redlock_trylock.3 \
    share/man/man3/redlock_start_lock.3; do
    [ -e "$mp/$f" ] || fail "make install did not install $f"
done
if command -v man >/dev/null 2>&1; then
    man -M "$mp/share/man" -w 3 redlock_start_lock >/dev/null 2>&1 ||
        fail "man 3 redlock_start_lock does not find its page"
fi
quiet make -s -C "$root" BUILD="$tmp/make" PREFIX=/usr DESTDIR="$tmp/stage" install
quiet make -s -C "$root" BUILD="$tmp/make" PREFIX=/usr DESTDIR="$tmp/stage" uninstall
left=$(find "$tmp/stage" -type f -o -type l)
[ -z "$left" ] || fail "make uninstall left: $left"

# ---- 2. cmake --install + find_package ------------------------------------------------

step "cmake --install to \$tmp/cmake-prefix, a project with find_package(redlock CONFIG REQUIRED)"
cp=$tmp/cmake-prefix
quiet cmake -S "$root" -B "$tmp/cmake-build" -DCMAKE_INSTALL_PREFIX="$cp"
quiet cmake --build "$tmp/cmake-build" -j "$jobs"
quiet cmake --install "$tmp/cmake-build"
for f in include/redlock.h include/redlock_transport.h lib/libredlock.a "lib/libredlock.so.$version" lib/pkgconfig/redlock.pc \
    lib/cmake/redlock/redlockConfig.cmake lib/cmake/redlock/redlockConfigVersion.cmake \
    lib/cmake/redlock/redlockTargets.cmake bin/redlock share/man/man3/redlock_trylock.3 \
    share/man/man3/redlock_new_len.3; do
    [ -e "$cp/$f" ] || fail "cmake --install did not install $f"
done
[ "$(soname_of "$cp/lib/libredlock.so")" = "libredlock.so.$major" ] || fail "soname of CMake's library"
quiet sh "$root/tests/check-exports.sh" "$cp/lib/libredlock.so"
[ "$(exports_of "$cp/lib/libredlock.so")" = "$(exports_of "$mp/lib/libredlock.so")" ] ||
    fail "CMake's and make's libredlock.so export different symbols"
diff -u "$mp/lib/pkgconfig/redlock.pc" <(sed "s|$cp|$mp|" "$cp/lib/pkgconfig/redlock.pc") >&2 ||
    fail "CMake's redlock.pc differs from make's"

mkdir -p "$tmp/app"
cp "$root/tests/consumer/CMakeLists.txt" "$root/tests/consumer/main.c" "$tmp/app/"
fp=$tmp/app-find-package
quiet cmake -S "$tmp/app" -B "$fp" -DREDLOCK_FROM=find_package -DCMAKE_PREFIX_PATH="$cp" \
    -DREDLOCK_REQUIRE_VERSION="$major.$minor"
grep -q "^redlock_DIR:PATH=$cp/lib/cmake/redlock\$" "$fp/CMakeCache.txt" ||
    fail "find_package found another redlock: $(grep '^redlock_DIR' "$fp/CMakeCache.txt")"
quiet cmake --build "$fp" -j "$jobs"
needs_libredlock "$fp/consumer" || fail "redlock::redlock (installed) is not the shared library"
needs_libredlock "$fp/consumer_static" && fail "redlock::redlock_static links libredlock.so"
run_consumer "find_package redlock::redlock (shared)" "$fp/consumer"
run_consumer "find_package redlock::redlock_static" "$fp/consumer_static"
run_consumer "find_package redlock::redlock_shared" "$fp/consumer_shared"
# SameMajorVersion: a consumer asking for the next major version is refused.
if cmake -S "$tmp/app" -B "$tmp/app-next-major" -DCMAKE_PREFIX_PATH="$cp" \
    -DREDLOCK_REQUIRE_VERSION="$((major + 1)).0" >"$tmp/step.log" 2>&1; then
    fail "find_package(redlock $((major + 1)).0) accepted version $version"
fi
grep -q "$version" "$tmp/step.log" || fail "find_package's refusal does not name $version"

# ---- 3. add_subdirectory --------------------------------------------------------------

step "a project with add_subdirectory(redlock-c), a copy of the source tree"
mkdir -p "$tmp/app/redlock-c"
tar -C "$root" --exclude=./build --exclude=./.git -cf - . | tar -C "$tmp/app/redlock-c" -xf -
as=$tmp/app-add-subdirectory
quiet cmake -S "$tmp/app" -B "$as" -DREDLOCK_FROM=add_subdirectory
quiet cmake --build "$as" -j "$jobs"
needs_libredlock "$as/consumer" && fail "redlock::redlock (subdirectory) is not the static library"
needs_libredlock "$as/consumer_shared" || fail "redlock::redlock_shared does not link libredlock.so"
[ -e "$as/redlock-c/redlock" ] && fail "a subproject build should not build the redlock command"
run_consumer "add_subdirectory redlock::redlock (static)" "$as/consumer"
run_consumer "add_subdirectory redlock::redlock_shared" "$as/consumer_shared"

# ---- 4. make static ---------------------------------------------------------------------

step "make static: the redlock command linked against musl"
quiet make -s -C "$root" BUILD="$tmp/make" static
bin=$tmp/make/static/redlock
kind=$(file -b "$bin")
echo "   $kind"
case $kind in *"statically linked"*) ;; *) fail "not a static executable: $kind" ;; esac
echo "   size: $(stat -c %s "$bin") bytes"
[ "$("$bin" --version)" = "redlock $version" ] || fail "redlock --version"
"$bin" run -u "$url" packaging-static -- true || fail "redlock run NAME -- true: status $?"
st=0
out=$("$bin" status -u "$url" packaging-static) || st=$?
echo "   status after run: $out (exit $st)"
case $out in "packaging-static: free, fence "[0-9]*) ;; *) fail "redlock status after run" ;; esac
[ "$st" = 1 ] || fail "redlock status after run: exit $st, want 1"
fence=${out##*fence }
# While `run` holds the lock, `status` (from $REDLOCK_URL) sees it held and
# a second `run` gets the conflict status, 75.
st=0
out=$(REDLOCK_URL=$url "$bin" run packaging-static -- "$bin" status packaging-static) || st=$?
echo "   status inside run: $out (exit $st)"
[ "$st" = 0 ] || fail "redlock status inside run: exit $st"
# the summary line, then a line for the holder, with the next token
case $out in "packaging-static: held, "*" ms left, fence $((fence + 1))"*": writer, "*) ;;
    *) fail "status inside run: $out" ;; esac
st=0
REDLOCK_URL=$url "$bin" run packaging-static -- "$bin" run -q packaging-static -- true || st=$?
[ "$st" = 75 ] || fail "a second run of a held lock: exit $st, want 75"

kill "$redis_pid"
wait "$redis_pid" 2>/dev/null || true
redis_pid=
echo "packaging: all passed in ${SECONDS} s"
