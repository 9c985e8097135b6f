#!/usr/bin/env bash
# Fails when the source's own imports go round in a circle.
#
# Level 1: between the top-level modules (src/pool*, src/metrics.rs, …),
# from every `crate::name` path a file mentions (in `use` lines and inline
# paths alike, `crate::{a, b}` groups included, over several lines too).
# Level 2: between the children of one module (src/sim/server.rs and
# src/sim/anthropic.rs, say), from `super::name` (or `super::{a, b}`) in a
# direct child and `crate::module::name` anywhere in the module. A child
# using its parent (or a parent its child) is not a circle.
#
# Each level's edges go to `tsort`; on a loop, every circle a depth-first
# walk finds is printed as `a → b → … → a`, each step with the first place
# that makes it. Comments and doc comments are skipped. Run by .ci/run;
# `bash scripts/check-cycles.sh -v` by hand also prints the edges it found.
# Bash and coreutils (plus grep and sed) only.
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

# The file's code lines as `N:text`, comment lines dropped, a `use` whose
# braces run over several lines joined into its first line, and every
# nested group folded to its head (`a::{x, y}` → `a`) so that a group
# left after `crate::`/`super::` (marked `crate::[…}`) lists names only.
code_of() {
    grep -n '' "$1" |
        grep -vE '^[0-9]+:\s*//' |
        sed -E '/^[0-9]+:\s*(pub(\([a-z]+\))?\s+)?use\s[^;]*$/{
            :more
            N
            s/\n[0-9]+:/ /
            /;/!b more
        }' |
        sed -E 's/\b(crate|super)::\{/\1::[/g
            :fold
            s/::\{[^{}]*\}//
            t fold'
}

# `N name` for every `KIND::…` target (KIND is crate or super) named on a
# code line: "a" for `crate::a::x`, `crate::a::x` gives "a::x", and each
# of a, b for `crate::{a::x, b}`.
paths_of() {
    local kind=$1 file=$2 n rest
    code_of "$file" |
        grep -E "(^|[^:a-z_])$kind::" |
        while IFS=: read -r n rest; do
            grep -oE "(^|[^:a-z_])$kind::(\[[^]}]*\}|[a-z_][a-z0-9_]*(::[a-z_][a-z0-9_]*)?)" <<<"$rest" |
                sed -E "s/^.?$kind:://; s/^\[(.*)\}$/\1/" | tr ',' '\n' |
                sed -E 's/^\s+|\s+$//g' | grep -vE '^(self)?$' |
                sed -E "s/::\[.*//; s/^/$n /" || true
        done
}

level1=$(mktemp)
level2=$(mktemp)
trap 'rm -f "$level1" "$level2"' EXIT

# Each edge is written `from to file:line`.
while IFS= read -r f; do
    from=$(top_of "$f")
    [[ -n $from ]] || continue
    child=$(child_of "$f")
    where=${f#./}
    while read -r n p; do
        to=${p%%::*}
        if [[ $to != "$from" ]]; then
            echo "$from $to $where:$n" >>"$level1"
        elif [[ $p == *::* && -n $child ]]; then
            sub=${p#*::}
            sub=${sub%%::*}
            [[ $sub != "$child" && ( -e $from/$sub.rs || -e $from/$sub ) ]] &&
                echo "$from::$child $from::$sub $where:$n" >>"$level2"
        fi
    done < <(paths_of crate "$f")
    # super:: in a direct child (src/m/child.rs or src/m/child/mod.rs)
    # names a sibling.
    depth=$(tr -cd '/' <<<"$where" | wc -c)
    if [[ -n $child && ( $depth -eq 1 || ${f##*/} == mod.rs && $depth -eq 2 ) ]]; then
        while read -r n p; do
            sub=${p%%::*}
            [[ $sub != "$child" && ( -e $from/$sub.rs || -e $from/$sub ) ]] &&
                echo "$from::$child $from::$sub $where:$n" >>"$level2"
        done < <(paths_of super "$f")
    fi
done < <(find . -name '*.rs' | sort)

# Prints, for the edges in $1 (`from to where`, sorted), the circle closed
# by every back edge of a depth-first walk: `a → b → … → a`, then where
# each step comes from.
declare -A next first color
circles() {
    next=() first=() color=()
    local a b w
    while read -r a b w; do
        [[ -n ${first[$a $b]:-} ]] && continue
        first[$a $b]=$w
        next[$a]+="$b "
        next[$b]+=""
    done <"$1"
    stack=()
    for a in $(printf '%s\n' "${!next[@]}" | sort); do
        [[ ${color[$a]:-white} == white ]] && walk "$a"
    done
    return 0
}
walk() {
    local u=$1 v i
    color[$u]=grey
    stack+=("$u")
    for v in ${next[$u]}; do
        case ${color[$v]:-white} in
        white) walk "$v" ;;
        grey)
            for ((i = ${#stack[@]} - 1; i >= 0; i--)); do
                [[ ${stack[i]} == "$v" ]] && break
            done
            local ring=("${stack[@]:i}" "$v") line="  " j
            for ((j = 0; j < ${#ring[@]}; j++)); do
                line+="${ring[j]}"
                ((j + 1 < ${#ring[@]})) && line+=" → "
            done
            echo "$line"
            for ((j = 0; j + 1 < ${#ring[@]}; j++)); do
                echo "      ${ring[j]} → ${ring[j + 1]}: ${first[${ring[j]} ${ring[j + 1]}]}"
            done
            ;;
        esac
    done
    unset 'stack[${#stack[@]}-1]'
    color[$u]=black
}

status=0
for level in "$level1" "$level2"; do
    sort -u "$level" -o "$level"
    if [[ $verbose == -v ]]; then
        # One line per edge, with the first place that makes it.
        sort -k1,2 -u "$level"
    fi
    if ! cut -d' ' -f1,2 "$level" | tsort >/dev/null 2>&1; then
        status=1
        echo "import circle:" >&2
        circles "$level" >&2
    fi
done
if [[ $status == 0 ]]; then
    e1=$(cut -d' ' -f1,2 "$level1" | sort -u | wc -l)
    e2=$(cut -d' ' -f1,2 "$level2" | sort -u | wc -l)
    echo "no import circles ($e1 edges between top-level modules, $e2 inside them)"
fi
exit $status
