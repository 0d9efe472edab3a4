#!/bin/sh
# Every C example in the documentation compiles: the ```c blocks of
# README.md and docs/*.md, and the EXAMPLE of every man page in man/man3.
#
#   sh tests/docs-code.sh [BUILD_DIR]     (make test runs it; CC and CFLAGS are honoured)
#
# A block is one of three kinds:
#   - a whole program (it has a main): compiled and linked against
#     BUILD_DIR/libredlock.a, nothing else;
#   - an excerpt, whose first line is /* from FILE */: each of its lines must
#     appear in FILE, in order (so a copy in the docs cannot drift);
#   - anything else is a fragment: compiled inside a function body that
#     gives it `client` (redlock_client *) and `lock` (redlock *) and the
#     helpers die(), more_work(), work_a_little() and handle().
# All with -std=c11 -Wall -Wextra -Wpedantic -Werror; errors point at the
# document's own file and line (#line).
set -u
cd "$(dirname "$0")/.."
build=${1:-build}
cc=${CC:-cc}
lib=$build/libredlock.a
[ -f "$lib" ] || { echo "tests/docs-code.sh: $lib is missing (run make first)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
# CFLAGS as the library was built (a sanitizer build links only with them)
flags="-std=c11 -Wall -Wextra -Wpedantic -Werror -I. ${CFLAGS:-}"

# Each block goes to $tmp/bNNN.c, and "FILE LINE" (of its first line) to $tmp/bNNN.at.
awk -v dir="$tmp" '
    FNR == 1 { inblock = 0 }
    !inblock && /^```c[ \t]*$/ {
        inblock = 1; n++
        out = sprintf("%s/b%03d.c", dir, n)
        printf "%s %d\n", FILENAME, FNR + 1 > sprintf("%s/b%03d.at", dir, n)
        printf "" > out
        next
    }
    inblock && /^```/ { inblock = 0; close(out); next }
    inblock { print > out }
' README.md docs/*.md

# Man pages: the .EX/.EE block of the EXAMPLE section, roff escapes undone.
n=$(ls "$tmp"/*.at 2>/dev/null | wc -l)
for page in man/man3/*.3; do
    [ -L "$page" ] && continue # a second name of a page checked already
    n=$((n + 1))
    b=$(printf '%s/b%03d' "$tmp" "$n")
    awk -v at="$b.at" -v page="$page" '
        /^\.SH / { ex = ($0 == ".SH EXAMPLE") }
        ex && /^\.EX/ { on = 1; printf "%s %d\n", page, FNR + 1 > at; next }
        ex && /^\.EE/ { on = 0; next }
        on { print }
    ' "$page" | sed -e 's/\\e/\\/g' -e 's/\\-/-/g' -e 's/\\&//g' -e "s/\\\\(aq/'/g" >"$b.c"
    if [ ! -s "$b.c" ]; then
        rm -f "$b.c" "$b.at"
        echo "docs code: $page has no EXAMPLE" >&2
        echo 1 >"$tmp/failed"
    fi
done

fragment_prelude() {
    cat <<'PRELUDE'
#define _POSIX_C_SOURCE 200809L
#include "redlock.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the fragments in the documentation take as given (external, so
 * that no compiler calls them unused). */
void die(const char *why);
int more_work(void);
void work_a_little(void);
void handle(redlock *l, int status);
void die(const char *why)
{
    fprintf(stderr, "%s\n", why);
    exit(1);
}
int more_work(void) { return 0; }
void work_a_little(void) {}
void handle(redlock *l, int status)
{
    (void)l;
    (void)status;
}

void docs_fragment(redlock_client *client, redlock *lock);
void docs_fragment(redlock_client *client, redlock *lock)
{
    (void)client;
    (void)lock;
    {
PRELUDE
}

# An excerpt: every non-blank line of the block after the first, trimmed,
# is a line of FILE, in the same order.
check_excerpt() { # $1 block, $2 file
    awk -v file="$2" '
        function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }
        BEGIN { while ((getline line < file) > 0) src[++n] = trim(line); at = 1 }
        FNR == 1 { next }
        trim($0) == "" { next }
        {
            want = trim($0)
            while (at <= n && src[at] != want) at++
            if (at > n) { print "not in " file ": " $0; bad = 1; exit }
            at++
        }
        END { exit bad }
    ' "$1"
}

count=0
for block in "$tmp"/b*.c; do
    [ -e "$block" ] || continue
    b=${block%.c}
    set -- $(cat "$b.at")
    doc=$1
    line=$2
    first=$(head -n 1 "$block")
    count=$((count + 1))
    case $first in
    "/* from "*" */")
        src=${first#/\* from }
        src=${src% \*/}
        if ! out=$(check_excerpt "$block" "$src" 2>&1); then
            echo "docs code: $doc:$line: $out" >&2
            echo 1 >"$tmp/failed"
        fi
        continue
        ;;
    esac
    if grep -q '\<main *(' "$block"; then
        { printf '#line %s "%s"\n' "$line" "$doc"; cat "$block"; } >"$b.prog.c"
        if ! out=$($cc $flags "$b.prog.c" "$lib" -o "$b.prog" 2>&1); then
            printf 'docs code: %s:%s: the program does not build:\n%s\n' "$doc" "$line" "$out" >&2
            echo 1 >"$tmp/failed"
        fi
    else
        { fragment_prelude; printf '#line %s "%s"\n' "$line" "$doc"; cat "$block"; printf '\n    }\n}\n'; } \
            >"$b.frag.c"
        if ! out=$($cc $flags -c "$b.frag.c" -o "$b.o" 2>&1); then
            printf 'docs code: %s:%s: the fragment does not compile:\n%s\n' "$doc" "$line" "$out" >&2
            echo 1 >"$tmp/failed"
        fi
    fi
done

if [ -e "$tmp/failed" ]; then
    echo "docs code: FAILED" >&2
    exit 1
fi
[ "$count" -gt 0 ] || { echo "docs code: no blocks found" >&2; exit 1; }
echo "docs code: $count C blocks of README.md, docs/*.md and man/man3 compile"
