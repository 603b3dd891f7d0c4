#!/usr/bin/env bash
# Classify every image of a folder as fast as the machine allows (offline batch inference),
# write one JSON line per image, and print the throughput; then, for comparison, the same
# images at batch size 1, the setting for a live stream (lowest latency per frame).
#
#   pipelines/batch-folder.sh DIR [MODEL] [PROPERTY=VALUE ...]
#
#   DIR              folder of PNG or JPEG images (one kind per run), read in name order
#   MODEL            ONNX classifier with vision.* metadata (default: tests/data/color3.onnx)
#   PROPERTY=VALUE   more visionclassify properties, e.g. top-k=5 threads=2
#   OUT=FILE         environment: the JSON lines (default: classifications.jsonl here)
#   BATCH=B          environment: batch size of the throughput run (default 8)
#   BATCH_TIMEOUT=MS environment: its batch-timeout (default 0: a batch goes as soon as the
#                    worker is free, so batches fill only while inference is the bottleneck)
#   COMPARE=0        environment: skip the batch-size-1 run
#   SIZE=WxH         environment: scale every image to WxH first (images of different sizes
#                    renegotiate caps, which ends the batch being filled)
#
# Pipeline: multifilesrc ! pngdec|jpegdec ! videoconvert ! visionclassify batch-size=B
# batch-timeout=0 post-messages=true ! fakesink sync=false; pipelines/lib/messages_to_jsonl.py
# turns the messages into the JSON lines. The plugin is taken from GST_PLUGIN_PATH, else
# from target/release.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
DIR="$1"
shift
[ -d "$DIR" ] || { echo "batch-folder: '$DIR' is not a folder" >&2; exit 2; }
MODEL="$ROOT/tests/data/color3.onnx"
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then
  MODEL="$1"
  shift
fi
OUT="${OUT:-classifications.jsonl}"
BATCH="${BATCH:-8}"
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$ROOT/target/release}"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# multifilesrc reads numbered names: link the images as 000000.png, 000001.png, ... and keep
# their real names, in the same order, for the JSON lines.
find "$DIR" -maxdepth 1 -type f \( -iname '*.png' -o -iname '*.jpg' -o -iname '*.jpeg' \) \
  -printf '%f\n' | LC_ALL=C sort > "$WORK/names"
COUNT="$(wc -l < "$WORK/names")"
[ "$COUNT" -gt 0 ] || { echo "batch-folder: no PNG or JPEG images in $DIR" >&2; exit 2; }
PNGS="$(grep -ci '\.png$' "$WORK/names" || true)"
if [ "$PNGS" -eq "$COUNT" ]; then
  EXT=png CAPS=image/png DECODER=pngdec
elif [ "$PNGS" -eq 0 ]; then
  EXT=jpg CAPS=image/jpeg DECODER=jpegdec
else
  echo "batch-folder: $DIR mixes PNG and JPEG images; run once per kind (one decoder per run)" >&2
  exit 2
fi
mkdir "$WORK/seq"
n=0
while IFS= read -r name; do
  ln -s "$(cd "$DIR" && pwd)/$name" "$WORK/seq/$(printf '%06d' "$n").$EXT"
  n=$((n + 1))
done < "$WORK/names"
SCALE=()
if [ -n "${SIZE:-}" ]; then
  SCALE=(videoscale ! "video/x-raw,width=${SIZE%x*},height=${SIZE#*x}" !)
fi

# One run: prints "frames N seconds S" (PLAYING to EOS, model loading excluded).
classify() { # batch-size batch-timeout out
  gst-launch-1.0 -m \
    multifilesrc location="$WORK/seq/%06d.$EXT" index=0 stop-index=$((COUNT - 1)) \
      caps="$CAPS,framerate=30/1" \
    ! "$DECODER" ! videoconvert ! "${SCALE[@]}" \
    visionclassify model="$MODEL" batch-size="$1" batch-timeout="$2" post-messages=true "${@:4}" \
    ! fakesink sync=false async=false \
  | python3 "$ROOT/pipelines/lib/messages_to_jsonl.py" --names "$WORK/names" --out "$3"
  return "${PIPESTATUS[0]}"
}

report() { # label "frames N seconds S"
  read -r _ frames _ seconds <<<"$2"
  if [ "$frames" -ne "$COUNT" ]; then
    echo "batch-folder: $frames of $COUNT images were classified" >&2
    exit 1
  fi
  python3 -c 'import sys; n, s = int(sys.argv[2]), float(sys.argv[3]); print(f"{sys.argv[1]}: {n} images in {s:.3f} s = {n / s:.1f} images/s")' \
    "$1" "$frames" "$seconds"
}

echo "batch-folder: $COUNT images from $DIR, model $MODEL"
fast="$(classify "$BATCH" "${BATCH_TIMEOUT:-0}" "$OUT" "$@")"
report "batch-size=$BATCH batch-timeout=${BATCH_TIMEOUT:-0}" "$fast"
echo "batch-folder: results in $OUT"
if [ "${COMPARE:-1}" != 0 ]; then
  one="$(classify 1 0 "$WORK/batch1.jsonl" "$@")"
  report "batch-size=1 (live setting)   " "$one"
fi
