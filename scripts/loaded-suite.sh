#!/usr/bin/env bash
# Runs `cargo test --locked --no-fail-fast` RUNS times (default 3) while a
# busy loop per core keeps every core busy, the way CI's two shared cores
# are: a test that races the wall clock (a window that must still be open, a
# timeout that must not fire) fails here long before it fails in CI.
#
#   scripts/loaded-suite.sh                  # the whole suite, 3 times
#   RUNS=5 scripts/loaded-suite.sh --lib     # extra arguments go to cargo test
#
# With redis-server installed, TOKENYARD_REQUIRE_REDIS=1 is exported so the
# shared-store tests run instead of skipping. Per-run output is kept in
# target/loaded-suite/run-N.log. Exit status: 0 only if every run passed.
set -uo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-3}"
LOGS="${CARGO_TARGET_DIR:-target}/loaded-suite"
mkdir -p "$LOGS" && rm -f "$LOGS"/run-*.log
command -v redis-server >/dev/null && export TOKENYARD_REQUIRE_REDIS=1

# Build first, unloaded and outside the timed runs: the load is for the tests.
cargo test --locked --no-run "$@" || exit 1

# One busy loop per core, each ended on any exit (success, failure, Ctrl-C).
BUSY=()
stop_busy() { for pid in "${BUSY[@]}"; do kill "$pid" 2>/dev/null; done; }
trap stop_busy EXIT
trap 'exit 130' INT TERM
for _ in $(seq "$(nproc)"); do
    (while :; do :; done) &
    BUSY+=("$!")
done

failed_runs=0
for run in $(seq "$RUNS"); do
    log="$LOGS/run-$run.log"
    start=$SECONDS
    # --no-fail-fast: one failing test binary must not hide the others'.
    if cargo test --locked --no-fail-fast "$@" >"$log" 2>&1; then
        echo "run $run/$RUNS: pass ($((SECONDS - start)) s)"
    else
        failed_runs=$((failed_runs + 1))
        echo "run $run/$RUNS: FAIL ($((SECONDS - start)) s), log: $log"
        # libtest's "test NAME ... FAILED" lines, indented under the run.
        sed -n 's/^test \(.*\) \.\.\. FAILED$/    \1/p' "$log"
    fi
done

# Every test that failed in any run, with how many runs it failed in.
echo "failed tests over $RUNS runs:"
sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$LOGS"/run-*.log 2>/dev/null |
    sort | uniq -c | sed 's/^/    /' | grep . || echo "    none"
exit $((failed_runs > 0))
