#!/usr/bin/env bash
# Cost per viewer with real client processes, side by side in one run: nginx-rtmp and Banyan
# for RTMP viewers (one `rtmpdump` process each), Banyan for SRT viewers (one
# `srt-live-transmit` process each), Banyan for WHEP viewers (case LABEL-whep: one peer
# connection each, all in one headless Chromium page, bench/whep_load.mjs; they receive but
# do not decode; the once-per-stream AAC to Opus transcoder counts with them), and any number
# of Banyan binaries (e.g. before and after a change) in the same run.
#
# One input (the RTMP benchmark's 720p30 ~2.6 Mbit/s, 1 s GOP, AAC; FLV for RTMP, MPEG-TS for
# SRT, made once in bench/.cache/), looped in real time by ffmpeg. For each case the server is
# started fresh; the server's CPU time and RSS come from /proc: with the publisher alone (the
# ingest baseline, over --baseline seconds, 10 by default) and with N viewers over --hold seconds after a short ramp. Per
# viewer: CPU-s per viewer-minute net of ingest = (server CPU rate with viewers - rate alone)
# * 60 / N, and RSS per viewer = (RSS with viewers - RSS alone) / N, each RSS the mean of a
# sample a second over its window (the node's RSS swings by a few MiB as segments come and go
# and free pages are handed back, so one sample at the end moved a viewer's figure by ±3-5
# KiB), N the viewers still connected at the end. The viewers' received
# bytes (`wchar` of each client: they write to /dev/null) show they were fed; their own CPU
# is reported too (on one machine, clients compete with the server for the same cores), and so
# are the server's socket writes per viewer per second (write, writev, sendto and sendmsg
# counted by `perf stat` on their syscall tracepoints; "-" without perf) and its share of time
# in the kernel. Case LABEL-hls (and nginx-hls: nginx-rtmp's HLS served as static files by
# nginx) plays HLS with one ffmpeg process per viewer (playlist reloads and whole segments,
# remuxed without decoding). Case nginx-hlsfmp4 is the same with fMP4 segments, the format
# Banyan serves: ffmpeg's HLS muxer writes them (1 s segments, 6 in the playlist) into the
# directory nginx serves, so nginx's cost is that of serving static files of Banyan's format
# to ffmpeg's reader (which fetches the init section again before each segment and then
# opens a new connection for the segment, a pattern it has with fMP4 only). Case LABEL-rtmpload (and nginx-rtmpload) replaces the rtmpdump processes by the
# project's own load tool (bench/src/bin/rtmp-load.rs: one process publishes and reads every
# player), to set its figures beside the real clients'.
#
# Usage: bench/viewer_cost.sh [--viewers 100] [--hold 20] [--bin LABEL=PATH ...]
#                             [--cases "nginx-rtmp LABEL-rtmp LABEL-srt LABEL-whep LABEL-rtmpload
#                                       nginx-rtmpload nginx-hls nginx-hlsfmp4 LABEL-hls ..."]
#                             [--nice N] [--rounds N] [--baseline 10]
# --rounds N runs the whole list of cases N times, alternating (a fresh server for every run),
# lists every run, and sets each case's mean, lowest and highest beside the others: on this
# shared machine one run of a case spreads by 15-25 %, more than most changes measured.
# --baseline N: seconds of the publisher alone, the ingest figure subtracted from every run
# (10 by default; /proc counts CPU in 10 ms ticks, so a short baseline is itself noisy).
# Default: one binary, `banyan` = $CARGO_TARGET_DIR/release/banyan (built if missing), and
# the cases nginx-rtmp, banyan-rtmp, banyan-srt. Results: stdout and
# bench/.cache/viewer-cost-<time>.md. Needs ffmpeg, nginx + libnginx-mod-rtmp, rtmpdump,
# srt-live-transmit, jq, curl. Everything it starts is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=$ROOT/bench/.cache
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VIEWERS=100
HOLD=20
NICE=0
ROUNDS=1
BASELINE=10
BINS=()
CASES=""
while [ $# -gt 0 ]; do
    case "$1" in
        --viewers) VIEWERS=$2; shift 2 ;;
        --hold) HOLD=$2; shift 2 ;;
        --bin) BINS+=("$2"); shift 2 ;;
        --cases) CASES=$2; shift 2 ;;
        --nice) NICE=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --baseline) BASELINE=$2; shift 2 ;;
        -h|--help) sed -n '2,44p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
