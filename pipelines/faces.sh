#!/usr/bin/env bash
# A real detector, then a classifier on each region it found: GStreamer's facedetect (OpenCV
# Haar cascade) finds faces, visionclassify target=roi classifies each face region with its own
# model, and (with BROKER) visionpublish sends each frame's objects with their boxes over MQTT.
#
#   pipelines/faces.sh [SOURCE] [MODEL] [PROPERTY=VALUE ...]
#
#   SOURCE           a photo (PNG/JPEG, shown for FRAMES frames) or a video file / URI
#                    (default: scikit-image's astronaut.png from .deps/data/photos)
#   MODEL            region classifier (default: runs/face-or-not/model.onnx, trained by
#                    vision-trainer train --config models/recipes/face-or-not.toml
#                    --out runs/face-or-not)
#   PROPERTY=VALUE   more visionclassify properties, e.g. roi-padding=0.1 min-roi-size=40
#   BROKER=URL       environment: publish events to this MQTT broker (e.g. mqtt://127.0.0.1:1883)
#   SENSOR=ID        environment: the events' sensor id (default faces)
#   FRAMES=N         environment: frames made from a photo (default 30)
#   SINK=...         environment: the video sink (default fakesink; SINK=autovideosink shows
#                    facedetect's drawing of each face)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
SOURCE="$ROOT/.deps/data/photos/astronaut.png"
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then
  SOURCE="$1"
  shift
fi
MODEL="$ROOT/runs/face-or-not/model.onnx"
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then
  MODEL="$1"
  shift
fi
if [ ! -f "$MODEL" ]; then
  echo "faces.sh: no model at $MODEL; train it with:" >&2
  echo "  vision-trainer train --config models/recipes/face-or-not.toml --out runs/face-or-not" >&2
  exit 1
fi
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$ROOT/target/release}"
read -r -a SINK_ARGS <<<"${SINK:-fakesink}"
DISPLAY_BOXES=false
[ "${SINK:-fakesink}" = fakesink ] || DISPLAY_BOXES=true

case "$SOURCE" in
  *.png | *.PNG | *.jpg | *.jpeg | *.JPG | *.JPEG)
    SRC=(filesrc location="$SOURCE" ! decodebin ! videoconvert
      ! imagefreeze num-buffers="${FRAMES:-30}" ! video/x-raw,framerate=25/1) ;;
  rtsp://* | rtsps://*) SRC=(rtspsrc location="$SOURCE" protocols=tcp latency=200 ! decodebin) ;;
  *://*) SRC=(uridecodebin uri="$SOURCE") ;;
  *) SRC=(filesrc location="$SOURCE" ! decodebin) ;;
esac
PUBLISH=()
if [ -n "${BROKER:-}" ]; then
  PUBLISH=(! visionpublish broker="$BROKER" sensor-id="${SENSOR:-faces}" mode=all
    health-interval=0)
fi

# -m prints every bus message; keep the region classifications and the end of the stream.
# facedetect's OpenCV prints errors for the optional nose/mouth/eye cascades it cannot find:
# they are not used here (updates=every_frame, face profile only).
set +e
gst-launch-1.0 -m "${SRC[@]}" ! videoconvert \
  ! facedetect display="$DISPLAY_BOXES" updates=every_frame \
  ! videoconvert \
  ! visionclassify target=roi object-class=face model="$MODEL" post-messages=true "$@" \
  "${PUBLISH[@]}" \
  ! videoconvert ! "${SINK_ARGS[@]}" 2> >(grep -v "persistence.cpp" >&2) \
  | grep --line-buffered -E '\(element\): visionclassify|^Got EOS|^Execution ended'
status=${PIPESTATUS[0]}
set -e
exit "$status"
