#!/usr/bin/env bash
# Memory per real HLS viewer as a slope: one ffmpeg process per viewer (the HLS reader of
# viewer_cost.sh's LABEL-hls case), the server's RSS averaged over 10 s with the publisher
# alone, with --first viewers and with --first + --more viewers, each after the viewers have
# played for 15 s. The slope between the two viewer counts is what one more viewer costs once
# the server is warm; it leaves out the fixed costs that a per-viewer figure from zero spreads
# over the viewers (the first growth of the heap, a segment window not yet full).
#
# Cases: LABEL (a Banyan binary given with --bin LABEL=PATH: LL-HLS fMP4 over RTMP ingest) and
# nginx-fmp4 (ffmpeg's HLS muxer writing fMP4 segments, 1 s, six listed, into a directory
# nginx serves as static files: the same format as Banyan's).
#
# Usage: bench/hls_slope.sh [--first 100] [--more 200] [--bin LABEL=PATH ...]
#                           [--cases "nginx-fmp4 LABEL ..."]
# Default: `banyan` = $CARGO_TARGET_DIR/release/banyan (built if missing); cases nginx-fmp4 and
# every --bin. Results: stdout and bench/.cache/hls-slope-<time>.md. Needs ffmpeg, nginx +
# libnginx-mod-rtmp, jq, curl. Everything it starts is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=$ROOT/bench/.cache
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
FIRST=100
MORE=200
BINS=()
CASES=""
while [ $# -gt 0 ]; do
    case "$1" in
        --first) FIRST=$2; shift 2 ;;
        --more) MORE=$2; shift 2 ;;
        --bin) BINS+=("$2"); shift 2 ;;
        --cases) CASES=$2; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
# shellcheck source=bench/lib/servers.sh
. "$ROOT/bench/lib/servers.sh"
default_bins "$TARGET" "$ROOT"
if [ -z "$CASES" ]; then
    CASES="nginx-fmp4"
    for b in "${BINS[@]}"; do CASES="$CASES ${b%%=*}"; done
fi

INPUT_FLV=$CACHE/input-720p30-2500k-90s.flv
if [ ! -s "$INPUT_FLV" ]; then
    echo "no $INPUT_FLV: run bench/viewer_cost.sh once to make it" >&2
    exit 1
fi
WORK=$(mktemp -d /tmp/banyan-hls-slope.XXXXXX)
chmod 755 "$WORK" # nginx's worker (another user) serves files under it
PIDS=()
stop_all() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT
log() { echo "[hls_slope] $*" >&2; }
rss_avg() { # the server's RSS in KiB, averaged over 10 samples a second apart
    local s=0 k
    for k in $(seq 10); do
        s=$((s + $(awk '/^VmRSS/ { print $2 }' "/proc/$SERVER_PID/status")))
        sleep 1
    done
    echo $((s / 10))
}
viewers() { # N: start N more ffmpeg players
    local i
    for i in $(seq "$1"); do
        ffmpeg -hide_banner -nostdin -loglevel error -i "$HLS_PLAY" -map 0 -c copy \
            -f mpegts -y /dev/null 2>>"$WORK/play.err" &
        PIDS+=("$!")
        sleep 0.02
    done
}

RAW=$WORK/raw.txt
: > "$RAW"
for case in $CASES; do
    log "$case: $FIRST then $((FIRST + MORE)) viewers"
    if [ "$case" = nginx-fmp4 ]; then
        start_nginx_rtmp "$WORK/nginx" hls
        PIDS+=("$NGINX_MASTER")
        start_fmp4_segmenter "$INPUT_FLV" "$WORK/nginx"
        PIDS+=("$SEGMENTER_PID")
    else
        start_banyan "$(bin_of "$case")" "$WORK/$case"
        PIDS+=("$SERVER_PID")
        ffmpeg -hide_banner -nostdin -loglevel error -re -stream_loop -1 -i "$INPUT_FLV" -c copy \
            -f flv "$RTMP_PUBLISH" 2>"$WORK/pub.err" &
        PIDS+=("$!")
    fi
    sleep 3
    for i in $(seq 150); do
        curl -sf "$HLS_PLAY" | grep -q 'EXTINF\|STREAM-INF' && break
        sleep 0.2
    done
    sleep 12 # the segment window fills
    r0=$(rss_avg)
    viewers "$FIRST"
    sleep 15
    r1=$(rss_avg)
    viewers "$MORE"
    sleep 15
    r2=$(rss_avg)
    echo "$case $r0 $r1 $r2 $(cut -d' ' -f1 /proc/loadavg)" >> "$RAW"
    stop_all
    sleep 1
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$CACHE/hls-slope-$STAMP.md
{
    echo "Memory per ffmpeg HLS viewer, $FIRST then $((FIRST + MORE)) viewers, $(nproc) cores (shared), $(date -u +%FT%TZ):"
    echo
    echo "| case | RSS alone (KiB) | with $FIRST | with $((FIRST + MORE)) | per viewer, 0 to $FIRST (KiB) | slope, $FIRST to $((FIRST + MORE)) (KiB per viewer) | load 1m |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    awk -v f="$FIRST" -v m="$MORE" '{ printf "| %s | %d | %d | %d | %.1f | %.1f | %s |\n",
        $1, $2, $3, $4, ($3 - $2) / f, ($4 - $3) / m, $5 }' "$RAW"
} > "$OUT"
cat "$OUT"
log "table: $OUT"
