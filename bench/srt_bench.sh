#!/usr/bin/env bash
# SRT benchmarks (issue 3): glass-to-glass latency over SRT, and CPU / memory per SRT player.
#
# 1. Glass-to-glass, SRT in and SRT out, 120 ms SRT latency on every hop, side by side in one
#    run over three paths: direct (publisher -> player, one hop), srt-live-transmit as a relay,
#    and a Banyan node. The publisher is `clock-frames gen` (bench/src/bin/clock-frames.rs:
#    320x240 25 fps frames that show the wall clock in ms at the instant each frame is made)
#    piped into ffmpeg (x264 ultrafast zerolatency, GOP 25, no B-frames, video only, MPEG-TS
#    over SRT, packets flushed at once); the player is ffmpeg decoding the SRT stream (`-fflags nobuffer -flags low_delay`,
#    like ffplay's low-delay mode) to raw frames read by `clock-frames read`, which takes
#    `now - shown clock` for every decoded frame after the first --skip seconds. So it is
#    frame made -> frame decoded by the player (encode, mux, SRT, relay, SRT, demux, decode);
#    display (one vsync) is not included.
# 2. Fan-out cost: one 720p 2.6 Mbit/s publisher (the RTMP benchmark's input as MPEG-TS) and
#    N SRT players (srt-live-transmit to /dev/null) on a fresh Banyan node; the node's CPU time
#    and RSS from /proc with the publisher alone and then with the players, as CPU s per
#    viewer-minute and KiB per player (the same definitions as bench/rtmp_fanout.sh, so the
#    RTMP figures of that script sit next to them).
#
# Usage: bench/srt_bench.sh [--g2g-seconds 15] [--players "10 100"] [--measure 20]
#                           [--skip-g2g] [--skip-fanout] [--no-build]
# BANYAN_BIN=PATH uses that banyan binary. Results: stdout and bench/.cache/srt-<time>.md.
# Needs ffmpeg, srt-live-transmit, jq, curl, cargo. 127.0.0.1 only; free ports picked by the
# node, by the kernel (for the direct and srt-live-transmit paths). Stops all it starts.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=$ROOT/bench/.cache
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
G2G_SECONDS=15
PLAYERS="10 100"
MEASURE=20
DO_G2G=1
DO_FANOUT=1
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --g2g-seconds) G2G_SECONDS=$2; shift 2 ;;
        --players) PLAYERS=$2; shift 2 ;;
        --measure) MEASURE=$2; shift 2 ;;
        --skip-g2g) DO_G2G=0; shift ;;
        --skip-fanout) DO_FANOUT=0; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

mkdir -p "$CACHE"
WORK=$(mktemp -d /tmp/banyan-srt-bench.XXXXXX)
PIDS=()