export NICE
# shellcheck source=bench/lib/servers.sh
. "$ROOT/bench/lib/servers.sh"
default_bins "$TARGET" "$ROOT"
if [ -z "$CASES" ]; then
    CASES="nginx-rtmp"
    for b in "${BINS[@]}"; do CASES="$CASES ${b%%=*}-rtmp ${b%%=*}-srt"; done
fi

mkdir -p "$CACHE"
WORK=$(mktemp -d /tmp/banyan-viewer-cost.XXXXXX)
chmod 755 "$WORK" # nginx's worker (another user) writes and serves HLS under it
PIDS=()
stop_all() {
    local p i
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for i in $(seq 30); do
        local any=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && any=1; done
        [ "$any" = 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    PIDS=()
}
cleanup() { stop_all; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[viewer_cost] $*" >&2; }

INPUT_FLV=$CACHE/input-720p30-2500k-90s.flv
INPUT_TS=$CACHE/input-720p30-2500k-90s.ts
if [ ! -s "$INPUT_FLV" ]; then
    log "making $INPUT_FLV"
    ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=30 \
        -f lavfi -i sine=frequency=440:sample_rate=48000 -t 90 \
        -c:v libx264 -preset veryfast -tune zerolatency -profile:v high -pix_fmt yuv420p \
        -g 30 -keyint_min 30 -sc_threshold 0 -bf 0 -b:v 2500k -maxrate 2500k -bufsize 1250k \
        -c:a aac -b:a 128k -ar 48000 -ac 2 -f flv "$INPUT_FLV.tmp"
    mv "$INPUT_FLV.tmp" "$INPUT_FLV"
fi
if [ ! -s "$INPUT_TS" ]; then
    ffmpeg -hide_banner -loglevel error -y -i "$INPUT_FLV" -c copy \
        -bsf:v h264_mp4toannexb,dump_extra=freq=keyframe -f mpegts "$INPUT_TS.tmp"
    mv "$INPUT_TS.tmp" "$INPUT_TS"
fi

now() { date +%s.%N; }
# Sum of wchar and of CPU seconds of the given pids (dead ones count 0).
clients() {
    local p w=0 c=0 tck
    tck=$(getconf CLK_TCK)
    for p in "$@"; do
        [ -r "/proc/$p/io" ] || continue
        w=$((w + $(awk '/^wchar/ {print $2}' "/proc/$p/io" 2>/dev/null || echo 0)))
        c=$(awk -v c="$c" -v t="$tck" '{ printf "%.2f", c + ($14 + $15) / t }' "/proc/$p/stat" 2>/dev/null || echo "$c")
    done
    echo "$w $c"
}

# "user_ticks kernel_ticks 0" of a pid: the server's share of time in the kernel.
sys_io() {
    awk '{ printf "%d %d 0\n", $14, $15 }' "/proc/$1/stat"
}
# The server's socket writes (write, writev, sendto, sendmsg: each one wakes a player) over
# the next SECONDS, counted by perf's syscall tracepoints; -1 where perf cannot count them.
sends_start() { # pid seconds
    local ev=syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto
    ev=$ev,syscalls:sys_enter_sendmsg
    SENDS_PID=""
    echo "-1" > "$WORK/sends"
    if command -v perf >/dev/null && perf stat -e syscalls:sys_enter_sendto -- true >/dev/null 2>&1; then
        perf stat -x, -e "$ev" -p "$1" -o "$WORK/sends" -- sleep "$2" >/dev/null 2>&1 &
        SENDS_PID=$!
    fi
}
sends_total() { # sets SENDS (not in a subshell: it waits for its own child)
    [ -z "$SENDS_PID" ] || wait "$SENDS_PID" || true
    SENDS=$(awk -F, '$1 == "-1" { print -1; exit } /syscalls/ { s += $1 } END { print s + 0 }' \
        "$WORK/sends" | head -1)
}
# One result line: case n alive base_cores cores cpu_vmin rss_kib mbps client_vmin
# writes_per_viewer_s kernel_pct load, from the samples (see the header).
result() { # case n alive c0 c1 c2 c3 t0 t1 t2 t3 r1 r3 w2 w3 k2 k3 u2 s2 x2 u3 s3 x3
    echo "$@ $(cut -d' ' -f1 /proc/loadavg)" | awk '{
        base = ($5 - $4) / ($9 - $8); cores = ($7 - $6) / ($11 - $10); a = ($3 > 0 ? $3 : 1);
        busy = ($21 - $18) + ($22 - $19);
        printf "%s %d %d %.4f %.4f %.4f %.1f %.2f %.4f %.1f %.0f %s\n", $1, $2, $3, base, cores,
            (cores - base) * 60 / a, ($13 - $12) / a, ($15 - $14) * 8 / ($11 - $10) / a / 1e6,
            ($17 - $16) / ($11 - $10) * 60 / a, ($23 < 0 ? -1 : ($23 - $20) / ($11 - $10) / a),
            (busy > 0 ? ($22 - $19) * 100 / busy : 0), $24
    }' >> "$RAW"
}
# The mean RSS (KiB) of PID over SECONDS, sampled once a second.
mean_rss() { # pid seconds
    local sum=0 i v
    for i in $(seq "$2"); do
        sleep 1
        v=$(awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0)
        sum=$((sum + ${v:-0}))
    done
    echo $((sum / $2))
}
# Samples the server over SECONDS of viewers: sets c2 t2 u2 s2 x2 before and c3 t3 u3 s3
# x3 after (CPU, time, user and kernel ticks, socket writes counted in between), and r3, the
# mean RSS over the window.
hold() { # seconds
    read -r c2 _ < <(cpu_rss "$SERVER_PID"); t2=$(now)
    read -r u2 s2 x2 < <(sys_io "$SERVER_PID")
    sends_start "$SERVER_PID" "$1"
    r3=$(mean_rss "$SERVER_PID" "$1")
    read -r c3 _ < <(cpu_rss "$SERVER_PID"); t3=$(now)
    read -r u3 s3 x3 < <(sys_io "$SERVER_PID")
    sends_total
    x3=$SENDS
}
LOAD_BIN=$TARGET/release/rtmp-load
case " $CASES " in
    *-rtmpload" "*) [ -x "$LOAD_BIN" ] || (cd "$ROOT" && cargo build --release -q -p banyan-bench --bin rtmp-load) ;;
