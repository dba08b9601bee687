# Shared starters for bench scripts: source this file, then call start_nginx_rtmp DIR or
# start_banyan BIN DIR. Each sets SERVER_PID (the pid whose CPU time and memory count as the
# server's: nginx's one worker, Banyan's process) and the URLs of one live input:
# RTMP_PUBLISH, RTMP_PLAY (both servers), SRT_PUBLISH, SRT_PLAY (Banyan only; with the
# passphrases in the URL, so keep them off shared logs). Nothing here stops what it starts:
# the caller records SERVER_PID (and NGINX_MASTER) and stops them.
# Needs nginx + libnginx-mod-rtmp, jq, curl. nginx-rtmp listens on 127.0.0.1:19350 (one
# worker: nginx-rtmp fans out per worker); Banyan on ports of its own choosing.

# nginx-rtmp with its own prefix and config, never the system service.
start_nginx_rtmp() {
    local dir=$1 nice=${NICE:-0}
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
        application live { live on; }
    }
}
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
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
}

# A fresh Banyan node (its own data dir) and one live input made through its API.
start_banyan() {
    local bin=$1 dir=$2 nice=${NICE:-0}
    rm -rf "$dir"
    mkdir -p "$dir"
    # Every client comes from 127.0.0.1: lift the per-address limit (64 by default).
    RUST_LOG=warn nice -n "$nice" "$bin" serve --data-dir "$dir/data" --rtmp 127.0.0.1:0 \
        --rtmps 127.0.0.1:0 --srt 127.0.0.1:0 --http 127.0.0.1:0 --metrics 127.0.0.1:0 \
        --max-connections-per-address 20000 > "$dir/stdout" 2> "$dir/stderr" &
    SERVER_PID=$!
    local i ready=""
    for i in $(seq 200); do
        ready=$(grep -m1 '"ready"' "$dir/stdout" 2>/dev/null || true)
        [ -n "$ready" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$dir/stderr" >&2; return 1; }
        sleep 0.05
    done
    [ -n "$ready" ] || { echo "banyan did not print its ready line" >&2; return 1; }
    local rtmp srt creds api account input
    rtmp=$(jq -r '.rtmp' <<<"$ready")
    srt=$(jq -r '.srt' <<<"$ready")
    BANYAN_HTTP=$(jq -r '.http' <<<"$ready")
    creds=$(jq -r '.credentials' <<<"$ready")
    api=$(jq -r '.api' "$creds")
    account=$(jq -r '.accountId' "$creds")
    # The token goes through a file, never on a command line.
    printf 'header = "Authorization: Bearer %s"\n' "$(jq -r '.apiToken' "$creds")" > "$dir/curl.cfg"
    input=$(curl -sf -K "$dir/curl.cfg" -H 'Content-Type: application/json' \
        -d '{"meta":{"name":"bench"}}' "$api/client/v4/accounts/$account/stream/live_inputs")
    RTMP_PUBLISH=rtmp://$rtmp/live/$(jq -r '.result.rtmp.streamKey' <<<"$input")
    RTMP_PLAY=rtmp://$rtmp/live/$(jq -r '.result.rtmpPlayback.streamKey' <<<"$input")
    SRT_PUBLISH="srt://$srt?streamid=$(jq -r '.result.srt.streamId' <<<"$input")&passphrase=$(jq -r '.result.srt.passphrase' <<<"$input")"
    SRT_PLAY="srt://$srt?streamid=$(jq -r '.result.srtPlayback.streamId' <<<"$input")&passphrase=$(jq -r '.result.srtPlayback.passphrase' <<<"$input")"
    BANYAN_LIVE_ID=$(jq -r '.result.uid' <<<"$input")
}

# "cpu_seconds rss_kib" of a pid from /proc.
cpu_rss() {
    local tck
    tck=$(getconf CLK_TCK)
    awk -v t="$tck" '{ printf "%.2f ", ($14 + $15) / t }' "/proc/$1/stat"
    awk '/^VmRSS/ { print $2 }' "/proc/$1/status"
}
