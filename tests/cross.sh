#!/bin/sh
# make cross ARCH=... : the library, the command, the examples and the Check
# suites built with Debian's cross compiler for ARCH and run under
# qemu-user against redis-server processes on the host's loopback.
#
#   tests/cross.sh ARCH [SUITE...]     (no SUITE: every plain suite)
#
# ARCH: aarch64, armhf, armhf-t64 (armhf with -D_FILE_OFFSET_BITS=64
# -D_TIME_BITS=64), riscv64, s390x (64-bit big-endian), mips (32-bit
# big-endian), or musl (x86-64 with musl-gcc, run natively).
#
# Check (libcheck) for the target is built here from Debian's source
# package: `apt-get source check` with a private apt state under
# build/cross/apt that asks the system's own Debian mirror for deb-src
# (the system's apt configuration is not touched), or from an unpacked
# Check source tree given as CHECK_SRC=DIR. Debian's multiarch check:ARCH
# packages would serve aarch64, armhf and s390x only: bookworm has no
# riscv64 or big-endian mips port.
#
# The suites start redis-server, redis-cli and openssl: host programs,
# which a program under qemu-user execs natively. They also start the
# command and the examples, target programs that the host kernel cannot
# exec without binfmt_misc, so they are compiled with FX_RUN_DIR pointing
# at build/cross/ARCH/run, which holds scripts that run them under qemu.
#
# Root installs what is missing (cross gcc, qemu-user-static, dpkg-dev,
# redis); others are told what to install.
set -eu
cd "$(dirname "$0")/.."

arch=${1:?usage: tests/cross.sh ARCH [SUITE...]}
shift
extra=""
emu=""
case $arch in
aarch64) triple=aarch64-linux-gnu; qemu=aarch64 ;;
armhf) triple=arm-linux-gnueabihf; qemu=arm ;;
armhf-t64) triple=arm-linux-gnueabihf; qemu=arm; extra="-D_FILE_OFFSET_BITS=64 -D_TIME_BITS=64" ;;
riscv64) triple=riscv64-linux-gnu; qemu=riscv64 ;;
s390x) triple=s390x-linux-gnu; qemu=s390x ;;
mips) triple=mips-linux-gnu; qemu=mips ;;
musl) triple=x86_64-linux-musl; qemu="" ;;
*)
    echo "cross: unknown ARCH=$arch (aarch64 armhf armhf-t64 riscv64 s390x mips musl)" >&2
    exit 2
    ;;
esac

root=$(pwd)
jobs=${CROSS_JOBS:-$(nproc 2>/dev/null || echo 1)} # compiling only; suites run one at a time
build=build/cross/$arch
if [ -n "$qemu" ]; then
    cc=$triple-gcc
    emu=qemu-$qemu-static
    sysroot=/usr/$triple
    pkgs="gcc-$triple qemu-user-static"
else
    cc=musl-gcc
    sysroot=""
    pkgs="musl-tools"
fi

# ---- what the host needs -----------------------------------------------------------

missing=""
command -v "$cc" >/dev/null 2>&1 || missing="$missing ${pkgs%% *}"
[ -z "$emu" ] || command -v "$emu" >/dev/null 2>&1 || missing="$missing qemu-user-static"
command -v dpkg-source >/dev/null 2>&1 || missing="$missing dpkg-dev"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v redis-cli >/dev/null 2>&1 || missing="$missing redis-tools"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "cross: installing$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "make cross ARCH=$arch needs:$missing; install them with:" >&2
        echo "    sudo apt-get install -y$missing" >&2
        exit 1
    fi
fi

# ---- Check for the target ----------------------------------------------------------

# deb-src entries for the system's Debian mirror(s), from its deb entries.
apt_src_lists()
{
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v cn="$codename" 'BEGIN { RS = ""; ORS = "\n\n" }
            $0 ~ "Suites:[^\n]*[ \t]" cn "([ \t\n]|$)" && /Components:[^\n]*main/ {
                sub(/Types:[^\n]*/, "Types: deb-src"); print }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v cn="$codename" '$1 == "deb" && $0 ~ " " cn " " && / main/ {
            $1 = "deb-src"; print }' "$f"
    done
}

check_source()
{
    if [ -n "${CHECK_SRC:-}" ]; then
        echo "$CHECK_SRC"
        return
    fi
    src=$root/build/cross/src
    if [ ! -x "$src/check/configure" ]; then
        apt=$root/build/cross/apt
        mkdir -p "$apt/parts" "$apt/lists/partial" "$apt/cache/archives/partial" "$src"
        apt_src_lists >"$apt/parts/debian-src.sources"
        if ! grep -q deb-src "$apt/parts/debian-src.sources"; then
            # one-line format: a .list file in the parts dir
            mv "$apt/parts/debian-src.sources" "$apt/parts/debian-src.list"
        fi
        set -- -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$apt/parts" \
            -o Dir::State::Lists="$apt/lists" -o Dir::Cache="$apt/cache" \
            -o APT::Sandbox::User="$(id -un)"
        if ! apt-get "$@" update -qq >&2 ||
            ! (cd "$src" && rm -rf check check-* && apt-get "$@" source -qq check >&2); then
            echo "cross: apt-get source check failed; unpack Check's source and pass CHECK_SRC=DIR" >&2
            exit 1
        fi
        mv "$src"/check-[0-9]* "$src/check"
    fi
    echo "$src/check"
}

