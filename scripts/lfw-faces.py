#!/usr/bin/env python3
"""Writes scikit-image's lfw_subset.npy (200 grey 25x25 crops: 100 faces from Labeled Faces in
the Wild, then 100 non-face patches of natural images) as a labelled image folder for
vision-trainer: DEST/face/000.png ... and DEST/not-face/100.png ...

    scripts/lfw-faces.py SRC.npy DEST

Standard library only (no numpy): the .npy header is parsed by hand and the PNGs are written
with zlib.
"""
import ast
import os
import struct
import sys
import zlib


def read_npy(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        sys.exit(f"{path}: not a .npy file")
    major = data[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", data[8:10])
        start = 10
    else:
        (hlen,) = struct.unpack("<I", data[8:12])
        start = 12
    header = ast.literal_eval(data[start : start + hlen].decode("latin1"))
    if header["descr"] != "<f8" or header["fortran_order"]:
        sys.exit(f"{path}: expected little-endian float64 in C order, got {header}")
    shape = header["shape"]
    count = 1
    for n in shape:
        count *= n
    values = struct.unpack(f"<{count}d", data[start + hlen : start + hlen + 8 * count])
    return shape, values


def write_png(path, width, height, pixels):
    raw = b"".join(
        b"\x00" + bytes(pixels[y * width : (y + 1) * width]) for y in range(height)
    )

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
    with open(path, "wb") as f:
        f.write(png)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dest = sys.argv[1], sys.argv[2]
    (n, h, w), values = read_npy(src)
    if n != 200:
        sys.exit(f"{src}: expected 200 images, found {n}")
    for label in ("face", "not-face"):
        os.makedirs(os.path.join(dest, label), exist_ok=True)
    size = h * w
    for i in range(n):
        img = values[i * size : (i + 1) * size]
        pixels = [max(0, min(255, round(v * 255))) for v in img]
        label = "face" if i < 100 else "not-face"
        write_png(os.path.join(dest, label, f"{i:03d}.png"), w, h, pixels)


if __name__ == "__main__":
    main()
