#!/usr/bin/env bash
# Bounded soak of one node: many streams, viewers over RTMP, SRT and HLS, the node's memory
# and CPU sampled every 10 s, first minute compared with last minute.
#
# Streams: stream 1 is published by `rtmp-load` (bench/src/bin/rtmp-load.rs), which also runs
# the RTMP viewers of the soak in one process and reports their latency and lost frames over the
# whole run; streams 2..STREAMS are published by ffmpeg from a pre-encoded clip
# (`-re -stream_loop -1 -c copy`); SRT viewers (srt-live-transmit to /dev/null) and HLS pollers
# (curl: multivariant playlist, media playlist, newest segment, every second) are spread over
# them. HLS viewers are `hls-load` (bench/src/bin/hls-load.rs): LL-HLS players in one process
# per stream (blocking playlist reloads, every new part), at most HLS_STREAMS streams; they
# report their errors and the media they fetched. Two short latency probes (rtmp-load, 5 players, 40 s of measurement, on an extra input)
# run in the first and the last minute.
#
# Settings (environment):
#   SOAK_MINUTES=10   length of the soak (at least 2)
#   STREAMS=20        streams published
#   RTMP_VIEWERS=900  RTMP viewers on stream 1 (one rtmp-load process)
#   SRT_VIEWERS=40    SRT viewers over streams 2..STREAMS
#   HLS_VIEWERS=60    LL-HLS viewers over streams 2..HLS_STREAMS+1
#   HLS_STREAMS=4     streams the HLS viewers are spread over (one hls-load process each)
#   OUT=DIR           where the CSV, logs and JSON go [bench/.cache/soak-<time>]
#   BANYAN_BIN, RTMP_LOAD_BIN, HLS_LOAD_BIN  binaries to use instead of building them (release)
# The full soak (defaults) is about 1,000 viewers for 10 minutes; on a shared 2-core machine
# use e.g. SOAK_MINUTES=3 RTMP_VIEWERS=100 SRT_VIEWERS=10 HLS_VIEWERS=10.
# Needs: ffmpeg, srt-live-transmit, curl, jq, cargo. Everything started is stopped on exit.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"

ROOT=$KIT_ROOT
CACHE=$ROOT/bench/.cache
SOAK_MINUTES=${SOAK_MINUTES:-10}
STREAMS=${STREAMS:-20}
RTMP_VIEWERS=${RTMP_VIEWERS:-900}
SRT_VIEWERS=${SRT_VIEWERS:-40}
HLS_VIEWERS=${HLS_VIEWERS:-60}
HLS_STREAMS=${HLS_STREAMS:-4}
OUT=${OUT:-$CACHE/soak-$(date +%Y%m%d-%H%M%S)}
[ "$SOAK_MINUTES" -ge 2 ] || { echo "SOAK_MINUTES must be at least 2" >&2; exit 2; }
[ "$STREAMS" -ge 2 ] || { echo "STREAMS must be at least 2" >&2; exit 2; }
mkdir -p "$CACHE" "$OUT"

if [ -z "${BANYAN_BIN:-}" ] || [ -z "${RTMP_LOAD_BIN:-}" ] || [ -z "${HLS_LOAD_BIN:-}" ]; then
    TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
    (cd "$ROOT" && cargo build --release -q -p banyan -p banyan-bench --bin banyan --bin rtmp-load \
        --bin hls-load)
    BANYAN_BIN=${BANYAN_BIN:-$TARGET/release/banyan}
    RTMP_LOAD_BIN=${RTMP_LOAD_BIN:-$TARGET/release/rtmp-load}
    HLS_LOAD_BIN=${HLS_LOAD_BIN:-$TARGET/release/hls-load}
fi

CLIP=$CACHE/soak-320x240.flv
if [ ! -s "$CLIP" ]; then
    ffmpeg -hide_banner -nostdin -loglevel error -y \
        -f lavfi -i testsrc2=size=320x240:rate=30 -f lavfi -i sine=frequency=440:sample_rate=44100 \
        -t 20 -c:v libx264 -preset ultrafast -tune zerolatency -g 30 -keyint_min 30 \
        -sc_threshold 0 -bf 0 -pix_fmt yuv420p -c:a aac -b:a 64k -f flv "$CLIP"
