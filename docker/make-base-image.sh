#!/usr/bin/env bash
# Builds a Debian base image locally (debootstrap + docker import) under the name the
# Dockerfiles use, for machines without a reachable container registry. With a registry,
# `docker pull debian:trixie` does the same.
#   docker/make-base-image.sh [suite] [image-name]     (default: trixie debian:trixie)
set -euo pipefail
suite="${1:-trixie}"
name="${2:-debian:$suite}"
if docker image inspect "$name" >/dev/null 2>&1; then
  echo "[base-image] $name exists"; exit 0
fi
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=ca-certificates "$suite" "$root" http://deb.debian.org/debian
tar -C "$root" -c . | docker import - "$name"
echo "[base-image] built $name"
