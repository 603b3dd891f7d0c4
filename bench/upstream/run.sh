#!/usr/bin/env bash
# Head-to-head in a Debian 13 container (GStreamer 1.26): upstream `onnxinference`
# (gstreamer1.0-plugins-bad, Debian's ONNX Runtime 1.21) against `visionclassify` (this
# repository, built in release inside the container, ONNX Runtime 1.31.1 from .deps/), same
# model (models/efficientnet-lite0.onnx), same 1080p RGB frames, N parallel streams in one
# pipeline. See bench/upstream/README.md.
#
#   bench/upstream/run.sh [headtohead.py options: --streams 1,2,4,8 --frames 200 --rounds 3 ...]
#
# Steps: base image (debootstrap, if missing) -> image vision-upstream-bench -> scripts/setup.sh
# on the host (.deps/, mounted into the container) -> the model copy upstream needs
# (.deps/upstream/, made with PyPI `onnx` in .deps/upstream-venv) -> `cargo build --release -p
# gst-plugin-vision` in the container (CARGO_TARGET_DIR=/src/target-trixie, the host's Rust
# toolchain mounted) -> gst-inspect-1.0 onnxinference -> headtohead.py. Heavy work runs under
# `nice -n 19` (inside the container too). Results: bench/upstream/results/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/bench/upstream"
IMAGE="${IMAGE:-vision-upstream-bench}"
OUT="$HERE/results"
log() { printf '[upstream-bench] %s\n' "$*"; }
cd "$ROOT"
mkdir -p "$OUT" "$ROOT/.deps/upstream"

log "base image"
nice -n 19 "$ROOT/docker/make-base-image.sh" trixie debian:trixie
log "image $IMAGE"
nice -n 19 docker build -q -t "$IMAGE" -f "$HERE/Dockerfile" "$HERE" >/dev/null
log "scripts/setup.sh (ONNX Runtime 1.31.1 and data under .deps/)"
nice -n 19 "$ROOT/scripts/setup.sh"

MODEL="$ROOT/models/efficientnet-lite0.onnx"
if [ ! -s "$MODEL" ]; then
  echo "run.sh: $MODEL is missing; make it with: cargo build --release -p vision-trainer && target/release/vision-trainer import --out $MODEL" >&2
  exit 1
fi
UPMODEL="$ROOT/.deps/upstream/efficientnet-lite0.upstream.onnx"
if [ ! -s "$UPMODEL" ] || [ "$MODEL" -nt "$UPMODEL" ]; then
  if [ ! -x "$ROOT/.deps/upstream-venv/bin/python" ]; then
    log "venv .deps/upstream-venv (PyPI onnx)"
    python3 -m venv "$ROOT/.deps/upstream-venv"
    nice -n 19 "$ROOT/.deps/upstream-venv/bin/pip" install -q onnx
  fi
  nice -n 19 "$ROOT/.deps/upstream-venv/bin/python" "$HERE/upstream-model.py" "$MODEL" "$UPMODEL"
fi

in_container() {
  docker run --rm -v "$ROOT:/src" -v "$HOME/.cargo:/root/.cargo" -v "$HOME/.rustup:/root/.rustup" \
    -e PATH=/root/.cargo/bin:/usr/local/bin:/usr/bin:/bin -e CARGO_TARGET_DIR=/src/target-trixie \
    -e GST_PLUGIN_PATH=/src/target-trixie/release -w /src "$IMAGE" nice -n 19 "$@"
}

log "cargo build --release -p gst-plugin-vision (in the container, target-trixie/)"
in_container cargo build --release -p gst-plugin-vision
log "element properties -> results/{onnxinference,visionclassify}-inspect.txt"
in_container gst-inspect-1.0 onnxinference >"$OUT/onnxinference-inspect.txt"
in_container gst-inspect-1.0 visionclassify >"$OUT/visionclassify-inspect.txt"
log "benchmark"
in_container python3 /src/bench/upstream/headtohead.py \
  --model /src/models/efficientnet-lite0.onnx \
  --upstream-model /src/.deps/upstream/efficientnet-lite0.upstream.onnx \
  --ort-library /src/.deps/onnxruntime/lib/libonnxruntime.so \
  --json /src/bench/upstream/results/headtohead.json "$@" | tee "$OUT/headtohead.log"
log "results in $OUT (headtohead.md, headtohead.json, headtohead.log)"
