#!/usr/bin/env bash
# Puts ONNX Runtime's GPU build (libonnxruntime.so + the CUDA and TensorRT execution provider
# libraries) from the PyPI `onnxruntime-gpu` wheel into .deps/onnxruntime-gpu/lib/, for
# docker/gateway/Dockerfile.gpu. The wheel is ~250 MB; a second run does nothing.
#   docker/fetch-onnxruntime-gpu.sh [version]      (default 1.31.1)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="${1:-${ORT_GPU_VERSION:-1.31.1}}"
DEST="$ROOT/.deps/onnxruntime-gpu/lib"
if [ -e "$DEST/libonnxruntime.so.$VERSION" ] && [ -e "$DEST/libonnxruntime_providers_cuda.so" ]; then
  echo "[ort-gpu] ONNX Runtime GPU $VERSION: present"; exit 0
fi
command -v python3 >/dev/null || { echo "fetch-onnxruntime-gpu: python3 with pip is needed" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "[ort-gpu] fetching onnxruntime-gpu $VERSION from PyPI"
# The native libraries are the same in every Python version's wheel; pick one explicitly.
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_28_x86_64 -d "$tmp" "onnxruntime-gpu==$VERSION"
mkdir -p "$DEST"
python3 - "$tmp" "$DEST" "$VERSION" <<'PY'
import glob, os, sys, zipfile
tmp, dest, version = sys.argv[1:]
wanted = [f"libonnxruntime.so.{version}", "libonnxruntime_providers_shared.so",
          "libonnxruntime_providers_cuda.so", "libonnxruntime_providers_tensorrt.so"]
(whl,) = glob.glob(os.path.join(tmp, "*.whl"))
z = zipfile.ZipFile(whl)
for name in wanted:
    data = z.read(f"onnxruntime/capi/{name}")
    with open(os.path.join(dest, name), "wb") as f:
        f.write(data)
    print(f"[ort-gpu] {name}: {len(data) / 1e6:.1f} MB")
PY
ln -sf "libonnxruntime.so.$VERSION" "$DEST/libonnxruntime.so"
