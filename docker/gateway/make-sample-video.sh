#!/usr/bin/env bash
# Encodes photos into a VP8/WebM video, 640x480 at 10 fps, each photo stretched to the frame
# and shown for FRAMES_EACH frames (default 20): the same recipe as the end-to-end tests'
# video (tests/src/video.rs), one `imagefreeze` branch per photo joined by `concat`.
#   make-sample-video.sh OUT.webm PHOTO...      (photos relative to PHOTOS_DIR)
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: make-sample-video.sh OUT.webm PHOTO..." >&2; exit 2; }
out="$1"; shift
dir="${PHOTOS_DIR:-/opt/vision/photos}"
frames="${FRAMES_EACH:-20}"
mkdir -p "$(dirname "$out")"
branches=()
for p in "$@"; do
  [ -r "$dir/$p" ] || { echo "make-sample-video: $dir/$p is not readable" >&2; exit 1; }
  branches+=(filesrc location="$dir/$p" ! decodebin ! videoconvert ! videoscale add-borders=false
    ! "video/x-raw,format=I420,width=640,height=480,pixel-aspect-ratio=1/1,colorimetry=bt601,chroma-site=mpeg2"
    ! imagefreeze num-buffers="$frames" ! "video/x-raw,framerate=10/1" ! c.)
done
gst-launch-1.0 -q concat name=c ! vp8enc deadline=1 ! webmmux ! filesink location="$out" "${branches[@]}"
[ -s "$out" ] || { echo "make-sample-video: $out is empty" >&2; exit 1; }
echo "[sample-video] $out: $# photos x $frames frames"
