#!/usr/bin/env bash
# HLS benchmarks (issue 5): Banyan's LL-HLS side by side with nginx-rtmp's HLS, one run, one
# publisher feeding both servers at once (ffmpeg's tee muxer, RTMP to each).
#
# 1. Glass-to-glass: the publisher is `clock-frames gen` (320x240 25 fps frames showing the
#    wall clock in ms when made) -> ffmpeg (x264 ultrafast zerolatency, GOP 25 = 1 s, no
#    B-frames, video only) -> RTMP to Banyan and to nginx-rtmp. Headless Chromium opens Banyan's
#    watch page twice, over LL-HLS (`?player=hls`: hls.js, low-latency mode) and over WebRTC
#    (the page as shipped: WHEP), and a page of this script's own that
#    plays nginx-rtmp's HLS (1 s fragments, 6 s playlist) with hls.js's defaults, both at the
#    same time; bench/hls_g2g.mjs reads the clock of every presented frame: frame made ->
#    frame presented in the page.
# 2. Load: the RTMP benchmark's 720p30 2.6 Mbit/s input (looped) to both servers; for each N,
#    `hls-load` (bench/src/bin/hls-load.rs, one process) runs N viewers against Banyan in
#    LL-HLS fashion (blocking playlist reload per part, then the part), N plain-HLS pollers
#    (whole segments, `--plain`) against a second Banyan node and the same against nginx (each
#    case on a server of its own, fed by the same publisher); server CPU (s per viewer-minute
#    above the publisher-only baseline) and RSS from /proc.
#
# Usage: bench/hls_bench.sh [--viewers "100 500"] [--measure 20] [--g2g-seconds 20]
#                           [--skip-g2g] [--skip-load] [--no-build]
# BANYAN_BIN=PATH uses that banyan binary. Results: stdout and bench/.cache/hls-<time>.md.
# Needs ffmpeg, nginx + libnginx-mod-rtmp, node + web/node_modules, chromium, jq, curl.
# 127.0.0.1 only: nginx on 19360 (RTMP) / 19361 (HTTP), Banyan on free ports.
set -euo pipefail
. "$(dirname "$0")/lib/servers.sh"

ROOT=$KIT_ROOT
CACHE=$ROOT/bench/.cache
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VIEWERS="100 500"
MEASURE=20
G2G_SECONDS=20
DO_G2G=1
DO_LOAD=1
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --viewers) VIEWERS=$2; shift 2 ;;
        --measure) MEASURE=$2; shift 2 ;;
        --g2g-seconds) G2G_SECONDS=$2; shift 2 ;;
        --skip-g2g) DO_G2G=0; shift ;;
        --skip-load) DO_LOAD=0; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

mkdir -p "$CACHE"
WORK=$(mktemp -d /tmp/banyan-hls-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
PUB_PID=""

stop_pid() {
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
stop_publisher() {
    [ -n "$PUB_PID" ] || return 0
    pkill -TERM -P "$PUB_PID" 2>/dev/null || true
    stop_pid "$PUB_PID"
    PUB_PID=""
}
cleanup() {
    stop_publisher
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[hls_bench] $*" >&2; }

if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release -q -p banyan-bench --bin clock-frames --bin hls-load)
    [ -n "${BANYAN_BIN:-}" ] || (cd "$ROOT" && cargo build --release -q --bin banyan)
fi
CLOCK=$TARGET/release/clock-frames
LOAD=$TARGET/release/hls-load
BANYAN=${BANYAN_BIN:-$TARGET/release/banyan}

# --- servers (both up for the whole run) ----------------------------------------------------
N=$WORK/nginx
mkdir -p "$N/www/hls" "$N/tmp"
cp "$ROOT/web/vendor/hls.min.js" "$N/www/"
cat > "$N/www/play.html" <<'EOF'
<!doctype html><html><body>
<video id="video" muted autoplay playsinline></video>
<script src="hls.min.js"></script>
<script>
  const hls = new Hls();
  window.hls = hls;
  hls.loadSource('hls/bench.m3u8');
  hls.attachMedia(document.getElementById('video'));
  hls.on(Hls.Events.MANIFEST_PARSED, () => document.getElementById('video').play());
</script>
</body></html>
EOF
cat > "$N/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
worker_processes 1;
daemon off;
pid $N/nginx.pid;
error_log $N/error.log warn;
events { worker_connections 16384; }
rtmp {
    server {
        listen 127.0.0.1:19360;
        chunk_size 4096;
        application live {
            live on;
            hls on;
            hls_path $N/www/hls;
            hls_fragment 1s;
            hls_playlist_length 6s;
        }
    }
}
http {
    access_log off;
    client_body_temp_path $N/tmp/body;
    proxy_temp_path $N/tmp/proxy;
    fastcgi_temp_path $N/tmp/fastcgi;
    uwsgi_temp_path $N/tmp/uwsgi;
    scgi_temp_path $N/tmp/scgi;
    types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; text/html html; application/javascript js; }
    server {
        listen 127.0.0.1:19361;
        location / { root $N/www; add_header Cache-Control no-cache; }
    }
}
EOF
nginx -p "$N" -c "$N/nginx.conf" 2>>"$N/error.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
for i in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/19360) 2>/dev/null && break
    kill -0 "$NGINX_PID" 2>/dev/null || { cat "$N/error.log" >&2; exit 1; }
    sleep 0.05
