#!/usr/bin/env bash
# Memory per idle kept-alive HTTP connection (issue 17): a fresh Banyan node (the shared
# starter), one live input published with the RTMP benchmark's input, then N connections that
# each fetch the media playlist once and stay open and idle (bench/lib/http_idle.py).
#
# Usage: bench/http_idle.sh [--connections 1000] [--bin LABEL=PATH]...
# Default binary: target/release/banyan. One JSON line per binary on stdout.
# Needs ffmpeg, python3, jq, curl. 127.0.0.1 only.
set -euo pipefail
. "$(dirname "$0")/lib/servers.sh"
N=1000
BINS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --connections) N=$2; shift 2 ;;
        --bin) BINS+=("$2"); shift 2 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ ${#BINS[@]} -gt 0 ] || BINS=("banyan=$KIT_ROOT/target/release/banyan")
INPUT=$KIT_ROOT/bench/.cache/input-720p30-2500k-90s.flv
[ -s "$INPUT" ] || { echo "run bench/hls_bench.sh once first (it makes $INPUT)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/banyan-http-idle.XXXXXX)
PUB=""
cleanup() {
    [ -n "$PUB" ] && kill "$PUB" 2>/dev/null
    [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for b in "${BINS[@]}"; do
    label=${b%%=*} bin=${b#*=}
    start_banyan "$bin" "$WORK/$label"
    hls=http://$BANYAN_HTTP/$BANYAN_LIVE_ID/manifest/video.m3u8
    ffmpeg -hide_banner -nostdin -loglevel error -re -stream_loop -1 -i "$INPUT" -map 0 -c copy \
        -f flv "$RTMP_PUBLISH" &
    PUB=$!
    for _ in $(seq 100); do curl -sf "$hls" | grep -q STREAM-INF && break; sleep 0.2; done
    sleep 3
    python3 "$KIT_ROOT/bench/lib/http_idle.py" "$hls" "$N" "$SERVER_PID" |
        jq -c --arg l "$label" '{label: $l} + .'
    kill "$PUB"; wait "$PUB" 2>/dev/null || true; PUB=""
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
done
