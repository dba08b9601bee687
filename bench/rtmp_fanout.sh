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
# Needs: ffmpeg, nginx + libnginx-mod-rtmp, jq, curl, cargo. Servers start through the shared
# starters (bench/lib/servers.sh): nginx-rtmp on 127.0.0.1:19350 with one worker, Banyan on
# ports of its own choosing. Everything it starts is stopped on exit.
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
STOP_PID=""
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
    stop_pid "$STOP_PID"
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
# The shared starters (bench/lib/servers.sh). start_server sets STOP_PID (what to stop),
# PUBLISH_URL, PLAY_URL and SAMPLE_PIDS (the pids whose CPU and memory count as the server's).
# shellcheck source=bench/lib/servers.sh
. "$ROOT/bench/lib/servers.sh"

start_server() {
    case "$1" in
        nginx)
            start_nginx_rtmp "$WORK/nginx"
            STOP_PID=$NGINX_MASTER ;;
        banyan)
            start_banyan "$BANYAN" "$WORK/banyan"
            STOP_PID=$SERVER_PID ;;
        *) log "unknown server $1"; return 1 ;;
    esac
    SAMPLE_PIDS=$SERVER_PID
    PUBLISH_URL=$RTMP_PUBLISH
    PLAY_URL=$RTMP_PLAY
}

# --- runs -------------------------------------------------------------------------------
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=$CACHE/rtmp-fanout-$STAMP.jsonl
: > "$RESULTS"
for n in $PLAYERS; do
    for server in $SERVERS; do
        log "$server, $n players"
        start_server "$server"
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
        stop_pid "$STOP_PID"
        STOP_PID=""
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
