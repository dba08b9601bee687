# Shared starters for bench scripts: source this file, then call start_nginx_rtmp DIR or
# start_banyan BIN DIR. Each sets SERVER_PID (the pid whose CPU time and memory count as the
# server's: nginx's one worker, Banyan's process) and the URLs of one live input:
# RTMP_PUBLISH, RTMP_PLAY (both servers), SRT_PUBLISH, SRT_PLAY, WHEP_PLAY (Banyan only; with
# the passphrases in the URL, so keep them off shared logs). Nothing here stops what it starts:
# the caller records SERVER_PID (and NGINX_MASTER) and stops them.
# Needs nginx + libnginx-mod-rtmp, jq, curl; Banyan nodes start through scripts/lib.sh.
# nginx-rtmp listens on 127.0.0.1:19350 (one worker: nginx-rtmp fans out per worker); Banyan
# on ports of its own choosing.

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

# nginx-rtmp with its own prefix and config, never the system service. With a second
# argument `hls`, it also writes HLS (1 s fragments, 6 s playlist) and serves it as static
# files on 127.0.0.1:19351 (HLS_PLAY).
start_nginx_rtmp() {
    local dir=$1 nice=${NICE:-0} hls="" hls_http=""
    if [ "${2:-}" = hls ]; then
        mkdir -p "$dir.hls"
        hls="hls on; hls_path $dir.hls/hls; hls_fragment 1s; hls_playlist_length 6s;"
        hls_http="types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
    server { listen 127.0.0.1:19351; location / { root $dir.hls; add_header Cache-Control no-cache; } }"
    fi
    rm -rf "$dir"
    mkdir -p "$dir/tmp"
    cat > "$dir/nginx.conf" <<CONF
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
        application live { live on; $hls }
    }
}
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    $hls_http
}
CONF
    nice -n "$nice" nginx -p "$dir" -c "$dir/nginx.conf" 2>>"$dir/error.log" &
    NGINX_MASTER=$!
    local i worker=""
    for i in $(seq 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/19350) 2>/dev/null; then break; fi
        kill -0 "$NGINX_MASTER" 2>/dev/null || { cat "$dir/error.log" >&2; return 1; }
        sleep 0.05
    done
    for i in $(seq 100); do
        worker=$(pgrep -P "$NGINX_MASTER" | head -1 || true)
        [ -n "$worker" ] && break
        sleep 0.05
    done
    [ -n "$worker" ] || { echo "nginx: no worker" >&2; return 1; }
    SERVER_PID=$worker
    RTMP_PUBLISH=rtmp://127.0.0.1:19350/live/bench
    RTMP_PLAY=rtmp://127.0.0.1:19350/live/bench
    SRT_PUBLISH=""
    SRT_PLAY=""
    HLS_PLAY=http://127.0.0.1:19351/hls/bench.m3u8
}

# The fMP4 HLS peer: ffmpeg's HLS muxer writes fMP4 segments of INPUT (1 s, six in the
# playlist, looped in real time) into the directory an nginx started by start_nginx_rtmp DIR hls
# serves, so that nginx serves Banyan's segment format as static files. Sets HLS_PLAY and
# SEGMENTER_PID (the caller stops it).
start_fmp4_segmenter() { # INPUT_FLV nginx-DIR
    mkdir -p "$2.hls/fmp4"
    HLS_PLAY=http://127.0.0.1:19351/fmp4/index.m3u8
    ffmpeg -hide_banner -nostdin -loglevel error -re -stream_loop -1 -i "$1" -c copy \
        -f hls -hls_segment_type fmp4 -hls_time 1 -hls_list_size 6 \
        -hls_flags delete_segments+temp_file "$2.hls/fmp4/index.m3u8" 2>>"$2.segmenter.err" &
    SEGMENTER_PID=$!
}

# The Banyan binaries of the --bin LABEL=PATH options (array BINS): with none given, one,
# `banyan` = TARGET/release/banyan, built first if missing.
default_bins() { # TARGET ROOT
    if [ ${#BINS[@]} -eq 0 ]; then
        [ -x "$1/release/banyan" ] || (cd "$2" && cargo build --release -q --bin banyan)
        BINS=("banyan=$1/release/banyan")
    fi
}
bin_of() { # label -> path
    local b
    for b in "${BINS[@]}"; do [ "${b%%=*}" = "$1" ] && { echo "${b#*=}"; return; }; done
    echo "no --bin named $1" >&2; return 1
}

# A fresh Banyan node (its own data dir) and one live input made through its API, started by
# the shell kit (scripts/lib.sh).
start_banyan() {
    local bin=$1 dir=$2
    rm -rf "$dir"
    mkdir -p "$dir"
    # Every client comes from 127.0.0.1: lift the per-address limit (64 by default).
    BANYAN_BIN=$bin KIT_NICE=${NICE:-0} kit_node_start "$dir/data" --rtmp 127.0.0.1:0 \
        --rtmps 127.0.0.1:0 --srt 127.0.0.1:0 --http 127.0.0.1:0 --metrics 127.0.0.1:0 \
        --webrtc 127.0.0.1:0 --max-connections-per-address 20000 || return 1
    SERVER_PID=$KIT_PID
    local rtmp srt
    rtmp=$(kit_json "$dir/data.out" rtmp)
    srt=$(kit_json "$dir/data.out" srt)
    BANYAN_HTTP=$(kit_json "$dir/data.out" http)
    kit_input "$dir/data" "$dir/input.json" '{"meta":{"name":"bench"}}' ||
        { kill "$SERVER_PID" 2>/dev/null; return 1; }
    local f="$dir/input.json"
    RTMP_PUBLISH=rtmp://$rtmp/live/$(kit_json "$f" result rtmp streamKey)
    RTMP_PLAY=rtmp://$rtmp/live/$(kit_json "$f" result rtmpPlayback streamKey)
    SRT_PUBLISH="srt://$srt?streamid=$(kit_json "$f" result srt streamId)&passphrase=$(kit_json "$f" result srt passphrase)"
    SRT_PLAY="srt://$srt?streamid=$(kit_json "$f" result srtPlayback streamId)&passphrase=$(kit_json "$f" result srtPlayback passphrase)"
    BANYAN_LIVE_ID=$(kit_json "$f" result uid)
    HLS_PLAY=http://$BANYAN_HTTP/$BANYAN_LIVE_ID/manifest/video.m3u8
    WHEP_PLAY=$(kit_json "$f" result webRTCPlayback url)
}

# "cpu_seconds rss_kib" of a pid from /proc.
cpu_rss() {
    local tck
    tck=$(getconf CLK_TCK)
    awk -v t="$tck" '{ printf "%.2f ", ($14 + $15) / t }' "/proc/$1/stat"
    awk '/^VmRSS/ { print $2 }' "/proc/$1/status"
}
