#!/bin/sh
# Regenerates assets/dashboard.txt, the dashboard capture in the README: the
# real `tokenyard demo` in a 120x36 pseudo-terminal, read back through a
# vt100 emulator after CAPTURE_SECS seconds (default 25).
set -eu
cd "$(dirname "$0")/.."
cargo test --test dashboard -- --ignored --exact capture_for_readme --nocapture
