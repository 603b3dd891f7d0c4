#!/usr/bin/env bash
# Classify a live RTSP camera (H.264, H.265, MJPEG, VP8 ... whatever its RTP payload is);
# print one bus message per classified frame, as classify-file.sh does.
#
#   pipelines/rtsp-camera.sh URL [MODEL] [PROPERTY=VALUE ...]
#
#   URL              rtsp://[user:password@]host[:port]/path of the camera
#   MODEL            ONNX classifier with vision.* metadata (default: tests/data/color3.onnx)
#   PROPERTY=VALUE   more visionclassify properties, e.g. inference-interval=5 top-k=3
#   LATENCY=MS       environment: rtspsrc jitter buffer in ms (default 200)
#   PROTOCOLS=...    environment: RTP transport, tcp (default: through firewalls, no loss) or udp
#   FRAMES=N         environment: stop after N frames (default: run until the camera ends or Ctrl-C)
#   SINK=...         environment: the sink (default fakesink; SINK=autovideosink to watch)
#
# H.264 needs a decoder: avdec_h264 (Debian gstreamer1.0-libav; scripts/setup.sh installs it).
# The plugin is taken from GST_PLUGIN_PATH, else from target/release.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
URL="$1"
shift
case "$URL" in
  rtsp://*|rtsps://*|rtspt://*) ;;
  *) echo "rtsp-camera: '$URL' is not an rtsp:// URL" >&2; exit 2 ;;
esac
MODEL="$ROOT/tests/data/color3.onnx"
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then
  MODEL="$1"
  shift
fi
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$ROOT/target/release}"
read -r -a SINK_ARGS <<<"${SINK:-fakesink}"
# identity eos-after=K ends the stream at its K-th buffer, so K = N + 1 lets N frames through
# (a camera never ends by itself).
LIMIT=()
if [ -n "${FRAMES:-}" ]; then
  LIMIT=(identity eos-after="$((FRAMES + 1))" !)
fi

# rtspsrc negotiates the session and gives RTP; decodebin picks the depayloader, parser and
# decoder for what the camera sends. -m prints the classifications; -e turns Ctrl-C into EOS.
set +e
gst-launch-1.0 -m -e \
  rtspsrc location="$URL" latency="${LATENCY:-200}" protocols="${PROTOCOLS:-tcp}" \
  ! decodebin ! "${LIMIT[@]}" videoconvert \
  ! visionclassify model="$MODEL" post-messages=true "$@" \
  ! videoconvert ! "${SINK_ARGS[@]}" \
  | grep --line-buffered -E '\(element\): visionclassify|^Got EOS|^Execution ended|^ERROR|^WARNING'
status=${PIPESTATUS[0]}
set -e
exit "$status"
