#!/usr/bin/env bash
# The test command: installs what is missing (scripts/setup.sh), builds the plugin that the
# end-to-end tests load with gst-launch-1.0, and runs every test of the workspace (and the
# gateway entrypoint's own tests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cargo build -p gst-plugin-vision
# The gateway's entrypoint: no credentials in what it prints, tls-insecure announced.
python3 docker/gateway/test_vision_gateway.py
cargo test --workspace "$@"
