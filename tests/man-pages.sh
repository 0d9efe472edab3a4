#!/bin/sh
# The man pages. Every REDLOCK_API function of the public headers has a
# page in man/man3 (its own, or a symlink to the page it shares with its
# kin), whose NAME lists it and whose SYNOPSIS shows its prototype as the
# header declares it; each page has the sections a C user looks for; every
# redlock page it refers to exists; no page is left over for a function that
# is gone; and every page, cli/redlock.1 too, passes `mandoc -T lint` and
# `groff -ww` without a single message (what `man -l` would warn about).
#
#   sh tests/man-pages.sh        (make test runs it)
set -u
cd "$(dirname "$0")/.."
for tool in mandoc groff; do
    command -v $tool >/dev/null 2>&1 ||
        { echo "tests/man-pages.sh needs $tool: apt-get install mandoc groff-base (make deps)" >&2; exit 1; }
done
failed=0
bad() { echo "man pages: $*" >&2; failed=1; }

headers=redlock.h
[ -f redlock_transport.h ] && headers="$headers redlock_transport.h"

# One declaration per line, from REDLOCK_API to the ';'.
decls=$(awk '/REDLOCK_API/ && !/#define/ { d = ""; on = 1 }
             on { d = d " " $0; if (index($0, ";")) { print d; on = 0 } }' $headers)
[ -n "$decls" ] || { echo "man pages: no REDLOCK_API declaration in $headers" >&2; exit 1; }

# A page's text between .SH $2 and the next .SH, roff undone, all blanks removed.
section_flat() { # $1 page, $2 section title
    awk -v want=".SH $2" '/^\.SH/ { on = ($0 == want); next } on && !/^\./ { print }' "$1" |
        sed -e 's/\\f[BIRP]//g' -e 's/\\-/-/g' -e 's/\\e/\\/g' -e 's/\\&//g' | tr -d ' \t\n'
}

names=""
nfun=0
echo "$decls" | {
while IFS= read -r d; do
    name=$(printf '%s\n' "$d" | sed -e 's/(.*//' -e 's/.*[ *]//')
    proto=$(printf '%s\n' "$d" | sed 's/REDLOCK_API//' | tr -d ' \t')
    nfun=$((nfun + 1))
    page=man/man3/$name.3
    if [ ! -e "$page" ]; then
        bad "$name has no page ($page)"
        continue
    fi
    real=$page
    if [ -L "$page" ]; then
        target=$(readlink "$page")
        case $target in */*) bad "$page links outside man/man3: $target" ;; esac
        real=man/man3/$target
        [ -f "$real" ] || { bad "$page links to a missing page: $target"; continue; }
    fi
    section_flat "$real" NAME | grep -q "\(^\|,\)$name\(,\|\\\\-\|-\)" ||
        bad "$real: NAME does not list $name"
    case $(section_flat "$real" SYNOPSIS) in
    *"$proto"*) ;;
    *) bad "$real: SYNOPSIS lacks the prototype of $name as redlock.h declares it" ;;
    esac
done
exit $failed
} || failed=1

# The functions there are, to find pages left over.
funcs=$(echo "$decls" | sed -e 's/(.*//' -e 's/.*[ *]//')
for page in man/man3/*.3; do
    n=$(basename "$page" .3)
    [ "$n" = redlock ] && continue
    echo "$funcs" | grep -qx "$n" || bad "$page: no function $n in $headers"
done

# Each page of its own: the sections, and references that resolve.
for page in man/man3/*.3; do
    [ -L "$page" ] && continue
    for s in NAME SYNOPSIS DESCRIPTION "RETURN VALUE" EXAMPLE "SEE ALSO"; do
        grep -qx "\.SH $s" "$page" || bad "$page: no $s section"
    done
    for ref in $(sed -n 's/^\.BR \(redlock_[a-z_0-9]*\) (3).*/\1/p; s/.*\\fB\(redlock_[a-z_0-9]*\)\\fP(3).*/\1/p' "$page"); do
        [ -e "man/man3/$ref.3" ] || bad "$page refers to $ref(3), which has no page"
    done
done

# Lint: not one message, at any level (mandoc's default for -T lint is all).
out=$(cd man && mandoc -T lint man3/*.3 ../cli/redlock.1 2>&1)
[ -z "$out" ] || bad "mandoc -T lint:
$out"
for page in man/man3/*.3 cli/redlock.1; do
    out=$(groff -ww -z -man "$page" 2>&1)
    [ -z "$out" ] || bad "groff -ww $page:
$out"
done

if [ $failed -ne 0 ]; then
    echo "man pages: FAILED" >&2
    exit 1
fi
echo "man pages: $(echo "$funcs" | wc -l) functions of $headers, each with a page; $(ls man/man3/*.3 | wc -l) pages and cli/redlock.1 lint clean"
