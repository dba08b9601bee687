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
# The binary: $BANYAN_BIN, else target/release/banyan (built when missing).
# Nodes are started by the shell kit, scripts/lib.sh.
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
. "$HERE/../../scripts/lib.sh"
kit_on_exit cluster

if [ -n "${DATABASE_URL:-}" ]; then
    URL=$DATABASE_URL
else
    kit_pg_start "$KIT_WORK/pg"
    URL=$KIT_PG_URL
fi

"$(kit_bin)" cluster-ca --out "$KIT_WORK/ca" >/dev/null

for n in a b c; do
    kit_node_start "$KIT_WORK/$n" --config "$HERE/$n.toml" --database-url "$URL" \
        --cluster-fanout "$FANOUT" \
        --cluster-ca-cert "$KIT_WORK/ca/ca.pem" --cluster-ca-key "$KIT_WORK/ca/ca.key"
    printf '{"node":"%s","pid":%s,"http":"http://%s","dataDir":"%s","credentials":"%s"}\n' \
        "$n" "$KIT_PID" "$(kit_json "$KIT_WORK/$n.out" http)" "$KIT_WORK/$n" \
        "$KIT_WORK/$n/credentials.json"
done

# Until SIGTERM or Ctrl-C (or a node exits).
wait
