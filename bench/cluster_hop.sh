#!/usr/bin/env bash
# CPU of one relayed stream on one relay hop (issue 8, Benchmarks).
# A three-node chain (samples/cluster/up.sh --fanout 1): the stream is published
# to a; a player on b makes b join under a; a player on c is redirected under b;
# then b's player leaves, so b is a pure relay hop (link in, link out, no local
# viewer). b's CPU over the window, minus b's idle CPU, is the cost of one
# relayed stream on one hop.
#   BANYAN_BIN=target/release/banyan bench/cluster_hop.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
input=bench/.cache/input-720p30-2500k-90s.flv
[ -f "$input" ] || { echo "make the input first: bench/rtmp_fanout.sh (it caches $input)" >&2; exit 2; }
tmp=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
samples/cluster/up.sh --fanout 1 > "$tmp/up.jsonl" 2> "$tmp/up.log" & pids+=($!)
for _ in $(seq 1 120); do [ "$(wc -l < "$tmp/up.jsonl")" -ge 3 ] && break; sleep 0.5; done
[ "$(wc -l < "$tmp/up.jsonl")" -ge 3 ] || { echo "cluster did not start" >&2; cat "$tmp/up.log" >&2; exit 1; }
field() { python3 -c "import json,sys; [print(json.loads(l)['$2']) for l in open('$tmp/up.jsonl') if json.loads(l)['node']=='$1']"; }
cred=$(field a credentials); api=$(field a http)
acc=$(python3 -c "import json;print(json.load(open('$cred'))['accountId'])")
tok=$(python3 -c "import json;print(json.load(open('$cred'))['apiToken'])")
printf 'header = "Authorization: Bearer %s"\n' "$tok" > "$tmp/curl.cfg"
curl -s -K "$tmp/curl.cfg" -X POST -d '{}' "$api/client/v4/accounts/$acc/stream/live_inputs" > "$tmp/in.json"
key=$(python3 -c "import json;print(json.load(open('$tmp/in.json'))['result']['rtmp']['streamKey'])")
play=$(python3 -c "import json;print(json.load(open('$tmp/in.json'))['result']['rtmpPlayback']['streamKey'])")
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
pid_b=$(field b pid)
hz=$(getconf CLK_TCK)
# Idle b, for the baseline.
c0=$(cpu "$pid_b"); sleep 10; c1=$(cpu "$pid_b")
idle=$(python3 -c "print(($c1-$c0)/$hz/10)")
ffmpeg -nostdin -loglevel error -re -stream_loop -1 -i "$input" -c copy -f flv "rtmp://127.0.0.1:1945/live/$key" & pids+=($!)
sleep 3
ffmpeg -nostdin -loglevel error -i "rtmp://127.0.0.1:1947/live/$play" -c copy -f null - & pb=$!; pids+=($pb)
sleep 4
ffmpeg -nostdin -loglevel error -i "rtmp://127.0.0.1:1949/live/$play" -c copy -f null - & pids+=($!)
sleep 4
kill "$pb"; sleep 3
curl -s -H "Authorization: Bearer $(python3 -c "import json;print(json.load(open('$cred'))['adminToken'])")" \
  "$api/cluster/streams/$(python3 -c "import json;print(json.load(open('$tmp/in.json'))['result']['uid'])")" > "$tmp/tree.json"
c0=$(cpu "$pid_b"); sleep "$secs"; c1=$(cpu "$pid_b")
busy=$(python3 -c "print(($c1-$c0)/$hz/$secs)")
python3 - "$tmp/tree.json" "$idle" "$busy" "$secs" <<'PY'
import json, sys
tree = json.load(open(sys.argv[1])); idle = float(sys.argv[2]); busy = float(sys.argv[3])
print(json.dumps({"edges": tree.get("edges"), "b_idle_cores": round(idle, 4),
                  "b_relaying_cores": round(busy, 4),
                  "cpu_s_per_relayed_stream_minute": round((busy - idle) * 60, 3),
                  "window_s": int(sys.argv[4])}))
PY
