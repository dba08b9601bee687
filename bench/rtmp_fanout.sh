#!/usr/bin/env bash
# RTMP fan-out benchmark: Banyan side by side with nginx-rtmp (Debian's libnginx-mod-rtmp).
#
# One input (1280x720 30 fps H.264 ~2.5 Mbit/s CBR-ish, 1 s GOP, no B-frames, AAC 128k, made
# once and cached in bench/.cache/), one publisher and N RTMP players per run, all in one
# `rtmp-load` process (bench/src/bin/rtmp-load.rs). For each N and each server in turn, the
# server is started fresh, loaded for about 40 s, and stopped; rtmp-load samples the server's
# CPU time and RSS from /proc with the publisher alone, once every player has joined, and at
# the end. The result is a markdown table (stdout and bench/.cache/rtmp-fanout-<time>.md) and
# the raw JSON lines (bench/.cache/rtmp-fanout-<time>.jsonl).
#
# Usage: bench/rtmp_fanout.sh [--players "10 100 500"] [--servers "nginx banyan"]
#                             [--measure SECONDS] [--ramp PER_SECOND] [--nice N] [--no-build]
# --nice runs the servers and the load tool under `nice -n N` (same for both servers; a
# negative N shields the measurement from other work on a shared machine).
# BANYAN_BIN=PATH uses that banyan binary instead of building target/release/banyan.
# Needs: ffmpeg, nginx + libnginx-mod-rtmp, jq, curl, cargo. Uses 127.0.0.1 ports 19350
# (nginx) and free ports picked by Banyan. Everything it starts is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=$ROOT/bench/.cache
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PLAYERS="10 100 500"
SERVERS="nginx banyan"
MEASURE=20
RAMP=50
BUILD=1
NICE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --players) PLAYERS=$2; shift 2 ;;
        --servers) SERVERS=$2; shift 2 ;;
        --measure) MEASURE=$2; shift 2 ;;
        --ramp) RAMP=$2; shift 2 ;;
        --nice) NICE=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

mkdir -p "$CACHE"
WORK=$(mktemp -d /tmp/banyan-bench.XXXXXX)
SERVER_PID=""
LOAD_PID=""

stop_pid() { # pid: TERM, wait up to 5 s, then KILL
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    stop_pid "$LOAD_PID"
    stop_pid "$SERVER_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[rtmp_fanout] $*" >&2; }

# --- the input, made once --------------------------------------------------------------
INPUT=$CACHE/input-720p30-2500k-90s.flv
if [ ! -s "$INPUT" ]; then
    log "making $INPUT (90 s, 1280x720 30 fps, x264 veryfast 2.5 Mbit/s, 1 s GOP, AAC 128k)"
    ffmpeg -hide_banner -loglevel error -y \
        -f lavfi -i testsrc2=size=1280x720:rate=30 \
        -f lavfi -i sine=frequency=440:sample_rate=48000 -t 90 \
        -c:v libx264 -preset veryfast -tune zerolatency -profile:v high -pix_fmt yuv420p \
        -g 30 -keyint_min 30 -sc_threshold 0 -bf 0 \
        -b:v 2500k -maxrate 2500k -bufsize 1250k \
        -c:a aac -b:a 128k -ar 48000 -ac 2 -f flv "$INPUT.tmp"
    mv "$INPUT.tmp" "$INPUT"
fi

# --- binaries ---------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release -q -p banyan-bench --bin rtmp-load)
    if [ -z "${BANYAN_BIN:-}" ]; then
        case " $SERVERS " in *" banyan "*) (cd "$ROOT" && cargo build --release -q --bin banyan) ;; esac
    fi
fi
LOAD=$TARGET/release/rtmp-load
BANYAN=${BANYAN_BIN:-$TARGET/release/banyan}

# --- servers ----------------------------------------------------------------------------
# Each start_* sets SERVER_PID, PUBLISH_URL, PLAY_URL and SAMPLE_PIDS (the pids whose CPU
# and memory count as the server's).

start_nginx() {
    local dir=$WORK/nginx
    rm -rf "$dir"
    mkdir -p "$dir/hls" "$dir/tmp"
    cat > "$dir/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; }
rtmp {
    server {
        listen 127.0.0.1:19350;
        chunk_size 4096;
        application live {
            live on;
            hls on;
            hls_path $dir/hls;
            hls_fragment 1s;
            hls_playlist_length 6s;
        }
    }
}
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:19351;
        location / { root $dir/hls; }
    }
}
EOF
    nice -n "$NICE" nginx -p "$dir" -c "$dir/nginx.conf" 2>>"$dir/error.log" &
    SERVER_PID=$!
    local i
    for i in $(seq 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/19350) 2>/dev/null; then break; fi
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$dir/error.log" >&2; return 1; }
        sleep 0.05
    done
    local workers=""
    for i in $(seq 100); do
        workers=$(pgrep -P "$SERVER_PID" | tr '\n' ' ' || true)
        [ -n "$workers" ] && break
        sleep 0.05
    done
    SAMPLE_PIDS="$SERVER_PID $workers"
    PUBLISH_URL=rtmp://127.0.0.1:19350/live/bench
    PLAY_URL=rtmp://127.0.0.1:19350/live/bench
}

