#!/usr/bin/env bash
# Packs this machine's Rust toolchain (rustc, cargo, the x86_64 standard library; no docs) into
# a local image, /opt/rust inside, for the builder stage of docker/gateway/Dockerfile. Debian
# 13's own rustc (1.85) is older than the workspace's rust-version, and no container registry
# is needed this way.
#   docker/make-rust-image.sh [image-name]       (default: vision-rust:<rustc version>)
# Prints the image name on its last line.
set -euo pipefail
command -v rustc >/dev/null || { echo "make-rust-image: rustc not found (install Rust with rustup)" >&2; exit 1; }
version="$(rustc --version | awk '{print $2}')"
name="${1:-vision-rust:$version}"
if docker image inspect "$name" >/dev/null 2>&1; then
  echo "[rust-image] $name exists" >&2
  echo "$name"; exit 0
fi
sysroot="$(rustc --print sysroot)"
host="$(rustc -vV | sed -n 's/^host: //p')"
[ "$host" = x86_64-unknown-linux-gnu ] || { echo "make-rust-image: needs an x86_64-unknown-linux-gnu toolchain, found $host" >&2; exit 1; }
for f in bin/cargo bin/rustc "lib/rustlib/$host/lib"; do
  [ -e "$sysroot/$f" ] || { echo "make-rust-image: $sysroot/$f is missing" >&2; exit 1; }
done
echo "[rust-image] packing Rust $version from $sysroot" >&2
# Symlinks are dereferenced: a rustup toolchain's bin/ may link into ~/.cargo.
tar -C "$sysroot" --dereference --transform 's,^\./,opt/rust/,' -c ./bin ./lib \
  | docker import -c 'ENV PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$name" >/dev/null
echo "[rust-image] built $name" >&2
echo "$name"
