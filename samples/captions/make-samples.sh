#!/bin/sh
# Makes the captioned sample media: 20 s of H.264 (320x240, 30 fps, 1 s GOP,
# no B-frames) + AAC, with CEA-608 pop-on captions on CC1 (field 1, English)
# and CC3 (field 2, Spanish) and a CEA-708 service 1 (English), as FLV and
# MPEG-TS, plus the expected caption texts.
#
#   samples/captions/make-samples.sh [OUTDIR]     (default: beside this script)
#
# Outputs: captioned.flv, captioned.ts, expected-cc1.txt, expected-cc3.txt,
# expected-service1.txt. An expected file holds one block per caption:
# "START --> END" in seconds from the first video frame, the caption rows,
# and a blank line. Deterministic: the same inputs give the same bytes.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${1:-$HERE}
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM

FF="ffmpeg -hide_banner -nostdin -loglevel error -y"

# 1. Plain H.264, Annex B, with access unit delimiters.
$FF -f lavfi -i "testsrc=size=320x240:rate=30:duration=20" \
    -c:v libx264 -preset ultrafast -tune zerolatency -g 30 -bf 0 -crf 30 \
    -pix_fmt yuv420p -threads 1 -x264-params aud=1 -bitexact \
    -f h264 "$TMP/plain.h264"

# 2. Captions into SEI.
(cd "$ROOT" && cargo run -q -p banyan-captions --example inject-captions -- \
    "$TMP/plain.h264" "$TMP/captioned.h264" "$HERE/script.txt" 30)

# 3. Mux with AAC.
for fmt in flv ts; do
    case $fmt in flv) muxer=flv ;; ts) muxer=mpegts ;; esac
    $FF -framerate 30 -f h264 -i "$TMP/captioned.h264" \
        -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=20" \
        -map 0:v -map 1:a -c:v copy -c:a aac -b:a 48k -ac 1 \
        -fflags +bitexact -flags:a +bitexact -bitexact -shortest \
        -f $muxer "$OUT/captioned.$fmt"
done

# 4. Expected texts, straight from the script.
for ch in CC1 CC3 SERVICE1; do
    lower=$(echo "$ch" | tr 'A-Z' 'a-z')
    awk -v ch="$ch" '
        $1 == ch {
            text = $0
            for (i = 1; i <= 4; i++) sub(/^[^ ]+ +/, "", text)
            gsub(/\|/, "\n", text)
            printf "%.3f --> %.3f\n%s\n\n", $2, $3, text
        }' "$HERE/script.txt" > "$OUT/expected-$lower.txt"
done
ls -l "$OUT"/captioned.* "$OUT"/expected-*.txt
