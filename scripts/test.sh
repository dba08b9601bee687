#!/usr/bin/env bash
# The test command: installs what the tests need, then runs formatting,
# lints and every test (unit, protocol, and end to end with real clients;
# the fuzz seeds and regressions are replayed by the unit tests of banyan::fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked -- --test-threads=2
echo "test.sh: all green"
