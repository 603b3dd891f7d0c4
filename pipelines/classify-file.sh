#!/usr/bin/env bash
# Classify every frame of a video file with an ONNX model; print one bus message per
# classified frame (see pipelines/README.md for the fields).
#
#   pipelines/classify-file.sh VIDEO [MODEL] [PROPERTY=VALUE ...]
#
#   VIDEO            any file decodebin can read (WebM, MP4, MKV, ...)
#   MODEL            ONNX classifier with vision.* metadata (default: tests/data/color3.onnx)
#   PROPERTY=VALUE   more visionclassify properties, e.g. batch-size=8 inference-interval=2
#   SINK=...         environment: the sink (default fakesink; e.g. SINK=autovideosink to watch)
#
# The plugin is taken from GST_PLUGIN_PATH, else from target/release
# (cargo build --release -p gst-plugin-vision).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
VIDEO="$1"
shift
MODEL="$ROOT/tests/data/color3.onnx"
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then
  MODEL="$1"
  shift
fi
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$ROOT/target/release}"
read -r -a SINK_ARGS <<<"${SINK:-fakesink}"

# -m prints every bus message; keep the classifications and the end of the stream.
set +e
gst-launch-1.0 -m \
  filesrc location="$VIDEO" ! decodebin ! videoconvert \
  ! visionclassify model="$MODEL" post-messages=true "$@" \
  ! videoconvert ! "${SINK_ARGS[@]}" \
  | grep --line-buffered -E '\(element\): visionclassify|^Got EOS|^Execution ended'
status=${PIPESTATUS[0]}
set -e
exit "$status"
