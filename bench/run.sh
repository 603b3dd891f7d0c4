#!/usr/bin/env bash
# The benchmark of BENCHMARKS.md in one command: frames per second of visionclassify on the
# default model (ImageNet EfficientNet-Lite0 from `vision-trainer import`) at batch 1, 4 and 8,
# each next to the bare ONNX Runtime session (same model, threads, batch) and a hand-written
# Python loop (OpenCV resize + onnxruntime), all on the same 1080p frames in one run; latency
# at batch 1; peak RSS of each. Writes bench/results/{summary.md,fps.png,*.json}.
#
#   bench/run.sh [--frames N] [--rounds R] [--threads T] [--out DIR]
#
#   --frames N    timed frames per run and side (default 200)
#   --rounds R    interleaved rounds, medians reported (default 3)
#   --threads T   ONNX Runtime intra-op threads for every side (default 1: on a 2-core machine
#                 the element's preprocessing needs the other core). The element runs one
#                 session here (inference-workers=1), as the bare side does, so the figures are
#                 the element's own cost; its default runs one session per core (BENCHMARKS.md,
#                 "The element at all cores")
#   --out DIR     where the results go (default bench/results)
#   MODEL=FILE    environment: another fp32 model (default models/efficientnet-lite0.onnx)
#   INT8_MODEL=F  environment: an int8 model to add as a column (default: MODEL with .int8
#                 before .onnx, made by `vision-trainer quantize --photos` when missing)
#   INT8=0        environment: leave the int8 column out
#
# The Python side runs in a venv under .deps/bench-venv with onnxruntime==1.31.1 (the version
# the element loads), opencv-python-headless, numpy and matplotlib (for the plot) from PyPI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FRAMES=200 ROUNDS=3 THREADS=1 OUT="$ROOT/bench/results"
while [ $# -gt 0 ]; do
  case "$1" in
    --frames) FRAMES="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
cd "$ROOT"
mkdir -p "$OUT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
log() { printf '[bench] %s\n' "$*"; }

scripts/setup.sh
log "building vision-bench (release)"
cargo build --release --quiet -p vision-bench
MODEL="${MODEL:-$ROOT/models/efficientnet-lite0.onnx}"
if [ ! -s "$MODEL" ]; then
  log "importing EfficientNet-Lite0 as $MODEL"
  cargo build --release --quiet -p vision-trainer
  "$TARGET/release/vision-trainer" import --out "$MODEL"
fi
INT8_MODEL="${INT8_MODEL:-${MODEL%.onnx}.int8.onnx}"
if [ "${INT8:-1}" != 0 ] && [ ! -s "$INT8_MODEL" ]; then
  cargo build --release --quiet -p vision-trainer
  if "$TARGET/release/vision-trainer" quantize --help >/dev/null 2>&1; then
    log "quantizing $MODEL to int8 (calibrated on crops of the set-up photos) as $INT8_MODEL"
    # Unlabelled crops: the gate compares top-1 agreement with the float model (95-97 % for
    # this model), so it gets a 5-point budget instead of the labelled-data default of 1.
    "$TARGET/release/vision-trainer" quantize --model "$MODEL" --photos "$ROOT/.deps/data/photos" \
      --max-accuracy-drop 5 --out "$INT8_MODEL" || log "vision-trainer quantize failed: no int8 column"
  fi
fi

VENV="$ROOT/.deps/bench-venv"
PY_PACKAGES=(onnxruntime==1.31.1 opencv-python-headless==5.0.0.93 numpy==2.4.6 matplotlib==3.11.2)
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import onnxruntime, cv2, numpy, matplotlib' 2>/dev/null; then
  log "making $VENV with ${PY_PACKAGES[*]}"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "${PY_PACKAGES[@]}"
fi

BENCH="$TARGET/release/vision-bench"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ROOT/.deps/onnxruntime/lib/libonnxruntime.so}"
POOL="$TARGET/bench-frames.raw"
"$BENCH" --dump-frames "$POOL" >/dev/null
printf '{"cpu": "%s, %s CPUs, %s GiB", "date": "%s"}\n' \
  "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" "$(nproc)" \
  "$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)" "$(date -u '+%Y-%m-%d %H:%M UTC')" \
  > "$OUT/machine.json"

log "element vs bare session, batches 1,4,8, $ROUNDS rounds of $FRAMES frames, latency"
"$BENCH" --model "$MODEL" --batches 1,4,8 --threads "$THREADS" --workers 1 --frames "$FRAMES" \
  --rounds "$ROUNDS" --latency 200 --json "$OUT/fp32.json" | tee "$OUT/fp32.txt"
if [ "${INT8:-1}" != 0 ] && [ -s "$INT8_MODEL" ]; then
  log "int8 model $INT8_MODEL"
  "$BENCH" --model "$INT8_MODEL" --batches 1,4,8 --threads "$THREADS" --workers 1 --frames "$FRAMES" \
    --rounds "$ROUNDS" --json "$OUT/int8.json" | tee "$OUT/int8.txt"
else
  rm -f "$OUT/int8.json" "$OUT/int8.txt"
  log "no int8 model at $INT8_MODEL: int8 column left out"
fi
log "peak RSS, one side per process (batch 8)"
for side in element bare; do
  "$BENCH" --model "$MODEL" --only "$side" --batches 8 --threads "$THREADS" --workers 1 --frames 100 \
    --rounds 1 --json "$OUT/rss-$side.json" >/dev/null
done
log "Python loop (OpenCV + onnxruntime), same frames and threads"
"$VENV/bin/python" bench/python/loop.py --model "$MODEL" --frames-file "$POOL" \
  --width 1920 --height 1080 --batches 1,4,8 --frames "$FRAMES" --threads "$THREADS" \
  --rounds "$ROUNDS" --latency 200 --json "$OUT/python.json"
"$VENV/bin/python" bench/python/plot.py "$OUT"
log "results: $OUT/summary.md, $OUT/fps.png"
