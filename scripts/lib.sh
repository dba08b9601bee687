# The shell kit of bench/ and samples/: one way to find the binary, start a
# node and wait for its ready line, read its credentials, call its API, start
# a throw-away PostgreSQL, read a process's CPU and memory, and stop
# everything started on exit. POSIX sh, so `sh` and `bash` scripts source it:
#
#   . "$(dirname "$0")/../scripts/lib.sh"
#
# Every function is prefixed `kit_`; what it sets is prefixed `KIT_`.
# Needs python3 (JSON) and curl. The tests' own kit is tests/common/.

# The checkout: the first directory above the sourcing script that holds
# this file.
KIT_ROOT=$(cd "$(dirname -- "$0")" && pwd)
while [ "$KIT_ROOT" != / ] && [ ! -f "$KIT_ROOT/scripts/lib.sh" ]; do
    KIT_ROOT=$(dirname -- "$KIT_ROOT")
done
KIT_PIDS=""
KIT_PG_DATA=""
KIT_PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}

# Listen on port 0 everywhere: the node picks free ports and prints them.
KIT_PORTS0="--http 127.0.0.1:0 --rtmp 127.0.0.1:0 --rtmps 127.0.0.1:0 --srt 127.0.0.1:0 --webrtc 127.0.0.1:0 --metrics 127.0.0.1:0"

kit_log() { echo "$(date +%T) $*" >&2; }

# The binary: $BANYAN_BIN, else the release build (built when missing or
# when KIT_BUILD=1), so a benchmark never measures a debug build by accident.
kit_bin() {
    if [ -n "${BANYAN_BIN:-}" ]; then echo "$BANYAN_BIN"; return; fi
    _kit_target=${CARGO_TARGET_DIR:-$KIT_ROOT/target}
    if [ ! -x "$_kit_target/release/banyan" ] || [ "${KIT_BUILD:-0}" = 1 ]; then
        (cd "$KIT_ROOT" && cargo build --release -q -p banyan --bin banyan) >&2 || return 1
    fi
    echo "$_kit_target/release/banyan"
}

# Remember a child to stop on exit.
kit_track() { KIT_PIDS="$KIT_PIDS $1"; }

# Stop every tracked child (TERM, then KILL after a second) and the
# throw-away PostgreSQL. Installed as the EXIT trap by kit_on_exit.
kit_cleanup() {
    for p in $KIT_PIDS; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 1
    for p in $KIT_PIDS; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    KIT_PIDS=""
    kit_pg_stop
    if [ -n "${KIT_WORK:-}" ]; then rm -rf "$KIT_WORK"; fi
}

# A work dir removed on exit, children stopped on exit and on INT/TERM.
kit_on_exit() {
    KIT_WORK=$(mktemp -d "${TMPDIR:-/tmp}/banyan-${1:-kit}.XXXXXX")
    trap kit_cleanup EXIT
    trap 'exit 0' INT TERM
}

# A loopback port free now, below the kernel's ephemeral range, so no
# bind(0) or outgoing connection takes it before its program binds it.
kit_free_port() {
    python3 - <<'PY'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(1000):
    p = random.randrange(10000, max(low, 10001))
    try:
        t = socket.socket(); t.bind(("127.0.0.1", p))
        u = socket.socket(type=socket.SOCK_DGRAM); u.bind(("127.0.0.1", p))
        t.close(); u.close(); print(p); break
    except OSError:
        pass
PY
}

# CPU ticks (user + system) and resident memory (KiB) of a process.
kit_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
kit_rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# A field of the JSON in a file (the whole file, else its first line that
# is a JSON object): kit_json FILE KEY [KEY...], nested keys one level each
# (kit_json in.json result rtmp streamKey).
kit_json() {
    python3 - "$@" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
try:
    v = json.loads(text)
except ValueError:
    v = next(json.loads(l) for l in text.splitlines() if l.startswith("{"))
for k in sys.argv[2:]:
    v = v[int(k)] if isinstance(v, list) else v[k]
print("" if v is None else v)
PY
}

