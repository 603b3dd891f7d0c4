#!/usr/bin/env bash
# The field loop of a deployed classifier: capture doubtful frames from a camera, retrain
# from them once a person has checked their labels, and swap the new model into the running
# pipeline without stopping it (see pipelines/README.md, "drift-loop.sh").
#
#   pipelines/drift-loop.sh run SOURCE MODEL CAPTURE_DIR [PROPERTY=VALUE ...]
#       runs the camera: SOURCE (a video file or a URI: rtsp://, file://, http://) through
#       visionclassify model=MODEL watch-model=true with capture on into CAPTURE_DIR
#       (defaults capture-below=0.6 capture-every=300); prints each model switch and ends
#       with the stream (a camera: Ctrl-C). Replacing MODEL's file reloads it.
#   pipelines/drift-loop.sh retrain RUN_DIR CAPTURE_DIR OUT_DIR [TRAINER FLAGS ...]
#       vision-trainer train (or transfer for an EfficientNet run) --from RUN_DIR with
#       CAPTURE_DIR as --extra-data and the class-balanced sampler; writes OUT_DIR/model.onnx
#       only if it beats RUN_DIR's model on the same held-out frames (OUT_DIR/retrain.json).
#       Give the base data as the run was trained (--data ..., or --config RECIPE).
#   pipelines/drift-loop.sh deploy NEW_MODEL MODEL
#       copies NEW_MODEL beside MODEL and renames it over MODEL (atomic): a pipeline that
#       watches MODEL loads it, checks it and swaps it in between two batches.
#
# Between capture and retrain, look at CAPTURE_DIR/<label>/: move each wrong frame (the
# .png and its .json) to the folder of its true class. The plugin comes from GST_PLUGIN_PATH,
# else target/release; the trainer from target/release (cargo build --release -p
# gst-plugin-vision -p vision-trainer).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage() {
  sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}
[ $# -ge 1 ] || usage
COMMAND="$1"
shift
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$TARGET/release}"

case "$COMMAND" in
  run)
    [ $# -ge 3 ] || usage
    SOURCE="$1" MODEL="$2" CAPTURE="$3"
    shift 3
    case "$SOURCE" in
      rtsp://*|rtsps://*) SRC=(rtspsrc location="$SOURCE" protocols=tcp latency=200 ! decodebin) ;;
      *://*) SRC=(uridecodebin uri="$SOURCE") ;;
      *) [ -f "$SOURCE" ] || { echo "drift-loop: $SOURCE is not a file or URI" >&2; exit 2; }
         SRC=(filesrc location="$SOURCE" ! decodebin) ;;
    esac
    [ -f "$MODEL" ] || { echo "drift-loop: model $MODEL does not exist" >&2; exit 2; }
    mkdir -p "$CAPTURE"
    set +e
    gst-launch-1.0 -m -e "${SRC[@]}" ! videoconvert \
      ! visionclassify model="$MODEL" watch-model=true capture-dir="$CAPTURE" \
          capture-below=0.6 capture-every=300 "$@" \
      ! fakesink sync=true \
      | grep --line-buffered -E 'visionclassify-model|WARNING|ERROR|^Got EOS|^Execution ended'
    status=${PIPESTATUS[0]}
    set -e
    echo "captured: $(find "$CAPTURE" -name '*.png' | wc -l) frames in $CAPTURE"
    exit "$status"
    ;;
  retrain)
    [ $# -ge 3 ] || usage
    RUN="$1" CAPTURE="$2" OUT="$3"
    shift 3
    [ -f "$RUN/model.json" ] || { echo "drift-loop: $RUN is not a trainer run folder (no model.json)" >&2; exit 2; }
    MODE=train
    grep -qi efficientnet "$RUN/model.json" && MODE=transfer
    "$TARGET/release/vision-trainer" "$MODE" --from "$RUN" --extra-data "folder:$CAPTURE" \
      --balanced-sampler --out "$OUT" "$@"
    if [ -f "$OUT/model.onnx" ]; then
      echo "new model: $OUT/model.onnx (deploy it with: pipelines/drift-loop.sh deploy $OUT/model.onnx MODEL)"
    else
      echo "the new model did not beat the old one (see $OUT/retrain.json); nothing to deploy"
    fi
    ;;
  deploy)
    [ $# -eq 2 ] || usage
    NEW="$1" MODEL="$2"
    [ -f "$NEW" ] || { echo "drift-loop: $NEW does not exist" >&2; exit 2; }
    TMP="$(dirname "$MODEL")/.$(basename "$MODEL").deploy"
    cp "$NEW" "$TMP"
    mv -f "$TMP" "$MODEL"
    echo "deployed $NEW as $MODEL"
    ;;
  -h|--help|*) usage ;;
esac
