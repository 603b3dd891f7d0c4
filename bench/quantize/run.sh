#!/usr/bin/env bash
# Quantization benchmark with ONNX Runtime's own quantizer as the anchor.
#
#   bench/quantize/run.sh MODEL.onnx [DATA] [METHOD]
#
# DATA: a data spec for `vision-trainer quantize --data` (fashion-mnist, folder:PATH,
# csv:PATH) or photos:DIR for unlabelled photos (default: photos:.deps/data/photos, for the
# ImageNet EfficientNet-Lite0). METHOD: entropy (default), minmax, percentile.
#
# 1. `vision-trainer quantize` makes our int8 QDQ model and writes the calibration and test
#    tensors it used (.npy).
# 2. ONNX Runtime's Python `quantize_static` (QDQ, per-channel, same activation type) quantizes
#    the same float model on the same calibration tensors. onnxruntime==1.31.1 (+ numpy, onnx)
#    is installed into .deps/pyquant on the first run; only this benchmark uses Python.
# 3. `bench_quantize` measures float, ours and ORT's with the same Rust/ORT code in one run:
#    top-1 on the same test tensors, throughput at batch 1 and 8 (same session options,
#    models interleaved, median of rounds), file size, and the ratios.
# Environment: CALIBRATION (256), TEST (photos: 200 crops; labelled: whole test split),
# ROUNDS (7), ROUND_MS (500), THREADS (0 = one per core), ACTIVATIONS (u8),
# PROFILE (release).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MODEL="$(realpath "${1:?usage: bench/quantize/run.sh MODEL.onnx [DATA] [METHOD]}")"
DATA="${2:-photos:$ROOT/.deps/data/photos}"
METHOD="${3:-entropy}"
CALIBRATION="${CALIBRATION:-256}"
ROUNDS="${ROUNDS:-7}"
ROUND_MS="${ROUND_MS:-500}"
THREADS="${THREADS:-0}"
# u8 is our default on x86 (ORT fuses every node group with it); both quantizers get the same.
ACTIVATIONS="${ACTIVATIONS:-u8}"

WORK="$ROOT/target/bench-quantize/$(basename "$MODEL" .onnx)-$METHOD"
mkdir -p "$WORK"
cd "$ROOT"

# PROFILE=dev uses debug builds (slower calibration, same ORT timings: ORT does the work).
PROFILE="${PROFILE:-release}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"
cargo build --profile "$PROFILE" -q -p vision-trainer --bin vision-trainer
cargo build --profile "$PROFILE" -q -p vision-bench --bin bench_quantize

case "$DATA" in
    photos:*) SOURCE=(--photos "${DATA#photos:}") ;;
    *) SOURCE=(--data "$DATA") ;;
esac
TEST_ARGS=()
[ -n "${TEST:-}" ] && TEST_ARGS=(--test-size "$TEST")

echo "== ours: vision-trainer quantize --method $METHOD"
# The gate is reported but does not stop the benchmark.
"$BIN/vision-trainer" quantize --model "$MODEL" "${SOURCE[@]}" "${TEST_ARGS[@]}" \
    --method "$METHOD" --activations "$ACTIVATIONS" --calibration-size "$CALIBRATION" \
    --threads "$THREADS" --max-accuracy-drop 100 \
    --out "$WORK/ours.int8.onnx" --save-tensors "$WORK"

echo "== anchor: onnxruntime.quantization.quantize_static"
PY="$ROOT/.deps/pyquant/bin/python"
if ! "$PY" -c 'import onnxruntime, onnx, numpy; assert onnxruntime.__version__ == "1.31.1"' 2>/dev/null; then
    python3 -m venv "$ROOT/.deps/pyquant"
    "$ROOT/.deps/pyquant/bin/pip" install -q onnxruntime==1.31.1 numpy onnx
fi
"$PY" "$ROOT/bench/quantize/ort_quantize.py" "$MODEL" "$WORK/calibration.npy" \
    "$WORK/ort.int8.onnx" "$METHOD" "$ACTIVATIONS"

echo "== measured together"
"$BIN/bench_quantize" --float "$MODEL" \
    --model "ours=$WORK/ours.int8.onnx" --model "ort=$WORK/ort.int8.onnx" \
    --tensors "$WORK" --rounds "$ROUNDS" --round-ms "$ROUND_MS" --threads "$THREADS" \
    --json "$WORK/bench.json"
echo "results in $WORK"