fi

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# The node, every port picked by itself.
DATA=$OUT/data
# shellcheck disable=SC2086
# Every viewer comes from 127.0.0.1: lift the per-address limit (64 by default).
kit_node_start "$DATA" $KIT_PORTS0 --max-connections-per-address 20000 || exit 1
NODE=$KIT_PID
PIDS+=("$NODE")
grep -m1 '"ready"' "$DATA.out" >"$OUT/ready.json"
API=$(jq -r .api "$OUT/ready.json")
METRICS_URL="http://$(jq -r .metrics "$OUT/ready.json")/metrics"
ACCOUNT=$(jq -r .accountId "$DATA/credentials.json")
TOKEN=$(jq -r .apiToken "$DATA/credentials.json")

new_input() {
    curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
        -d "{\"meta\":{\"name\":\"soak-$1\"},\"defaultCreator\":\"soak\"}" \
        "$API/client/v4/accounts/$ACCOUNT/stream/live_inputs" | jq -c .result
}
url() { jq -r ".$2.url + .$2.streamKey" <<<"$1"; }
srt_play() { jq -r '.srtPlayback.url + "?streamid=" + .srtPlayback.streamId + "&passphrase=" + .srtPlayback.passphrase' <<<"$1"; }

INPUTS=()
for i in $(seq "$STREAMS"); do INPUTS+=("$(new_input "$i")"); done
PROBE=$(new_input probe)

# Sampling every 10 s: seconds, RSS KiB, CPU % of one core, threads, open fds.
TCK=$(getconf CLK_TCK)
sampler() {
    local prev_t prev_c t c rss thr fds
    echo "seconds,rss_kib,cpu_pct,threads,fds" >"$OUT/samples.csv"
    prev_t=$(date +%s.%N)
    prev_c=$(awk '{print $14 + $15}' "/proc/$NODE/stat")
    local start=$prev_t
    while kill -0 "$NODE" 2>/dev/null; do
        sleep 10
        t=$(date +%s.%N)
        c=$(awk '{print $14 + $15}' "/proc/$NODE/stat" 2>/dev/null) || break
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$NODE/status")
        thr=$(awk '/^Threads:/ {print $2}' "/proc/$NODE/status")
        fds=$(ls "/proc/$NODE/fd" 2>/dev/null | wc -l)
        awk -v t="$t" -v s="$start" -v pt="$prev_t" -v c="$c" -v pc="$prev_c" -v k="$TCK" \
            -v r="$rss" -v th="$thr" -v f="$fds" \
            'BEGIN { printf "%d,%d,%.1f,%d,%d\n", t - s, r, 100 * (c - pc) / k / (t - pt), th, f }' \
            >>"$OUT/samples.csv"
        prev_t=$t
        prev_c=$c
    done
}
sampler &
PIDS+=("$!")

SOAK_S=$((SOAK_MINUTES * 60))
# Stream 1 and the RTMP viewers, for the whole soak.
"$RTMP_LOAD_BIN" --input "$CLIP" --publish "$(url "${INPUTS[0]}" rtmp)" \
    --play "$(url "${INPUTS[0]}" rtmpPlayback)" --players "$RTMP_VIEWERS" --ramp 50 \
    --warmup 2 --baseline 3 --measure $((SOAK_S - 30 - RTMP_VIEWERS / 50)) --server-pid "$NODE" --label soak \
    >"$OUT/rtmp-load.json" 2>"$OUT/rtmp-load.log" &
PIDS+=("$!")

# Streams 2..N by ffmpeg.
for i in $(seq 1 $((STREAMS - 1))); do
    ffmpeg -hide_banner -nostdin -loglevel error -re -stream_loop -1 -i "$CLIP" -c copy -f flv \
        "$(url "${INPUTS[$i]}" rtmp)" 2>>"$OUT/publishers.log" &
    PIDS+=("$!")
done
sleep 3

for v in $(seq 0 $((SRT_VIEWERS - 1))); do
    i=$((1 + v % (STREAMS - 1)))
    srt-live-transmit -q "$(srt_play "${INPUTS[$i]}")" file://con >/dev/null 2>>"$OUT/srt.log" &
    PIDS+=("$!")
