#!/bin/sh
# The ABI check: a shared library may export the redlock_* API and nothing
# else. Fails, listing them, if LIB defines any other dynamic symbol.
#   tests/check-exports.sh build/libredlock.so
set -u
lib=${1:?usage: check-exports.sh LIBRARY.so}
[ -f "$lib" ] || { echo "check-exports: $lib: no such file" >&2; exit 2; }
syms=$(nm -D --defined-only "$lib") || { echo "check-exports: nm failed on $lib" >&2; exit 2; }
api=$(printf '%s\n' "$syms" | awk 'NF { print $NF }' | grep -c '^redlock_')
leaked=$(printf '%s\n' "$syms" | awk 'NF && $NF !~ /^redlock_/ { print "    " $0 }')
if [ -n "$leaked" ]; then
    echo "check-exports: $lib exports symbols outside the redlock_ API:"
    printf '%s\n' "$leaked"
    echo "make them static, or build with -fvisibility=hidden and mark the API REDLOCK_API"
    exit 1
fi
if [ "$api" -eq 0 ]; then
    echo "check-exports: $lib exports no redlock_ symbol at all" >&2
    exit 1
fi
echo "check-exports: $lib exports $api symbols, all redlock_*"
