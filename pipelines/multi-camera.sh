#!/usr/bin/env bash
# Classify several cameras (RTSP URLs, video files, any URI) at once, in one process; print one
# bus message per classified frame, from the element named after its camera: cam0, cam1, ...
#
#   pipelines/multi-camera.sh [--model FILE] [--broker URI] [--private-engines]
#                             SOURCE [SOURCE ...] [PROPERTY=VALUE ...]
#
#   SOURCE             rtsp://camera/stream, a video file, or any URI uridecodebin reads
#   --model FILE       ONNX classifier (default: tests/data/color3.onnx)
#   --broker URI       also publish each camera's results with visionpublish to this MQTT
#                      broker, sensor-id camN, topic vision/camN/classifications
#   --private-engines  one ONNX Runtime session per camera (the old behaviour) instead of one
#                      engine shared by all cameras
#   PROPERTY=VALUE     more visionclassify properties, the same for every camera (batch-size and
#                      batch-timeout belong to the shared engine), e.g. batch-size=<cameras>
#   THREADS=T          environment: ONNX Runtime threads per session (default 1)
#   FRAMES=N           environment: stop each camera after N frames (default: until it ends)
#   RTSP_PROTOCOLS=P   environment: rtspsrc transports for rtsp:// sources (default tcp: no
#                      frame lost to dropped UDP packets)
#
# One visionclassify per camera, all with model-instance-id=multi-camera: one shared engine
# (one session, one inference thread) whose batches take frames of every camera (with
# batch-size=<cameras>, mostly one frame of each); each camera's results stay on its own
# element and pad, and a slow camera never holds up another (see pipelines/README.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
MODEL="$ROOT/tests/data/color3.onnx"
BROKER=""
PRIVATE=0
SOURCES=()
PROPS=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage ;;
    --model) MODEL="${2:?--model needs a file}"; shift 2 ;;
    --broker) BROKER="${2:?--broker needs a URI}"; shift 2 ;;
    --private-engines) PRIVATE=1; shift ;;
    *://*) SOURCES+=("$1"); shift ;;
    *=*) PROPS+=("$1"); shift ;;
    *)
      [ -e "$1" ] || { echo "multi-camera: no such file '$1'" >&2; exit 2; }
      SOURCES+=("file://$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"); shift ;;
  esac
done
[ "${#SOURCES[@]}" -gt 0 ] || usage
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$ROOT/target/release}"

ENGINE=(model-instance-id=multi-camera)
[ "$PRIVATE" = 0 ] || ENGINE=()
PIPELINE=()
for i in "${!SOURCES[@]}"; do
  case "${SOURCES[$i]}" in
    # RTP over the RTSP connection (TCP): a loaded gateway or network drops UDP packets, and
    # with them whole frames (RTSP_PROTOCOLS=udp+tcp etc. to choose).
    rtsp://*|rtsps://*)
      PIPELINE+=(rtspsrc location="${SOURCES[$i]}" protocols="${RTSP_PROTOCOLS:-tcp}" latency=200 ! decodebin !) ;;
    *) PIPELINE+=(uridecodebin uri="${SOURCES[$i]}" !) ;;
  esac
  # eos-after=K ends at the K-th buffer: N + 1 lets N frames through.
  [ -z "${FRAMES:-}" ] || PIPELINE+=(identity eos-after="$((FRAMES + 1))" !)
  PIPELINE+=(videoconvert ! visionclassify name="cam$i" model="$MODEL" threads="${THREADS:-1}"
             "${ENGINE[@]}" post-messages=true "${PROPS[@]}" !)
  [ -z "$BROKER" ] || PIPELINE+=(visionpublish broker="$BROKER" sensor-id="cam$i" !)
  PIPELINE+=(fakesink)
done

if [ "$PRIVATE" = 0 ]; then ENGINES="one shared engine"; else ENGINES="one engine per camera"; fi
echo "multi-camera: ${#SOURCES[@]} cameras, model $MODEL, $ENGINES"
# A camera's password stays out of the output: rtsp://user:pass@cam/... is shown as rtsp://***@cam/...
for i in "${!SOURCES[@]}"; do
  echo "  cam$i  $(printf '%s' "${SOURCES[$i]}" | sed -E 's|([A-Za-z][A-Za-z0-9+.-]*://)[^/?#[:space:]]*@|\1***@|g')"
done
set +e
gst-launch-1.0 -m -e "${PIPELINE[@]}" \
  | grep --line-buffered -E '\(element\): visionclassify|^Got EOS|^Execution ended'
status=${PIPESTATUS[0]}
set -e
exit "$status"