done

# HLS viewers: one hls-load per stream, for the whole soak (they end 20 s before it).
HLS_STREAMS=$(( HLS_STREAMS < STREAMS - 1 ? HLS_STREAMS : STREAMS - 1 ))
for h in $(seq 1 "$HLS_STREAMS"); do
    n=$(( HLS_VIEWERS / HLS_STREAMS + (h <= HLS_VIEWERS % HLS_STREAMS ? 1 : 0) ))
    [ "$n" -gt 0 ] || continue
    "$HLS_LOAD_BIN" --url "$(jq -r .hls.url <<<"${INPUTS[$h]}")" --viewers "$n" --ramp 20 \
        --baseline 1 --measure $((SOAK_S - 30)) --label "hls-$h" \
        >"$OUT/hls-load-$h.json" 2>>"$OUT/hls-load.log" &
    PIDS+=("$!")
done

probe() {
    "$RTMP_LOAD_BIN" --input "$CLIP" --publish "$(url "$PROBE" rtmp)" \
        --play "$(url "$PROBE" rtmpPlayback)" --players 5 --warmup 2 --baseline 2 --measure 40 \
        --label "$1" >"$OUT/probe-$1.json" 2>>"$OUT/probe.log"
}
echo "soak: $STREAMS streams, $RTMP_VIEWERS RTMP + $SRT_VIEWERS SRT + $HLS_VIEWERS HLS viewers, $SOAK_MINUTES min; output in $OUT" >&2
probe first
sleep $((SOAK_S - 60 - 50 > 0 ? SOAK_S - 60 - 50 : 0))
METRICS=$(curl -sf "$METRICS_URL")
live=$(awk '/^banyan_viewers/ {s += $2} END {print s + 0}' <<<"$METRICS")
srt_live=$(awk '/^banyan_viewers\{.*protocol="srt"/ {s += $2} END {print s + 0}' <<<"$METRICS")
probe last
sleep 5
wait "${PIDS[2]}" 2>/dev/null || true # rtmp-load ends by itself about now
curl -sf "$METRICS_URL" >"$OUT/metrics-end.txt" || true
kill "$NODE" 2>/dev/null || true
sleep 2

echo
echo "samples: $OUT/samples.csv"
awk -F, -v last=$((SOAK_S - 70)) 'NR > 1 && $1 <= 60 { fr += $2; fc += $3; fn++ }
    NR > 1 && $1 >= last { lr += $2; lc += $3; ln++ }
    NR > 1 { if ($2 > peak) peak = $2 }
    END {
      if (fn == 0 || ln == 0) { print "not enough samples"; exit }
      printf "first minute: RSS %.1f MiB, CPU %.1f%%\n", fr / fn / 1024, fc / fn
      printf "last minute:  RSS %.1f MiB, CPU %.1f%%\n", lr / ln / 1024, lc / ln
      printf "peak RSS %.1f MiB\n", peak / 1024 }' "$OUT/samples.csv"
echo "viewers connected before the last probe (banyan_viewers): $live"
for p in first last; do
    jq -c "{probe: \"$p\", latency_ms: .latency_ms, loss: .loss}" "$OUT/probe-$p.json" 2>/dev/null \
        || echo "probe $p: no result (see $OUT/probe.log)"
done
jq -c '{rtmp_viewers: .players, latency_ms: .latency_ms, loss: .loss}' "$OUT/rtmp-load.json" 2>/dev/null \
    || echo "rtmp-load: no result (see $OUT/rtmp-load.log)"
for h in $(seq 1 "$HLS_STREAMS"); do
    jq -c '{hls: .label, viewers, requests_per_s, errors, media_per_viewer_s}' "$OUT/hls-load-$h.json" \
        2>/dev/null || echo "hls-load $h: no result (see $OUT/hls-load.log)"
done
echo "SRT viewers connected before the last probe: $srt_live of $SRT_VIEWERS"
echo "frames the node skipped for slow subscribers, by reason (metrics-end.txt):"
grep '^banyan_frames_dropped_total' "$OUT/metrics-end.txt" 2>/dev/null || echo "  none"