stop_pid() { # pid: TERM, wait up to 3 s, then KILL
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
stop_all() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    PIDS=()
}
cleanup() {
    stop_all
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[srt_bench] $*" >&2; }

free_udp_port() {
    python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release -q -p banyan-bench --bin clock-frames)
    [ -n "${BANYAN_BIN:-}" ] || (cd "$ROOT" && cargo build --release -q --bin banyan)
fi
CLOCK=$TARGET/release/clock-frames
BANYAN=${BANYAN_BIN:-$TARGET/release/banyan}

# shellcheck source=bench/lib/servers.sh
. "$ROOT/bench/lib/servers.sh"
# Starts a node through the shared starter (bench/lib/servers.sh); sets NODE_PID, SRT_ADDR,
# PUB_ID, PUB_PASS, PLAY_ID, PLAY_PASS.
start_node() {
    start_banyan "$BANYAN" "$WORK/banyan-$RANDOM" || return 1
    NODE_PID=$SERVER_PID
    PIDS+=("$NODE_PID")
    SRT_ADDR=${SRT_PUBLISH#srt://}
    SRT_ADDR=${SRT_ADDR%%\?*}
    HTTP_ADDR=$BANYAN_HTTP
    local q
    q=${SRT_PUBLISH#*\?}
    PUB_ID=$(sed -n 's/.*streamid=\([^&]*\).*/\1/p' <<<"?$q")
    PUB_PASS=$(sed -n 's/.*passphrase=\([^&]*\).*/\1/p' <<<"?$q")
    q=${SRT_PLAY#*\?}
    PLAY_ID=$(sed -n 's/.*streamid=\([^&]*\).*/\1/p' <<<"?$q")
    PLAY_PASS=$(sed -n 's/.*passphrase=\([^&]*\).*/\1/p' <<<"?$q")
}

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$CACHE/srt-$STAMP.md
: > "$OUT"

# --- 1. glass-to-glass ----------------------------------------------------------------------
# publish URL, play URL, label: publisher and player at once, prints the reader's JSON.
g2g_run() {
    local pub=$1 play=$2 label=$3 player_first=${4:-0}
    local frames=$(( (G2G_SECONDS + 6) * 25 ))
    local res=$WORK/g2g-$label.json
    start_player() {
        ffmpeg -hide_banner -nostdin -loglevel error -fflags nobuffer -flags low_delay \
            -i "$play" -map 0:v -fps_mode passthrough -f rawvideo -pix_fmt gray -s 320x240 - \
            2>"$WORK/player-$label.err" | "$CLOCK" read --skip 3 --seconds "$G2G_SECONDS" > "$res" &
        PIDS+=("$!")
    }
    [ "$player_first" = 1 ] && { start_player; sleep 0.5; }
    "$CLOCK" gen --fps 25 --seconds $(( frames / 25 )) | \
        ffmpeg -hide_banner -nostdin -loglevel error -f rawvideo -pix_fmt gray -s 320x240 \
            -framerate 25 -i - -c:v libx264 -preset ultrafast -tune zerolatency -g 25 -bf 0 \
            -pix_fmt yuv420p -bsf:v dump_extra=freq=keyframe -flush_packets 1 -f mpegts "$pub" \
            2>"$WORK/pub-$label.err" &
    PIDS+=("$!")
    [ "$player_first" = 1 ] || { sleep 1; start_player; }
    local i
    for i in $(seq $(( (G2G_SECONDS + 15) * 10 ))); do
        [ -s "$res" ] && break
        sleep 0.1
    done
    stop_all
    if [ -s "$res" ]; then
        jq -c --arg l "$label" '. + {path: $l}' "$res"
    else
        log "$label: no result"; tail -n 3 "$WORK/player-$label.err" "$WORK/pub-$label.err" >&2
        echo "{\"path\":\"$label\",\"frames\":0}"
    fi
}

if [ "$DO_G2G" = 1 ]; then
    L=120000 # ffmpeg's SRT latency is in microseconds
    G=$WORK/g2g.jsonl
    : > "$G"
    log "glass-to-glass: direct (one hop)"
    p=$(free_udp_port)
    g2g_run "srt://127.0.0.1:$p?mode=caller&latency=$L" \
        "srt://127.0.0.1:$p?mode=listener&latency=$L" direct 1 >> "$G"
    log "glass-to-glass: srt-live-transmit relay"
    a=$(free_udp_port); b=$(free_udp_port)
    srt-live-transmit -a:yes -q "srt://127.0.0.1:$a?mode=listener&latency=120" \
        "srt://127.0.0.1:$b?mode=listener&latency=120" </dev/null >/dev/null 2>&1 &
    SLT=$!
    sleep 0.3
    g2g_run "srt://127.0.0.1:$a?latency=$L" "srt://127.0.0.1:$b?latency=$L" srt-live-transmit >> "$G"
    stop_pid "$SLT"
    log "glass-to-glass: banyan"
    start_node
    g2g_run "srt://$SRT_ADDR?streamid=$PUB_ID&passphrase=$PUB_PASS&latency=$L" \
        "srt://$SRT_ADDR?streamid=$PLAY_ID&passphrase=$PLAY_PASS&latency=$L" banyan >> "$G"
    stop_all
    {
        echo "Glass-to-glass over SRT (frame made -> frame decoded by the player), 120 ms SRT latency per hop, load average $(cut -d' ' -f1-3 /proc/loadavg):"
        echo
        echo "| path | frames | undecodable | p50 (ms) | p95 (ms) | min / max (ms) |"
        echo "|---|---:|---:|---:|---:|---:|"
        jq -r '"| \(.path) | \(.frames) | \(.undecodable // "-") | \(.p50_ms // "-") | \(.p95_ms // "-") | \(.min_ms // "-") / \(.max_ms // "-") |"' "$G"
        echo
    } >> "$OUT"
    cat "$G" >&2
fi

# --- 2. fan-out cost ------------------------------------------------------------------------
INPUT_FLV=$CACHE/input-720p30-2500k-90s.flv
INPUT=$CACHE/input-720p30-2500k-90s.ts
if [ "$DO_FANOUT" = 1 ]; then
    if [ ! -s "$INPUT_FLV" ]; then
        log "making $INPUT_FLV"
        ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=30 \
            -f lavfi -i sine=frequency=440:sample_rate=48000 -t 90 \
            -c:v libx264 -preset veryfast -tune zerolatency -profile:v high -pix_fmt yuv420p \
            -g 30 -keyint_min 30 -sc_threshold 0 -bf 0 -b:v 2500k -maxrate 2500k -bufsize 1250k \
            -c:a aac -b:a 128k -ar 48000 -ac 2 -f flv "$INPUT_FLV.tmp"
        mv "$INPUT_FLV.tmp" "$INPUT_FLV"
    fi
    if [ ! -s "$INPUT" ]; then
        ffmpeg -hide_banner -loglevel error -y -i "$INPUT_FLV" -c copy \
            -bsf:v h264_mp4toannexb,dump_extra=freq=keyframe -f mpegts "$INPUT.tmp"
        mv "$INPUT.tmp" "$INPUT"
    fi
    F=$WORK/fanout.txt
    : > "$F"
    for n in $PLAYERS; do
        log "fan-out: banyan, $n SRT players"
        start_node
        ffmpeg -hide_banner -nostdin -loglevel error -re -stream_loop -1 -i "$INPUT" -c copy \
            -f mpegts "srt://$SRT_ADDR?streamid=$PUB_ID&passphrase=$PUB_PASS&latency=120000" \
            2>"$WORK/fan-pub.err" &
        PIDS+=("$!")
        sleep 2
        read -r c0 r0 < <(cpu_rss "$NODE_PID"); t0=$(date +%s.%N)
        sleep 5
        read -r c1 r1 < <(cpu_rss "$NODE_PID"); t1=$(date +%s.%N)
        for i in $(seq "$n"); do
            srt-live-transmit -q "srt://$SRT_ADDR?streamid=$PLAY_ID&passphrase=$PLAY_PASS&latency=120" \
                file://con </dev/null >/dev/null 2>>"$WORK/fan-play.err" &
            PIDS+=("$!")
            sleep 0.02
        done
        sleep 3
        read -r c2 r2 < <(cpu_rss "$NODE_PID"); t2=$(date +%s.%N)
        m2=$(head -1 /proc/stat)
        sleep "$MEASURE"
        read -r c3 r3 < <(cpu_rss "$NODE_PID"); t3=$(date +%s.%N)
        m3=$(head -1 /proc/stat)
        alive=$(curl -sf "http://$HTTP_ADDR/$PUB_ID/views" | jq -r '.liveViewers' || echo "?")
        busy=$(printf '%s\n%s\n' "$m2" "$m3" | awk '{ idle = $5 + $6; tot = 0; for (i = 2; i <= 9; i++) tot += $i;
            if (NR == 1) { i0 = idle; t0 = tot } else printf "%.0f%%", 100 * (1 - (idle - i0) / (tot - t0)) }')
        echo "$n $c0 $c1 $c2 $c3 $t0 $t1 $t2 $t3 $r1 $r3 $alive $(cut -d' ' -f1 /proc/loadavg) $busy" >> "$F"
        stop_all
    done
    {
        echo "SRT fan-out on Banyan (720p30 2.6 Mbit/s MPEG-TS over SRT, players: srt-live-transmit to /dev/null):"
        echo
        echo "| players | CPU s / viewer-min | RSS / player (KiB) | node CPU publisher alone (cores) | node CPU with players (cores) | viewers the node counts | machine busy | load 1m |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
        awk '{
            base = ($3 - $2) / ($7 - $6); cores = ($5 - $4) / ($9 - $8);
            printf "| %d | %.5f | %.1f | %.4f | %.4f | %d | %s | %s |\n", $1, (cores - base) * 60 / $1, ($11 - $10) / $1, base, cores, $12, $14, $13
        }' "$F"
        echo
    } >> "$OUT"
fi

cat "$OUT"
log "table: $OUT"
