#!/bin/sh
# Analytics benchmarks (SQLite, release build):
#   - query p95 over 31 days, 10,000 creators, ~10 million viewer-minutes
#   - recording cost of 1,000 concurrent viewers (accounting + drain + flush)
# Usage: bench/analytics_query.sh   (CARGO_TARGET_DIR is honoured)
set -eu
cd "$(dirname "$0")/.."
exec nice -n 10 cargo test --release -p banyan --bin banyan analytics::bench -- \
    --ignored --nocapture --test-threads 1
