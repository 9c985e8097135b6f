#!/usr/bin/env bash
# Fails when the source's own imports go round in a circle.
#
# Level 1: between the top-level modules (src/pool*, src/metrics.rs, …),
# from every `crate::name` path a file mentions (in `use` lines and inline
# paths alike, `crate::{a, b}` groups included).
# Level 2: between the children of one module (src/sim/server.rs and
# src/sim/anthropic.rs, say), from `super::name` in a direct child and
# `crate::module::name` anywhere in the module. A child using its parent
# (or a parent its child) is not a circle.
#
# Each level's edges go to `tsort`, which reports a loop. Comments and
# doc comments are skipped. Run by .ci/run; `bash scripts/check-cycles.sh`
# by hand prints the edges it found with `-v`.
set -euo pipefail
cd "$(dirname "$0")/../src"
verbose=${1:-}

# The top-level module a file belongs to ("" for lib.rs and main.rs).
top_of() {
    local f=${1#./}
    case $f in
    lib.rs | main.rs) echo "" ;;
    */*) echo "${f%%/*}" ;;
    *) echo "${f%.rs}" ;;
    esac
}

# The child (below its top module) a file belongs to: sim/server.rs and
# sim/server/x.rs are both "server"; sim.rs and sim/mod.rs are "".
child_of() {
    local f=${1#./} rest
    [[ $f == */* ]] || { echo ""; return; }
    rest=${f#*/}
    rest=${rest%%/*}
    rest=${rest%.rs}
    [[ $rest == mod ]] && rest=""
    echo "$rest"
}

# Every `crate::…` target named on the file's code lines: "a" for
# `crate::a::x` and each of a, b for `crate::{a::x, b}`.
crate_paths() {
    grep -v '^\s*//' "$1" |
        grep -oE 'crate::(\{[^}]*\}|[a-z_][a-z0-9_]*(::[a-z_][a-z0-9_]*)?)' |
        sed -E 's/^crate:://' |
        sed -E 's/^\{(.*)\}$/\1/' | tr ',' '\n' | sed -E 's/^\s+|\s+$//g' |
        grep -v '^$' || true
}

# Every `super::name` the file names (direct children only: one level up
# is the parent module).
super_paths() {
    grep -v '^\s*//' "$1" |
        grep -oE '(^|[^:a-z_])super::[a-z_][a-z0-9_]*' |
        grep -oE 'super::[a-z_][a-z0-9_]*' | sed -E 's/^super:://' || true
}

level1=$(mktemp)
level2=$(mktemp)
trap 'rm -f "$level1" "$level2"' EXIT

while IFS= read -r f; do
    from=$(top_of "$f")
    [[ -n $from ]] || continue
    child=$(child_of "$f")
    for p in $(crate_paths "$f"); do
        to=${p%%::*}
        if [[ $to != "$from" ]]; then
            echo "$from $to" >>"$level1"
        elif [[ $p == *::* && -n $child ]]; then
            sub=${p#*::}
            sub=${sub%%::*}
            [[ $sub != "$child" && ( -e $from/$sub.rs || -e $from/$sub ) ]] &&
                echo "$from::$child $from::$sub" >>"$level2"
        fi
    done
    # super:: in a direct child (src/m/child.rs or src/m/child/mod.rs)
    # names a sibling.
    depth=$(tr -cd '/' <<<"${f#./}" | wc -c)
    if [[ -n $child && ( $depth -eq 1 || ${f##*/} == mod.rs && $depth -eq 2 ) ]]; then
        for sub in $(super_paths "$f"); do
            [[ $sub != "$child" && ( -e $from/$sub.rs || -e $from/$sub ) ]] &&
                echo "$from::$child $from::$sub" >>"$level2"
        done
    fi
done < <(find . -name '*.rs' | sort)

status=0
for level in "$level1" "$level2"; do
    sort -u "$level" -o "$level"
    [[ $verbose == -v ]] && cat "$level"
    if ! tsort "$level" >/dev/null 2>"$level.err"; then
        status=1
    fi
    if [[ -s $level.err ]]; then
        echo "import circle:" >&2
        grep -v 'input contains a loop' "$level.err" | sed -E 's/^tsort: /  /' >&2
        status=1
    fi
    rm -f "$level.err"
done
if [[ $status == 0 ]]; then
    echo "no import circles ($(wc -l <"$level1") edges between top-level modules, $(wc -l <"$level2") inside them)"
fi
exit $status
