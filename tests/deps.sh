#!/bin/sh
# What `make test` needs: redis-server (run as redis-server CONF --sentinel too:
# Debian's redis-sentinel package is not needed), redis-cli and openssl (the Cluster and
# TLS fixtures), libssl-dev (the TLS suite builds the library with TLS=openssl;
# plain `make` needs none of it), Check, pkg-config, libuv (only for the
# libuv example), mandoc and groff (the man pages are linted) and libfaketime
# (the torture harness's clock-jump scenario, the semaphore suite's wrong
# wall clock). Installs the missing Debian packages with apt-get when run as
# root, otherwise prints the command to run and fails.
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v redis-cli >/dev/null 2>&1 || missing="$missing redis-tools"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
if ! pkg-config --exists check 2>/dev/null && [ ! -f /usr/include/check.h ]; then
    missing="$missing check"
fi
if ! pkg-config --exists openssl 2>/dev/null && [ ! -f /usr/include/openssl/ssl.h ]; then
    missing="$missing libssl-dev"
fi
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
pkg-config --exists libuv 2>/dev/null || missing="$missing libuv1-dev"
command -v mandoc >/dev/null 2>&1 || missing="$missing mandoc"
command -v groff >/dev/null 2>&1 || missing="$missing groff-base"
faketime=""
for f in /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
    [ -f "$f" ] && faketime=1
done
[ -n "$faketime" ] || missing="$missing faketime"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "tests/deps.sh: installing$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null \
        && exit 0
    echo "tests/deps.sh: apt-get failed" >&2
    exit 1
fi
echo "make test needs:$missing. Install them with:" >&2
echo "    sudo apt-get install -y redis-server redis-tools openssl libssl-dev check pkg-config libuv1-dev mandoc groff-base faketime" >&2
exit 1