ck=$root/build/cross/check-$arch
if [ ! -f "$ck/lib/libcheck.a" ]; then
    srcdir=$(check_source)
    echo "== cross $arch: Check from $srcdir"
    t0=$(date +%s)
    rm -rf "$ck.build" && mkdir -p "$ck.build"
    (
        cd "$ck.build"
        "$srcdir/configure" --host="$triple" CC="$cc" CFLAGS="-O2 $extra" --prefix="$ck" \
            --disable-shared --enable-static --enable-subunit=no --disable-build-docs \
            --disable-dependency-tracking \
            >configure.log 2>&1 || { tail -20 configure.log; exit 1; }
        { make -j"$jobs" -C lib && make -j"$jobs" -C src && make -C src install &&
            make install-includeHEADERS; } \
            >make.log 2>&1 || { tail -20 make.log; exit 1; }
    )
    rm -rf "$ck.build"
    echo "   Check built in $(($(date +%s) - t0)) s"
fi

# ---- build ---------------------------------------------------------------------------

run=$root/$build/run
mkdir -p "$build"
# Suites named on the command line: only those are built (CI runs a subset).
if [ $# -eq 0 ]; then
    suites=$(cd tests && ls test_*.c | sed 's/\.c$//' | grep -v '^test_tls$')
    targets=tests
else
    suites=$*
    targets=$(for t in $suites; do printf '%s/tests/%s ' "$build" "$t"; done)
fi
echo "== cross $arch: build with $cc ${extra:+($extra)}"
t0=$(date +%s)
# The suites compile against the target's Check; the build must be
# warning-free like the native one.
if ! make -s -j"$jobs" BUILD="$build" CC="$cc" CFLAGS="-O2 -g $extra" EMU="${emu:+$emu -L $sysroot}" \
    FX_RUN_DIR="$run" LIBUV_EXAMPLE=no CHECK_CFLAGS="-pthread -I$ck/include" \
    CHECK_LIBS="$ck/lib/libcheck.a -pthread -lm -lrt" \
    all examples $targets fuzz-replay >"$build/build.log" 2>&1; then
    cat "$build/build.log"
    echo "cross $arch: build failed" >&2
    exit 1
fi
if grep -E 'warning|error' "$build/build.log"; then
    echo "cross $arch: the build is not warning-free" >&2
    exit 1
fi
echo "   built in $(($(date +%s) - t0)) s: $(file -b "$build/redlock" 2>/dev/null | cut -d, -f1-2)"

# MIPS under qemu-user 7.2: SO_ERROR comes back in the host's errno numbers
# (tests/qemu_so_error.c says more); a preloaded shim translates them.
run_emu=$emu
if [ "$arch" = mips ]; then
    $cc -std=c11 -Wall -Wextra -Wpedantic -O2 -fPIC -shared tests/qemu_so_error.c \
        -o "$build/qemu_so_error.so"
    run_emu="$emu -E LD_PRELOAD=$root/$build/qemu_so_error.so"
fi

# Scripts that run the target's command and examples under the emulator.
mkdir -p "$run/examples"
wrap()
{
    keep=""
    if [ "$arch" = mips ]; then # the shim puts the caller's LD_PRELOAD back
        keep='-E REDLOCK_SAVED_PRELOAD="$LD_PRELOAD" '
    fi
    printf '#!/bin/sh\n%sexec %s%s"%s" "$@"\n' "${emu:+QEMU_LD_PREFIX=$sysroot }" \
        "${run_emu:+$run_emu }" "$keep" "$root/$1" >"$run/$2"
    chmod +x "$run/$2"
}
wrap "$build/redlock" redlock
# test_torture's holders are test_torture again, started through this
# (TORTURE_SELF: the kernel cannot exec a target program itself)
[ ! -x "$build/tests/test_torture" ] || wrap "$build/tests/test_torture" test_torture
for e in "$build"/examples/*; do
    [ -x "$e" ] && wrap "$e" "examples/${e##*/}"
done

# ---- run ------------------------------------------------------------------------------

passed=0
failed=0
bad=""
for t in $suites; do
    log=$build/$t.log
    start=$(date +%s)
    echo "== cross $arch: $t"
    # Emulation is several times slower: Check's timeouts stretch with it.
    TORTURE_SELF=${emu:+$run/test_torture} QEMU_LD_PREFIX=$sysroot CK_DEFAULT_TIMEOUT=120 CK_TIMEOUT_MULTIPLIER=${CK_TIMEOUT_MULTIPLIER:-4} \
        $run_emu "$build/tests/$t" >"$log" 2>&1 && rc=0 || rc=$?
    # Check's summary: "NN%: Checks: N, Failures: F, Errors: E"
    line=$(grep -E '^[0-9]+%: Checks: ' "$log" | tail -1)
    n=$(echo "$line" | sed -n 's/.*Checks: \([0-9]*\),.*/\1/p')
    f=$(echo "$line" | sed -n 's/.*Failures: \([0-9]*\),.*/\1/p')
    e=$(echo "$line" | sed -n 's/.*Errors: \([0-9]*\).*/\1/p')
    if [ -z "$n" ]; then
        n=0 f=0 e=1
    fi
    passed=$((passed + n - f - e))
    failed=$((failed + f + e))
    echo "   $line ($(($(date +%s) - start)) s)"
    if [ "$rc" -ne 0 ] || [ "$((f + e))" -ne 0 ]; then
        grep -vE '^(Running suite|[0-9]+%: Checks)' "$log" | head -40
        bad="$bad $t"
    fi
done
echo "cross $arch:${bad:+ failed:$bad;} $passed passed, $failed failed"
[ -z "$bad" ]