# Start `banyan serve` with data dir DIR and the given arguments (at
# niceness $KIT_NICE, 0 by default), stdout to DIR.out and logs to DIR.log;
# wait (30 s at most) for its ready line.
# Sets KIT_PID. Read what it printed with kit_json DIR.out http (or rtmp,
# rtmps, srt, api, metrics, credentials) and its tokens with kit_cred.
kit_node_start() {
    _kit_dir=$1; shift
    mkdir -p "$_kit_dir"; chmod 700 "$_kit_dir"
    _kit_bin=$(kit_bin) || return 1
    RUST_LOG=${RUST_LOG:-warn} nice -n "${KIT_NICE:-0}" "$_kit_bin" serve --data-dir "$_kit_dir" "$@" \
        >"$_kit_dir.out" 2>"$_kit_dir.log" &
    KIT_PID=$!
    kit_track "$KIT_PID"
    _kit_i=0
    while ! grep -q '"ready"' "$_kit_dir.out" 2>/dev/null; do
        if ! kill -0 "$KIT_PID" 2>/dev/null || [ $_kit_i -ge 300 ]; then
            kit_log "the node in $_kit_dir did not start; its log:"
            tail -n 20 "$_kit_dir.log" >&2
            return 1
        fi
        sleep 0.1
        _kit_i=$((_kit_i + 1))
    done
}

# A field of a node's credentials.json: kit_cred DIR accountId|apiToken|adminToken|api
kit_cred() { kit_json "$1/credentials.json" "$2"; }

# Call a node's API with its API token (kept off the command line):
# kit_api DIR METHOD PATH [BODY]; PATH is under /client/v4/accounts/<id>/stream.
kit_api() {
    _kit_dir=$1 _kit_method=$2 _kit_path=$3 _kit_body=${4:-}
    _kit_base="$(kit_cred "$_kit_dir" api)/client/v4/accounts/$(kit_cred "$_kit_dir" accountId)/stream"
    # A node serving its API over HTTPS with its own self-signed certificate
    # (names localhost and 127.0.0.1): trust that certificate, and only it.
    _kit_ca=
    case $_kit_base in
        https://*) if [ -f "$_kit_dir/tls/cert.pem" ]; then _kit_ca=$_kit_dir/tls/cert.pem; fi ;;
    esac
    printf 'header = "Authorization: Bearer %s"\n' "$(kit_cred "$_kit_dir" apiToken)" | \
        curl -sf -K - ${_kit_ca:+--cacert "$_kit_ca"} -X "$_kit_method" -H 'content-type: application/json' \
            ${_kit_body:+--data "$_kit_body"} "$_kit_base$_kit_path"
}

# Create a live input on a node and write its JSON to FILE:
# kit_input DIR FILE [BODY]; then e.g. kit_json FILE result rtmp streamKey.
kit_input() {
    _kit_body='{}'
    [ $# -ge 3 ] && _kit_body=$3
    kit_api "$1" POST /live_inputs "$_kit_body" >"$2"
}

kit_as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A throw-away PostgreSQL in DIR (which must be under a directory the
# postgres user can enter); sets KIT_PG_URL. Stopped by kit_cleanup.
kit_pg_start() {
    [ -x "$KIT_PG_BIN/initdb" ] || { kit_log "no PostgreSQL server binaries in $KIT_PG_BIN"; return 1; }
    mkdir -p "$1"
    if [ "$(id -u)" = 0 ]; then chown postgres "$1"; chmod o+x "$(dirname -- "$1")"; fi
    KIT_PG_DATA="$1/data"
    _kit_port=$(kit_free_port)
    kit_as_postgres "$KIT_PG_BIN/initdb" --no-sync -D "$KIT_PG_DATA" -A trust -U postgres \
        >"$1/initdb.log" 2>&1 || { cat "$1/initdb.log" >&2; return 1; }
    kit_as_postgres "$KIT_PG_BIN/pg_ctl" -D "$KIT_PG_DATA" -l "$1/pg.log" -w \
        -o "-k $1 -p $_kit_port -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
        || { cat "$1/pg.log" >&2; return 1; }
    KIT_PG_URL="postgres://postgres@127.0.0.1:$_kit_port/postgres"
}

kit_pg_stop() {
    if [ -n "$KIT_PG_DATA" ]; then
        kit_as_postgres "$KIT_PG_BIN/pg_ctl" -D "$KIT_PG_DATA" -m immediate stop >/dev/null 2>&1 || true
        KIT_PG_DATA=""
    fi
}