done
NGINX_PIDS="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"

# Two Banyan nodes, each measured alone: one for LL-HLS viewers, one for plain polling (a
# node's heap, once grown by one case, would hide the next case's memory).
banyan_case() { # NAME: a node of its own (bench/lib/servers.sh); sets ${NAME}_PID, _PUBLISH, _HLS, _WATCH
    start_banyan "$BANYAN" "$WORK/$1" || exit 1
    PIDS+=("$SERVER_PID")
    printf -v "${1}_PID" '%s' "$SERVER_PID"
    printf -v "${1}_PUBLISH" '%s' "$RTMP_PUBLISH"
    printf -v "${1}_HLS" '%s' "http://$BANYAN_HTTP/$BANYAN_LIVE_ID/manifest/video.m3u8"
    printf -v "${1}_WATCH" '%s' "http://$BANYAN_HTTP/$BANYAN_LIVE_ID/watch"
}
banyan_case B
banyan_case BP
BANYAN_PID=$B_PID
N_PUBLISH=rtmp://127.0.0.1:19360/live/bench
N_HLS=http://127.0.0.1:19361/hls/bench.m3u8
N_PAGE=http://127.0.0.1:19361/play.html
TEE="[f=flv:onfail=ignore]$B_PUBLISH|[f=flv:onfail=ignore]$BP_PUBLISH|[f=flv:onfail=ignore]$N_PUBLISH"

wait_live() { # until both servers serve a playlist
    local i
    for i in $(seq 150); do
        if curl -sf "$N_HLS" | grep -q EXTINF && curl -sf "$B_HLS" | grep -q EXT-X-STREAM-INF &&
            curl -sf "$BP_HLS" | grep -q EXT-X-STREAM-INF; then return 0; fi
        sleep 0.2
    done
    log "a server has no playlist after 30 s"
    return 1
}

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$CACHE/hls-$STAMP.md
: > "$OUT"

# --- 1. glass-to-glass ----------------------------------------------------------------------
if [ "$DO_G2G" = 1 ]; then
    log "glass-to-glass: publisher up"
    ( "$CLOCK" gen --fps 25 --seconds $(( G2G_SECONDS + 60 )) | \
        ffmpeg -hide_banner -nostdin -loglevel error -f rawvideo -pix_fmt gray -s 320x240 \
            -framerate 25 -i - -map 0:v -c:v libx264 -preset ultrafast -tune zerolatency -g 25 \
            -bf 0 -pix_fmt yuv420p -flags +global_header -f tee "$TEE" ) \
        2>"$WORK/g2g-pub.err" &
    PUB_PID=$!
    wait_live
    log "glass-to-glass: two pages in Chromium for $G2G_SECONDS s"
    node "$ROOT/bench/hls_g2g.mjs" --seconds "$G2G_SECONDS" --skip 8 \
        "banyan=$B_WATCH?player=hls" "banyan-webrtc=$B_WATCH" "nginx-rtmp=$N_PAGE" \
        > "$WORK/g2g.jsonl" || log "hls_g2g.mjs failed"
    stop_publisher
    cat "$WORK/g2g.jsonl" >&2
    {
        echo "Glass-to-glass through hls.js in headless Chromium (frame made -> frame presented), load average $(cut -d' ' -f1-3 /proc/loadavg):"
        echo
        echo "| page | frames | undecodable | p50 (ms) | p95 (ms) | min / max (ms) | hls.js latency p50 (s) |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        jq -r '"| \(.label) | \(.frames) | \(.undecodable) | \(.p50_ms) | \(.p95_ms) | \(.min_ms) / \(.max_ms) | \(.hlsjs_latency_s_p50) |"' "$WORK/g2g.jsonl"
        echo
    } >> "$OUT"
    sleep 2
