#!/usr/bin/env bash
# The visionclassify demo: set up, build, and classify a real video frame by frame.
#
#   scripts/demo.sh [--video FILE | --rtsp URL | --uri URI] [--model FILE] [--broker URI]
#                   [--frames N] [PROPERTY=VALUE ...]
#
#   --video FILE     video to classify (or VIDEO=FILE); default: a short video encoded with
#                    GStreamer from the photos that scripts/setup.sh fetches
#   --rtsp URL       an RTSP camera instead (or RTSP=URL), rtsp://[user:pass@]host[:port]/path
#   --uri URI        any source uridecodebin reads instead (or URI=...): file://, rtsp://, http://
#   --frames N       stop after N frames (or FRAMES=N); a camera does not end by itself
#   --model FILE     ONNX classifier (or MODEL=FILE); default: the ImageNet EfficientNet-Lite0
#                    that `vision-trainer import` writes to models/efficientnet-lite0.onnx
#                    from the packaged weights (made on the first run)
#   --broker URI     MQTT broker for the events (or BROKER=URI), e.g. mqtt://10.0.0.5:1883;
#                    default: a local mosquitto started for the demo on a free loopback port
#   PROPERTY=VALUE   more visionclassify properties, e.g. batch-size=4 top-k=3
#
# visionpublish sends every frame's result as a JSON event to the broker; the demo subscribes
# to vision/demo/classifications and prints each event it receives (timestamp, frame, label,
# confidence), then a summary (frames, inference time, fps, labels seen with counts).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

VIDEO="${VIDEO:-}"
URI="${URI:-${RTSP:-}}"
FRAMES="${FRAMES:-}"
BROKER="${BROKER:-}"
MODEL="${MODEL:-}"
PROPS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --video) VIDEO="${2:?--video needs a file}"; shift 2 ;;
    --rtsp|--uri) URI="${2:?$1 needs a URL}"; shift 2 ;;
    --frames) FRAMES="${2:?--frames needs a number}"; shift 2 ;;
    --model) MODEL="${2:?--model needs a file}"; shift 2 ;;
    --broker) BROKER="${2:?--broker needs a URI}"; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *=*) PROPS+=("$1"); shift ;;
    *) echo "demo: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
# Paths are the caller's; the rest runs from the repository root.
abspath() { case "$1" in /*|"") printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
VIDEO="$(abspath "$VIDEO")"
[ -z "$MODEL" ] || MODEL="$(abspath "$MODEL")"
cd "$ROOT"

scripts/setup.sh
echo "[demo] building the plugin and the demo (release)"
cargo build --release --quiet -p gst-plugin-vision
cargo build --release --quiet -p vision-e2e --bin vision-demo
if [ -z "$MODEL" ]; then
  MODEL="$ROOT/models/efficientnet-lite0.onnx"
  if [ ! -s "$MODEL" ]; then
    echo "[demo] importing the pretrained EfficientNet-Lite0 (ImageNet) as $MODEL"
    cargo build --release --quiet -p vision-trainer
    "${CARGO_TARGET_DIR:-$ROOT/target}/release/vision-trainer" import --out "$MODEL"
  fi
fi

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
export GST_PLUGIN_PATH="$TARGET/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
# The plugin finds .deps/onnxruntime next to target/ by itself; this also covers a
# CARGO_TARGET_DIR elsewhere.
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ROOT/.deps/onnxruntime/lib/libonnxruntime.so}"

if [ -z "$BROKER" ]; then
  # A private broker for the demo, on a free loopback port, gone when the demo ends.
  PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  CONF="$(mktemp)"
  printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$PORT" > "$CONF"
  [ "$(id -u)" -ne 0 ] || printf 'user root\n' >> "$CONF"
  mosquitto -c "$CONF" >/dev/null 2>&1 &
  MOSQUITTO_PID=$!
  trap 'kill $MOSQUITTO_PID 2>/dev/null; rm -f "$CONF"' EXIT
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
  done
  BROKER="mqtt://127.0.0.1:$PORT"
  echo "[demo] started mosquitto on $BROKER"
fi

ARGS=(--model "$MODEL" --broker "$BROKER")
if [ -n "$URI" ]; then
  ARGS+=(--uri "$URI")
elif [ -n "$VIDEO" ]; then
  ARGS+=(--video "$VIDEO")
fi
[ -z "$FRAMES" ] || ARGS+=(--frames "$FRAMES")
"$TARGET/release/vision-demo" "${ARGS[@]}" "${PROPS[@]}"
