#!/usr/bin/env bash
# Builds the gateway images from a clone of this repository, on a machine with Docker, a Rust
# toolchain and the package registries (no container registry needed):
#   docker/build.sh            vision-gateway:cpu and vision-mosquitto:trixie
#   docker/build.sh --gpu      also vision-gateway:gpu (needs the nvidia/cuda base image)
# Steps: scripts/setup.sh (ONNX Runtime, photos, weights into .deps/), the ImageNet
# EfficientNet-Lite0 model via `vision-trainer import` (once), the local base images
# (docker/make-base-image.sh, docker/make-rust-image.sh), a build context under
# target/docker-context/ with only what the images need, then `docker build`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
GPU=0
for a in "$@"; do
  case "$a" in
    --gpu) GPU=1 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build: unknown argument '$a' (see --help)" >&2; exit 2 ;;
  esac
done
log() { printf '[docker-build] %s\n' "$*"; }
command -v docker >/dev/null || { echo "build: docker is not installed" >&2; exit 1; }

"$ROOT/scripts/setup.sh"
MODEL="$ROOT/models/efficientnet-lite0.onnx"
if [ ! -s "$MODEL" ]; then
  log "importing the pretrained EfficientNet-Lite0 (ImageNet) as $MODEL"
  (cd "$ROOT" && cargo build --release --quiet -p vision-trainer)
  "$TARGET/release/vision-trainer" import --out "$MODEL"
fi

"$ROOT/docker/make-base-image.sh" trixie debian:trixie
RUST_IMAGE="$("$ROOT/docker/make-rust-image.sh" | tail -n 1)"

CTX="$TARGET/docker-context"
log "build context in $CTX"
rm -rf "$CTX"
mkdir -p "$CTX/workspace" "$CTX/assets/onnxruntime" "$CTX/assets/models" "$CTX/assets/photos" "$CTX/gateway"
# A workspace of the plugin alone (docker/plugin-workspace.py), with Cargo.lock pruned to it
# by cargo, every version as locked in the repository (checked).
python3 "$ROOT/docker/plugin-workspace.py" "$ROOT" "$CTX/workspace"
(cd "$ROOT" && cp -a --parents Cargo.lock .cargo gst-plugin "$CTX/workspace/")
(cd "$CTX/workspace" && { cargo metadata --offline --format-version 1 >/dev/null 2>&1 \
   || cargo metadata --format-version 1 >/dev/null; })
python3 - "$ROOT/Cargo.lock" "$CTX/workspace/Cargo.lock" <<'PY'
import sys, tomllib
locked = {(p["name"], p["version"]) for p in tomllib.load(open(sys.argv[1], "rb"))["package"]}
pruned = tomllib.load(open(sys.argv[2], "rb"))["package"]
changed = [f'{p["name"]} {p["version"]}' for p in pruned if (p["name"], p["version"]) not in locked]
if changed:
    sys.exit(f"build: pruning Cargo.lock changed versions: {changed}")
print(f"[docker-build] Cargo.lock for the plugin: {len(pruned)} of {len(locked)} packages")
PY
cp -a "$ROOT/.deps/onnxruntime/lib/." "$CTX/assets/onnxruntime/"
cp "$MODEL" "$CTX/assets/models/"
cp "$ROOT/.deps/data/photos/"* "$CTX/assets/photos/"
cp -a "$ROOT/docker/gateway/." "$CTX/gateway/"
# The host's CA bundle for cargo in the builder stage (see the Dockerfile).
HOST_CA="${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}"
[ -s "$HOST_CA" ] || { echo "build: no CA bundle at $HOST_CA (set HOST_CA=/path/to/bundle.pem)" >&2; exit 1; }
cp "$HOST_CA" "$CTX/assets/build-ca.crt"
cp -a "$ROOT/docker/mosquitto" "$CTX/mosquitto"
if [ "$GPU" = 1 ]; then
  "$ROOT/docker/fetch-onnxruntime-gpu.sh"
  cp -a "$ROOT/.deps/onnxruntime-gpu/lib" "$CTX/assets/onnxruntime-gpu"
fi

start=$(date +%s)
log "building vision-gateway:cpu (builder: $RUST_IMAGE)"
docker build -t vision-gateway:cpu --build-arg RUST_IMAGE="$RUST_IMAGE" \
  -f "$CTX/gateway/Dockerfile" "$CTX"
log "building vision-mosquitto:trixie"
docker build -t vision-mosquitto:trixie -f "$CTX/mosquitto/Dockerfile" "$CTX/mosquitto"
if [ "$GPU" = 1 ]; then
  log "building vision-gateway:gpu"
  docker build -t vision-gateway:gpu --build-arg RUST_IMAGE="$RUST_IMAGE" \
    -f "$CTX/gateway/Dockerfile.gpu" "$CTX"
fi
log "done in $(( $(date +%s) - start )) s"
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^vision-(gateway|mosquitto):' || true
