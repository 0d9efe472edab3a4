#!/bin/sh
# make size: code and data of each library file at -Os and -O2 for x86-64
# (CC) and armhf (arm-linux-gnueabihf-gcc, if installed), then heap and
# stack from bench/footprint.c, natively and, for armhf, under qemu-arm.
#
#   bench/size.sh [--allocs]
#
# The native run also measures a client of a Redis Cluster (--cluster).
#
# Objects are compiled as a vendoring user would (cc -std=c11 -OPT -c
# file.c, the compiler's default PIE code, no -g), into build/size. Columns
# (bytes, from `size -A`): .text is code; .rodata is read-only data (the
# Lua scripts, messages, tables); .data is initialised writable data; .bss
# is zeroed data, thread-local (.tbss) included.
set -eu
cd "$(dirname "$0")/.."

CC=${CC:-cc}
out=build/size
mkdir -p "$out"
files="redlock.c resp.c net.c"
arm=arm-linux-gnueabihf

sections()
{
    # $1: size tool, $2: object. Prints text rodata data bss.
    "$1" -A "$2" | awk '
        $1 ~ /^\.text/ { t += $2 }
        $1 ~ /^\.rodata/ { r += $2 }
        $1 ~ /^\.data/ { d += $2 }
        $1 ~ /^\.(bss|tbss)/ { b += $2 }
        END { printf "%d %d %d %d\n", t, r, d, b }'
}

table()
{
    # $1: label, $2: compiler, $3: size tool
    printf '\n%s (%s)\n\n' "$1" "$($2 --version | head -1)"
    printf '| %-12s | %-3s | %7s | %7s | %6s | %6s |\n' file opt .text .rodata .data .bss
    printf '|%s|%s|%s|%s|%s|%s|\n' -------------- ----- --------- --------- -------- --------
    for opt in Os O2; do
        tt=0 tr=0 td=0 tb=0
        for f in $files; do
            o=$out/$2-$opt-${f%.c}.o
            "$2" -std=c11 -Wall -Wextra -Wpedantic -"$opt" -c "$f" -o "$o"
            set -- "$1" "$2" "$3" $(sections "$3" "$o")
            printf '| %-12s | %-3s | %7d | %7d | %6d | %6d |\n' "$f" "-$opt" "$4" "$5" "$6" "$7"
            tt=$((tt + $4)) tr=$((tr + $5)) td=$((td + $6)) tb=$((tb + $7))
        done
        printf '| %-12s | %-3s | %7d | %7d | %6d | %6d |\n' "library" "-$opt" $tt $tr $td $tb
    done
}

table "x86-64" "$CC" size
if command -v $arm-gcc >/dev/null 2>&1; then
    table "armhf" $arm-gcc $arm-size
else
    echo "(armhf skipped: no $arm-gcc; apt-get install gcc-$arm)"
fi

# Heap and stack, against redis-server processes started by the program.
build_footprint()
{
    # $1: compiler, $2: output
    "$1" -std=c11 -Wall -Wextra -Wpedantic -O2 -I. -Itests bench/footprint.c \
        tests/fixture.c tests/fx_cluster.c tests/fx_tls.c redlock.c resp.c net.c -lpthread -o "$2"
}
printf '\n== heap and stack, x86-64 (-O2)\n\n'
build_footprint "$CC" $out/footprint
$out/footprint --cluster "$@"
if command -v $arm-gcc >/dev/null 2>&1 && command -v qemu-arm-static >/dev/null 2>&1; then
    printf '\n== heap and stack, armhf (-O2, under qemu-arm)\n\n'
    build_footprint $arm-gcc $out/footprint-armhf
    QEMU_LD_PREFIX=/usr/$arm qemu-arm-static $out/footprint-armhf "$@"
fi
