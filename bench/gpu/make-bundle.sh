#!/usr/bin/env bash
# Packs what bench/gpu/run-on-gpu-host.sh needs on a GPU machine that has NVIDIA's CUDA 13 +
# cuDNN 9 libraries (for example PyTorch's nvidia-* wheels) but no GStreamer and no ONNX
# Runtime GPU build: gst-launch/gst-inspect and the few GStreamer plugins the test pipeline
# uses, their libraries (not glibc/libstdc++), libgstvision.so (release), ONNX Runtime 1.31.1
# from the PyPI onnxruntime-gpu wheel (the CUDA provider compressed separately and split into
# 55 MiB parts, for transfers with a size limit), the default model and chelsea.png.
#
#   bench/gpu/make-bundle.sh OUTDIR
#
# Then copy OUTDIR's cuda.zst.part-* to /tmp/ortgpu/ and OUTDIR/{bundle.tar.zst,cuda.zst.part-03}
# plus run-on-gpu-host.sh to <repo>/.gpu/ on the GPU machine and run `bash .gpu/run.sh`
# (zstd must be on the PATH there).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUTDIR="${1:?usage: make-bundle.sh OUTDIR}"
mkdir -p "$OUTDIR"; OUTDIR="$(cd "$OUTDIR" && pwd)"
WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
B="$WORK/bundle"; mkdir -p "$B"/{bin,gst,lib,ort}

cd "$ROOT"
cargo build --release -p gst-plugin-vision
[ -f models/efficientnet-lite0.onnx ] || cargo run --release -p vision-trainer -- import
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 -d "$WORK" onnxruntime-gpu==1.31.1
python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
  "$WORK"/onnxruntime_gpu-*.whl "$WORK/wheel"
CAPI="$WORK/wheel/onnxruntime/capi"

GSTP=/usr/lib/x86_64-linux-gnu/gstreamer-1.0
cp /usr/bin/gst-launch-1.0 /usr/bin/gst-inspect-1.0 "$B/bin/"
cp /usr/lib/x86_64-linux-gnu/gstreamer1.0/gstreamer-1.0/gst-plugin-scanner "$B/bin/"
for p in libgstcoreelements libgstpng libgstvideoconvertscale libgstimagefreeze; do
  cp "$GSTP/$p.so" "$B/gst/"
done
cp target/release/libgstvision.so "$B/gst/" && strip "$B/gst/libgstvision.so"
cp "$CAPI/libonnxruntime.so.1.31.1" "$CAPI/libonnxruntime_providers_shared.so" "$B/ort/"
ln -s libonnxruntime.so.1.31.1 "$B/ort/libonnxruntime.so"
cp models/efficientnet-lite0.onnx .deps/data/photos/chelsea.png "$B/"
for f in "$B"/bin/* "$B"/gst/*.so; do ldd "$f" | awk '/=> \//{print $3}'; done | sort -u \
  | grep -v -E "/(libc|libm|libpthread|libdl|librt|ld-linux|libstdc\+\+|libgcc_s)\.so" \
  | xargs cp -L -t "$B/lib/"
(cd "$WORK" && tar -cf - bundle | zstd -q -T0 -10 --long=27 > "$OUTDIR/bundle.tar.zst")
zstd -q -T0 -19 --long=27 -f "$CAPI/libonnxruntime_providers_cuda.so" -o "$WORK/cuda.zst"
split -b 55M -d "$WORK/cuda.zst" "$OUTDIR/cuda.zst.part-"
cp "$ROOT/bench/gpu/run-on-gpu-host.sh" "$OUTDIR/run.sh"
ls -la "$OUTDIR"
