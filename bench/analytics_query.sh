#!/bin/sh
# Analytics benchmarks (release build), on SQLite and on a throw-away
# PostgreSQL 15 (Debian's postgresql package, run as the postgres user):
#   - query p95 over 31 days, 10,000 creators, ~10 million viewer-minutes
#   - recording cost of 1,000 concurrent viewers (accounting + drain + flush)
# Usage: bench/analytics_query.sh   (as root; CARGO_TARGET_DIR is honoured;
#        BANYAN_BENCH_POSTGRES=url to use a database of your own instead)
set -eu
. "$(dirname "$0")/../scripts/lib.sh"
cd "$KIT_ROOT"
if [ -z "${BANYAN_BENCH_POSTGRES:-}" ] && [ -x "$KIT_PG_BIN/initdb" ]; then
    kit_on_exit analytics
    kit_pg_start "$KIT_WORK/pg"
    export BANYAN_BENCH_POSTGRES="$KIT_PG_URL"
fi
nice -n 10 cargo test --release -p banyan --lib analytics::bench -- \
    --ignored --nocapture --test-threads 1
