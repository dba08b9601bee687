#!/bin/sh
# A three-node Banyan cluster on this machine: nodes a, b and c on loopback
# (ports in a.toml, b.toml, c.toml), sharing one PostgreSQL.
#
#   samples/cluster/up.sh [--fanout N]
#
# * PostgreSQL: $DATABASE_URL if set, else a throw-away server in a temp dir
#   (run as the postgres user when started as root).
# * A fresh cluster CA in the temp dir ("banyan cluster-ca").
# * Prints one JSON line per node once it is ready:
#   {"node":"a","pid":N,"http":"http://127.0.0.1:8081","dataDir":"...","credentials":"..."}
# * SIGTERM or Ctrl-C stops the nodes and the throw-away PostgreSQL and removes
#   the temp dir.
#
# The binary: $BANYAN_BIN, else target/release/banyan or target/debug/banyan,
# else it is built with cargo.
set -eu

usage() {
    echo "usage: $0 [--fanout N]" >&2
}

FANOUT=4
while [ $# -gt 0 ]; do
    case "$1" in
        --fanout) [ $# -ge 2 ] || { usage; exit 2; }; FANOUT="$2"; shift 2 ;;
        --fanout=*) FANOUT="${1#--fanout=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage; exit 2 ;;
    esac
done
case "$FANOUT" in
    ''|*[!0-9]*|0) echo "--fanout needs a positive number" >&2; exit 2 ;;
esac

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BANYAN_BIN:-}
if [ -z "$BIN" ]; then
    for b in "$ROOT/target/release/banyan" "$ROOT/target/debug/banyan"; do
        if [ -x "$b" ]; then BIN=$b; break; fi
    done
fi
if [ -z "$BIN" ]; then
    echo "building banyan..." >&2
    (cd "$ROOT" && cargo build --release -q -p banyan) >&2
    BIN="$ROOT/target/release/banyan"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/banyan-cluster.XXXXXX")
PIDS=""
PG_DATA=""
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}

as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cleanup() {
    trap - INT TERM EXIT
    for p in $PIDS; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $PIDS; do wait "$p" 2>/dev/null || true; done
    if [ -n "$PG_DATA" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [ -n "${DATABASE_URL:-}" ]; then
    URL=$DATABASE_URL
else
    [ "$(id -u)" = 0 ] && chown postgres "$WORK"
    PG_DATA="$WORK/pg"
    PORT=$(free_port)
    as_postgres "$PG_BIN/initdb" --no-sync -D "$PG_DATA" -A trust -U postgres >"$WORK/initdb.log" 2>&1 \
        || { cat "$WORK/initdb.log" >&2; exit 1; }
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$WORK/pg.log" -w \
        -o "-k $WORK -p $PORT -c listen_addresses=127.0.0.1" start >/dev/null \
        || { cat "$WORK/pg.log" >&2; exit 1; }
    URL="postgres://postgres@127.0.0.1:$PORT/postgres"
fi

"$BIN" cluster-ca --out "$WORK/ca" >/dev/null

for n in a b c; do
    mkdir -p "$WORK/$n"
    chmod 700 "$WORK/$n"
    "$BIN" serve --config "$HERE/$n.toml" --data-dir "$WORK/$n" --database-url "$URL" \
        --cluster-fanout "$FANOUT" \
        --cluster-ca-cert "$WORK/ca/ca.pem" --cluster-ca-key "$WORK/ca/ca.key" \
        >"$WORK/$n.out" 2>"$WORK/$n.log" &
    pid=$!
    PIDS="$PIDS $pid"
    # Bounded wait (30 s) for the node's ready line.
    i=0
    while [ ! -s "$WORK/$n.out" ]; do
        if ! kill -0 "$pid" 2>/dev/null || [ $i -ge 300 ]; then
            echo "node $n did not start; its log:" >&2
            tail -n 20 "$WORK/$n.log" >&2
            exit 1
        fi
        sleep 0.1
        i=$((i + 1))
    done
    http=$(sed -n 's/.*"http":"\([^"]*\)".*/\1/p' "$WORK/$n.out" | head -n 1)
    printf '{"node":"%s","pid":%s,"http":"http://%s","dataDir":"%s","credentials":"%s"}\n' \
        "$n" "$pid" "$http" "$WORK/$n" "$WORK/$n/credentials.json"
done

# Until SIGTERM or Ctrl-C (or a node exits).
wait