start_banyan() {
    local dir=$WORK/banyan
    rm -rf "$dir"
    mkdir -p "$dir"
    RUST_LOG=warn nice -n "$NICE" "$BANYAN" serve --data-dir "$dir/data" --rtmp 127.0.0.1:0 --rtmps 127.0.0.1:0 \
        --srt 127.0.0.1:0 --http 127.0.0.1:0 --metrics 127.0.0.1:0 > "$dir/stdout" 2> "$dir/stderr" &
    SERVER_PID=$!
    local i ready=""
    for i in $(seq 200); do
        ready=$(grep -m1 '"ready"' "$dir/stdout" 2>/dev/null || true)
        [ -n "$ready" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$dir/stderr" >&2; return 1; }
        sleep 0.05
    done
    [ -n "$ready" ] || { log "banyan did not print its ready line"; return 1; }
    local rtmp creds api account token input
    rtmp=$(jq -r '.rtmp' <<<"$ready")
    creds=$(jq -r '.credentials' <<<"$ready")
    api=$(jq -r '.api' "$creds")
    account=$(jq -r '.accountId' "$creds")
    token=$(jq -r '.apiToken' "$creds")
    # The token goes through a file, never on a command line.
    printf 'header = "Authorization: Bearer %s"\n' "$token" > "$dir/curl.cfg"
    input=$(curl -sf -K "$dir/curl.cfg" -H 'Content-Type: application/json' \
        -d '{"meta":{"name":"bench"}}' "$api/client/v4/accounts/$account/stream/live_inputs")
    SAMPLE_PIDS=$SERVER_PID
    PUBLISH_URL=rtmp://$rtmp/live/$(jq -r '.result.rtmp.streamKey' <<<"$input")
    PLAY_URL=rtmp://$rtmp/live/$(jq -r '.result.rtmpPlayback.streamKey' <<<"$input")
}

# --- runs -------------------------------------------------------------------------------
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=$CACHE/rtmp-fanout-$STAMP.jsonl
: > "$RESULTS"
for n in $PLAYERS; do
    for server in $SERVERS; do
        log "$server, $n players"
        "start_$server"
        pid_args=()
        for p in $SAMPLE_PIDS; do pid_args+=(--server-pid "$p"); done
        nice -n "$NICE" "$LOAD" --input "$INPUT" --publish "$PUBLISH_URL" --play "$PLAY_URL" \
            --players "$n" --ramp "$RAMP" --warmup 2 --baseline 5 --measure "$MEASURE" \
            --label "$server" "${pid_args[@]}" > "$WORK/load.out" &
        LOAD_PID=$!
        if wait "$LOAD_PID"; then
            cat "$WORK/load.out" >> "$RESULTS"
        else
            log "rtmp-load failed against $server with $n players"
        fi
        LOAD_PID=""
        stop_pid "$SERVER_PID"
        SERVER_PID=""
    done
done

# --- the table --------------------------------------------------------------------------
TABLE=$CACHE/rtmp-fanout-$STAMP.md
{
    echo "| players | server | CPU s / viewer-min | RSS / player (KiB) | latency p50 / p95 / p99 (ms) | first frame p50 / p95 (ms) | first frame is key | behind live 3 s after join p50 / p95 (ms) | frames lost | server CPU (cores) | load tool CPU (cores) | machine busy |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    jq -r '"| \(.players_ok)/\(.players) | \(.label) | \(.server.cpu_s_per_viewer_min) | \(.server.rss_kib_per_player) | \(.latency_ms.p50) / \(.latency_ms.p95) / \(.latency_ms.p99) | \(.join.ttff_ms_p50) / \(.join.ttff_ms_p95) | \(.join.first_frame_keyframe_share * 100 | round)% | \(.join.lag_3s_ms_p50) / \(.join.lag_3s_ms_p95) | \(.loss.lost)/\(.loss.expected) | \(.server.measure_cpu_cores) | \(.client.cpu_cores) | \(.client.machine_busy_share * 100 | round)% (load \(.client.loadavg_1m)) |"' "$RESULTS"
    echo
    echo "Ratios Banyan / nginx-rtmp:"
    echo
    echo "| players | CPU / viewer-min | RSS / player | latency p95 | first frame p50 |"
    echo "|---:|---:|---:|---:|---:|"
    jq -rs '
      def r(a; b): if (b // 0) == 0 then "n/a" else ((a / b) * 1000 | round / 1000 | tostring) end;
      group_by(.players)[] as $g
      | ($g | map(select(.label == "nginx")) | first) as $n
      | ($g | map(select(.label == "banyan")) | first) as $b
      | select($n != null and $b != null)
      | "| \($b.players) | \(r($b.server.cpu_s_per_viewer_min; $n.server.cpu_s_per_viewer_min)) | \(r($b.server.rss_kib_per_player; $n.server.rss_kib_per_player)) | \(r($b.latency_ms.p95; $n.latency_ms.p95)) | \(r($b.join.ttff_ms_p50; $n.join.ttff_ms_p50)) |"' "$RESULTS"
} > "$TABLE"
cat "$TABLE"
log "raw results: $RESULTS"
log "table: $TABLE"