esac

RAW=$WORK/raw.txt
: > "$RAW"
RUNS=
for _round in $(seq "$ROUNDS"); do RUNS="$RUNS $CASES"; done
for case in $RUNS; do
    label=${case%-*}
    proto=${case##*-}
    log "$case: $VIEWERS viewers, hold $HOLD s"
    if [ "$label" = nginx ]; then
        start_nginx_rtmp "$WORK/nginx" "$(case $proto in hls*) echo hls ;; esac)"
        PIDS+=("$NGINX_MASTER")
    else
        start_banyan "$(bin_of "$label")" "$WORK/$label"
        PIDS+=("$SERVER_PID")
    fi
    if [ "$proto" = rtmpload ]; then
        # The project's own load tool: one process publishes and reads every player (over
        # --hold s once all have joined); it samples the server itself.
        "$LOAD_BIN" --input "$INPUT_FLV" --publish "$RTMP_PUBLISH" --play "$RTMP_PLAY" \
            --players "$VIEWERS" --ramp 50 --warmup 3 --baseline "$BASELINE" --measure "$HOLD" \
            --label "$case" --server-pid "$SERVER_PID" >"$WORK/load.json" 2>"$WORK/load.err" &
        lp=$!
        PIDS+=("$lp")
        for i in $(seq 1200); do
            grep -q measuring "$WORK/load.err" 2>/dev/null && break
            kill -0 "$lp" 2>/dev/null || break
            sleep 0.1
        done
        hold "$((HOLD - 1))"
        wait "$lp" || log "rtmp-load failed: $(tail -3 "$WORK/load.err")"
        # CPU and RSS per viewer as rtmp-load measured them (its windows); the kernel share
        # and writes from the script's own samples inside its measure window.
        jq -r --arg k "$(awk -v u="$((u3 - u2))" -v s="$((s3 - s2))" 'BEGIN { printf "%.0f", (u + s > 0 ? s * 100 / (u + s) : 0) }')" \
            --arg w "$(awk -v x="$x3" -v t="$(awk -v a="$t3" -v b="$t2" 'BEGIN { print a - b }')" -v n="$VIEWERS" 'BEGIN { printf "%.1f", (x < 0 ? -1 : x / t / n) }')" \
            --arg l "$(cut -d' ' -f1 /proc/loadavg)" \
            '"\(.label) \(.players) \(.players_ok) \(.server.base_cpu_cores) \(.server.measure_cpu_cores) \(.server.cpu_s_per_viewer_min) \(.server.rss_kib_per_player) - \(.client.cpu_cores * 60 / ([.players_ok, 1] | max)) \($w) \($k) \($l)"' \
            "$WORK/load.json" >> "$RAW"
        stop_all
        sleep 1
        continue
    fi
    if [ "$proto" = hlsfmp4 ]; then
        # The publisher is the segmenter: it writes fMP4 HLS where nginx serves it.
        start_fmp4_segmenter "$INPUT_FLV" "$WORK/nginx"
        PIDS+=("$SEGMENTER_PID")
    elif [ "$proto" = rtmp ] || [ "$proto" = whep ] || [ "$proto" = hls ]; then
        ffmpeg -hide_banner -nostdin -loglevel error -re -stream_loop -1 -i "$INPUT_FLV" -c copy \
            -f flv "$RTMP_PUBLISH" 2>"$WORK/pub.err" &
        PIDS+=("$!")
    else
        ffmpeg -hide_banner -nostdin -loglevel error -re -stream_loop -1 -i "$INPUT_TS" -c copy \
            -f mpegts "$SRT_PUBLISH&latency=120000" 2>"$WORK/pub.err" &
        PIDS+=("$!")
    fi
    sleep 3
    if [ "$proto" = hls ] || [ "$proto" = hlsfmp4 ]; then # until a playlist has media
        for i in $(seq 150); do
            curl -sf "$HLS_PLAY" | grep -q 'EXTINF\|STREAM-INF' && break
            sleep 0.2
        done
        sleep 2
    fi
    read -r c0 _ < <(cpu_rss "$SERVER_PID"); t0=$(now)
    r1=$(mean_rss "$SERVER_PID" "$BASELINE")
    read -r c1 _ < <(cpu_rss "$SERVER_PID"); t1=$(now)
    VP=()
    if [ "$proto" = whep ]; then
        node "$ROOT/bench/whep_load.mjs" "$WHEP_PLAY" --viewers "$VIEWERS" --hold "$HOLD" \
            >"$WORK/whep.out" 2>>"$WORK/play.err" &
        PIDS+=("$!")
        wp=$!
        for i in $(seq 600); do
            grep -q '"phase":"connected"' "$WORK/whep.out" 2>/dev/null && break
            kill -0 "$wp" 2>/dev/null || break
            sleep 0.1
        done
        hold "$HOLD"
        for i in $(seq 300); do
            grep -q '"phase":"done"' "$WORK/whep.out" 2>/dev/null && break
            sleep 0.1
        done
        alive=$(jq -r 'select(.phase == "done") | .alive' "$WORK/whep.out" | tail -1)
        bytes=$(jq -r 'select(.phase == "done") | .bytes' "$WORK/whep.out" | tail -1)
        result "$case" "$VIEWERS" "${alive:-0}" "$c0" "$c1" "$c2" "$c3" "$t0" "$t1" "$t2" "$t3" "$r1" "$r3" \
            0 "${bytes:-0}" 0 0 "$u2" "$s2" "$x2" "$u3" "$s3" "$x3"
        stop_all
        sleep 1
        continue
    fi
    for i in $(seq "$VIEWERS"); do
        if [ "$proto" = rtmp ]; then
            rtmpdump -q -v -m 15 -r "$RTMP_PLAY" -o /dev/null 2>>"$WORK/play.err" &
        elif [ "$proto" = hls ] || [ "$proto" = hlsfmp4 ]; then
            # ffmpeg's HLS reader: playlist reloads and whole segments over kept-alive
            # connections, remuxed without decoding to /dev/null.
            ffmpeg -hide_banner -nostdin -loglevel error -i "$HLS_PLAY" -map 0 -c copy \
                -f mpegts -y /dev/null 2>>"$WORK/play.err" &
        else
            srt-live-transmit -q "$SRT_PLAY&latency=120" file://con </dev/null >/dev/null \
                2>>"$WORK/play.err" &
        fi
        VP+=("$!")
        PIDS+=("$!")
        sleep 0.02
    done
    sleep 3
    read -r w2 k2 < <(clients "${VP[@]}")
    hold "$HOLD"
    read -r w3 k3 < <(clients "${VP[@]}")
    alive=0
    for p in "${VP[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
    result "$case" "$VIEWERS" "$alive" "$c0" "$c1" "$c2" "$c3" "$t0" "$t1" "$t2" "$t3" "$r1" "$r3" \
        "$w2" "$w3" "$k2" "$k3" "$u2" "$s2" "$x2" "$u3" "$s3" "$x3"
    stop_all
    sleep 1
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$CACHE/viewer-cost-$STAMP.md
{
    echo "Cost per viewer, real clients, $VIEWERS viewers, ${HOLD} s hold, $(nproc) cores (shared), $(date -u +%FT%TZ):"
    echo
    echo "| case | viewers alive | server CPU alone (cores) | with viewers (cores) | CPU-s / viewer-min | RSS / viewer (KiB) | Mbit/s per viewer | client CPU-s / viewer-min | server writes / viewer / s | server time in kernel | load 1m |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk '{ printf "| %s | %d / %d | %.4f | %.4f | %.4f | %.1f | %s | %.4f | %s | %d %% | %s |\n",
        $1, $3, $2, $4, $5, $6, $7, $8, $9, ($10 < 0 ? "-" : sprintf("%.1f", $10)), $11, $12 }' "$RAW"
    echo
    if [ "$ROUNDS" -gt 1 ]; then
        echo "Over $ROUNDS rounds (mean, lowest-highest):"
        echo
        echo "| case | runs | CPU-s / viewer-min | RSS / viewer (KiB) | load 1m |"
        echo "|---|---:|---:|---:|---:|"
        awk '{ if (!($1 in n)) order[++k] = $1; n[$1]++; c[$1] += $6; r[$1] += $7; l[$1] += $12;
               first = n[$1] == 1; # figures are net of ingest: they may be below 0
               if (first || $6 < lo[$1]) lo[$1] = $6; if (first || $6 > hi[$1]) hi[$1] = $6;
               if (first || $7 < rlo[$1]) rlo[$1] = $7; if (first || $7 > rhi[$1]) rhi[$1] = $7 } END {
            for (i = 1; i <= k; i++) { x = order[i];
                printf "| %s | %d | %.4f (%.4f-%.4f) | %.1f (%.1f-%.1f) | %.1f |\n", x, n[x],
                    c[x] / n[x], lo[x], hi[x], r[x] / n[x], rlo[x], rhi[x], l[x] / n[x] } }' "$RAW"
        echo
    fi
    echo "Ratios (CPU per viewer-minute, RSS per viewer$([ "$ROUNDS" -gt 1 ] && echo ", of the means")):"
    echo
    awk '{ if (!($1 in runs)) order[++k] = $1; runs[$1]++; sc[$1] += $6; sr[$1] += $7 } END {
        for (x in runs) { cpu[x] = sc[x] / runs[x]; rss[x] = sr[x] / runs[x] }
        for (i = 1; i <= k; i++) {
            c = order[i]; n = split(c, p, "-"); proto = p[n]; label = substr(c, 1, length(c) - length(proto) - 1);
            ref = "";
            if (proto == "rtmp" && label != "nginx") ref = "nginx-rtmp";
            if (proto == "rtmpload" && label != "nginx") ref = "nginx-rtmpload";
            if (proto == "whep" || proto == "srt") ref = label "-rtmp";
            if (proto == "hls" && label != "nginx") ref = "nginx-hls";
            if (proto == "hls" && label != "nginx" && ("nginx-hlsfmp4" in cpu) && cpu["nginx-hlsfmp4"] > 0 && rss["nginx-hlsfmp4"] > 0)
                printf "- %s / nginx-hlsfmp4: CPU %.2fx, RSS %.2fx\n", c, cpu[c] / cpu["nginx-hlsfmp4"], rss[c] / rss["nginx-hlsfmp4"];
            if (ref != "" && (ref in cpu) && cpu[ref] > 0 && rss[ref] > 0)
                printf "- %s / %s: CPU %.2fx, RSS %.2fx\n", c, ref, cpu[c] / cpu[ref], rss[c] / rss[ref];
        }
    }' "$RAW"
} > "$OUT"
cat "$OUT"
log "table: $OUT"
