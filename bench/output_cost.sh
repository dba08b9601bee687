#!/usr/bin/env bash
# Cost of a simulcast output against a viewer of the same protocol (RTMP).
#
# One input (1280x720 30 fps H.264 ~3 Mbit/s, 1 s GOP, AAC; made once into bench/.cache/),
# published in a loop by ffmpeg. Three runs, each on a fresh node: the publisher alone; N
# outputs to one nginx-rtmp (distinct keys); N rtmpdump viewers. The node's CPU time
# (utime + stime from /proc) is read over MEASURE seconds; the extra CPU divided by N and by
# the minutes measured is the cost of one output-minute and of one viewer-minute.
#
# Usage: bench/output_cost.sh [N (default 10)] [MEASURE seconds (default 30)]
# BANYAN_BIN=PATH uses that binary instead of building target/release/banyan.
# Needs: ffmpeg, nginx + libnginx-mod-rtmp, rtmpdump, curl, jq.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"

CACHE=$KIT_ROOT/bench/.cache
N=${1:-10}
MEASURE=${2:-30}
mkdir -p "$CACHE"
BANYAN_BIN=$(kit_bin)
CLIP=$CACHE/output-cost-720p.flv
[ -s "$CLIP" ] || ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=30 \
  -f lavfi -i sine=frequency=440 -t 10 -c:v libx264 -preset veryfast -b:v 3M -g 30 -bf 0 \
  -c:a aac -f flv "$CLIP"

kit_on_exit output-cost
WORK=$KIT_WORK
PIDS=()

run() {
  local mode=$1 w=$WORK/$1
  mkdir -p "$w/nginx/logs"
  local nport; nport=$(kit_free_port)
  cat > "$w/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
worker_processes 1; daemon off; master_process off; pid $w/nginx/nginx.pid; error_log $w/nginx/error.log warn;
events { worker_connections 4096; }
rtmp { server { listen 127.0.0.1:$nport; chunk_size 4096; application live { live on; } } }
CONF
  local started=${#PIDS[@]}
  nginx -p "$w/nginx" -c "$w/nginx/nginx.conf" -e "$w/nginx/error.log" & PIDS+=($!)
  # shellcheck disable=SC2086
  kit_node_start "$w/data" $KIT_PORTS0 --outputs-allow-private
  PIDS+=("$KIT_PID")
  local node=$KIT_PID
  local api acc tok rtmp input uid key pkey
  api=$(kit_cred "$w/data" api); rtmp=$(kit_json "$w/data.out" rtmp)
  acc=$(kit_cred "$w/data" accountId); tok=$(kit_cred "$w/data" apiToken)
  local base=$api/client/v4/accounts/$acc/stream/live_inputs
  input=$(curl -sf -H "Authorization: Bearer $tok" -H 'content-type: application/json' -d '{}' "$base")
  uid=$(jq -r .result.uid <<<"$input"); key=$(jq -r .result.rtmp.streamKey <<<"$input")
  pkey=$(jq -r .result.rtmpPlayback.streamKey <<<"$input")
  if [ "$mode" = outputs ]; then
    for i in $(seq "$N"); do
      curl -sf -o /dev/null -H "Authorization: Bearer $tok" -H 'content-type: application/json' \
        -d "{\"url\":\"rtmp://127.0.0.1:$nport/live\",\"streamKey\":\"k$i\"}" "$base/$uid/outputs"
    done
  fi
  ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i "$CLIP" -c copy -f flv \
    "rtmp://$rtmp/live/$key" & PIDS+=($!)
  sleep 3
  if [ "$mode" = viewers ]; then
    for _ in $(seq "$N"); do rtmpdump -q -v -r "rtmp://$rtmp/live/$pkey" -o /dev/null & PIDS+=($!); done
  fi
  sleep 5
  local a b
  a=$(kit_ticks "$node"); sleep "$MEASURE"; b=$(kit_ticks "$node")
  local connected=""
  if [ "$mode" = outputs ]; then
    connected=" ($(curl -sf -H "Authorization: Bearer $tok" "$base/$uid/outputs" | jq '[.result[] | select(.status == "connected")] | length') connected)"
  fi
  echo "$mode $((b - a))$connected"
  for p in "${PIDS[@]:$started}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

hz=$(getconf CLK_TCK)
base=$(run none | awk '{print $2}')
out=$(run outputs); outputs=$(awk '{print $2}' <<<"$out")
viewers=$(run viewers | awk '{print $2}')
echo "| run | node CPU-s over ${MEASURE} s | per output- or viewer-minute |"
echo "|---|---|---|"
echo "| publisher alone | $(echo "scale=2; $base/$hz" | bc) | |"
echo "| $N outputs to nginx-rtmp ${out#* * } | $(echo "scale=2; $outputs/$hz" | bc) | $(echo "scale=4; ($outputs-$base)/$hz/$N*60/$MEASURE" | bc) CPU-s |"
echo "| $N RTMP viewers | $(echo "scale=2; $viewers/$hz" | bc) | $(echo "scale=4; ($viewers-$base)/$hz/$N*60/$MEASURE" | bc) CPU-s |"
