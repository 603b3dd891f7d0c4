#!/usr/bin/env bash
# Runs the plugin's tests with the `v1_24` feature (GstAnalytics classification meta) on
# Debian 13's GStreamer 1.26, in a container, with this machine's Rust toolchain mounted.
# Not part of scripts/test.sh (it costs ~15 minutes from nothing): run it when touching the
# analytics code.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
"$ROOT/docker/make-base-image.sh" trixie debian:trixie
docker build -q -t vision-trixie-dev -f "$ROOT/docker/dev/Dockerfile.trixie" "$ROOT/docker/dev"
"$ROOT/scripts/setup.sh"   # ONNX Runtime and test data under .deps/, shared with the container
docker run --rm -v "$ROOT:/src" -v "$HOME/.cargo:/root/.cargo" -v "$HOME/.rustup:/root/.rustup" \
  -e PATH=/root/.cargo/bin:/usr/bin:/bin -e CARGO_TARGET_DIR=/src/target-trixie -w /src \
  vision-trixie-dev cargo test -p gst-plugin-vision --features v1_24
