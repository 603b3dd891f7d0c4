#!/usr/bin/env bash
# Watch the classification: the label and confidence of each frame drawn on the video itself
# (top-left corner), for people looking at a screen; or written as PNG frames.
#
#   pipelines/overlay.sh SOURCE [MODEL] [PROPERTY=VALUE ...]
#
#   SOURCE           a video file, rtsp://camera/stream, or any URI uridecodebin reads
#   MODEL            ONNX classifier with vision.* metadata (default: tests/data/color3.onnx)
#   PROPERTY=VALUE   more visionclassify properties, e.g. top-k=3 (runners-up on more lines)
#   PNG_DIR=DIR      environment: write DIR/frame-00000.png ... instead of opening a window
#   FRAMES=N         environment: stop after N frames
#   SINK=...         environment: the video sink (default autovideosink)
#
# Runs vision-overlay (tests/src/bin/vision-overlay.rs; built here on first use): uridecodebin !
# visionclassify ! textoverlay ! sink, with a pad probe that sets textoverlay's text from the
# classification metadata of the very buffer about to be drawn. The plugin is taken from
# GST_PLUGIN_PATH, else from target/release.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
SOURCE="$1"
shift
ARGS=("$SOURCE")
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then
  ARGS+=(--model "$1")
  shift
fi
[ -z "${PNG_DIR:-}" ] || ARGS+=(--png-dir "$PNG_DIR")
[ -z "${FRAMES:-}" ] || ARGS+=(--frames "$FRAMES")
[ -z "${SINK:-}" ] || ARGS+=(--sink "$SINK")
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$ROOT/target/release}"

BIN="${VISION_OVERLAY:-}"
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --quiet -p vision-e2e --bin vision-overlay)
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/vision-overlay"
fi
exec "$BIN" "${ARGS[@]}" "$@"
