. scripts/lib.sh
kit_on_exit dbg
export BANYAN_BIN=$PWD/target/debug/banyan
kit_node_start "$KIT_WORK/n" $KIT_PORTS0
kit_input "$KIT_WORK/n" "$KIT_WORK/in.json"
uid=$(kit_json "$KIT_WORK/in.json" result uid)
key=$(kit_json "$KIT_WORK/in.json" result rtmp streamKey)
http=$(kit_json "$KIT_WORK/n.out" http)
rtmp=$(kit_json "$KIT_WORK/n.out" rtmp)
ffmpeg -hide_banner -loglevel error -re -f lavfi -i sine=frequency=440:sample_rate=44100 -t 8 -c:a aac -f flv "rtmp://$rtmp/live/$key" &
sleep 3
curl -s "http://$http/$uid/manifest/video.m3u8"
timeout 10 ffmpeg -hide_banner -loglevel warning -i "http://$http/$uid/manifest/video.m3u8" -c copy -f framemd5 - 2>&1 | grep -vc "^#"
wait
tail -5 "$KIT_WORK/n.log"
