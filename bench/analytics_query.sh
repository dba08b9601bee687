#!/bin/sh
# Analytics benchmarks (release build), on SQLite and on a throw-away
# PostgreSQL 15 (Debian's postgresql package, run as the postgres user):
#   - query p95 over 31 days, 10,000 creators, ~10 million viewer-minutes
#   - recording cost of 1,000 concurrent viewers (accounting + drain + flush)
# Usage: bench/analytics_query.sh   (as root; CARGO_TARGET_DIR is honoured;
#        BANYAN_BENCH_POSTGRES=url to use a database of your own instead)
set -eu
cd "$(dirname "$0")/.."
PG_BIN=/usr/lib/postgresql/15/bin
if [ -z "${BANYAN_BENCH_POSTGRES:-}" ] && [ -x "$PG_BIN/initdb" ]; then
    dir=$(mktemp -d)
    chown postgres "$dir"
    trap 'runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1; rm -rf "$dir"' EXIT
    runuser -u postgres -- "$PG_BIN/initdb" --no-sync -D "$dir/data" -A trust -U postgres >/dev/null
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
        -o "-k $dir -p $port -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    export BANYAN_BENCH_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
fi
nice -n 10 cargo test --release -p banyan --lib analytics::bench -- \
    --ignored --nocapture --test-threads 1