fi

# --- 2. load --------------------------------------------------------------------------------
if [ "$DO_LOAD" = 1 ]; then
    INPUT=$CACHE/input-720p30-2500k-90s.flv
    if [ ! -s "$INPUT" ]; then
        log "making $INPUT"
        ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=30 \
            -f lavfi -i sine=frequency=440:sample_rate=48000 -t 90 \
            -c:v libx264 -preset veryfast -tune zerolatency -profile:v high -pix_fmt yuv420p \
            -g 30 -keyint_min 30 -sc_threshold 0 -bf 0 -b:v 2500k -maxrate 2500k -bufsize 1250k \
            -c:a aac -b:a 128k -ar 48000 -ac 2 -f flv "$INPUT.tmp"
        mv "$INPUT.tmp" "$INPUT"
    fi
    ffmpeg -hide_banner -nostdin -loglevel error -re -stream_loop -1 -i "$INPUT" -map 0 -c copy \
        -f tee "$TEE" 2>"$WORK/load-pub.err" &
    PUB_PID=$!
    sleep 3
    wait_live
    L=$WORK/load.jsonl
    : > "$L"
    for n in $VIEWERS; do
        log "load: banyan LL-HLS, $n viewers"
        "$LOAD" --url "$B_HLS" --viewers "$n" --ramp 100 --baseline 5 --measure "$MEASURE" \
            --server-pid "$BANYAN_PID" --label banyan >> "$L" || log "hls-load failed (banyan, $n)"
        sleep 2
        log "load: banyan plain HLS (whole segments, as against nginx), $n viewers"
        "$LOAD" --url "$BP_HLS" --viewers "$n" --ramp 100 --baseline 5 --measure "$MEASURE" \
            --server-pid "$BP_PID" --label banyan-plain --plain >> "$L" ||
            log "hls-load failed (banyan plain, $n)"
        sleep 2
        log "load: nginx-rtmp plain HLS, $n viewers"
        pid_args=()
        for p in $NGINX_PIDS; do pid_args+=(--server-pid "$p"); done
        "$LOAD" --url "$N_HLS" --viewers "$n" --ramp 100 --baseline 5 --measure "$MEASURE" \
            "${pid_args[@]}" --label nginx-rtmp >> "$L" || log "hls-load failed (nginx, $n)"
        sleep 2
    done
    stop_publisher
    cat "$L" >&2
    {
        echo "HLS viewers (720p30 2.6 Mbit/s; banyan: LL-HLS blocking reloads + parts; banyan-plain and nginx-rtmp: plain HLS polling, whole segments):"
        echo
        echo "| viewers | server | CPU s / viewer-min | server CPU (cores; publisher alone) | RSS (MiB; per viewer KiB) | requests/s | Mbit/s | media objects / viewer-s | errors | load tool (cores) | machine busy (load 1m) |"
        echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        jq -r '"| \(.viewers) | \(.label) | \(.server.cpu_s_per_viewer_min) | \(.server.cores) (\(.server.baseline_cores)) | \(.server.rss_kib / 1024 | floor) (\(.server.rss_kib_per_viewer)) | \(.requests_per_s) | \(.mbit_per_s) | \(.media_per_viewer_s) | \(.errors) | \(.client.cores) | \(.machine_busy_share * 100 | round)% (\(.loadavg_1m)) |"' "$L"
        echo
    } >> "$OUT"
fi

cat "$OUT"
log "table: $OUT"
