#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/seeds/<target>/ (standard library
only): small valid inputs of each format, from which libFuzzer mutates. fuzz/corpus/<target>/
holds what the runs found, minimized with `cargo fuzz cmin`.

    python3 fuzz/seeds.py           # from the repository root
"""
import json
import pathlib
import re
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def put(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


# ---- pickles and legacy .pth files (the layout trainer/src/import/pth.rs documents) ---------

MAGIC = 0x1950A86A20F9469CFC6C


def text(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def ints(values):
    return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"


def legacy(entries, storages):
    """entries: (name, storage type, key, size, stride, view offset or None); storages:
    (key, element count), zero-filled."""
    f = b"\x80\x02\x8a\x0a" + MAGIC.to_bytes(10, "little") + b"."
    f += b"\x80\x02M\xe9\x03."
    f += b"\x80\x02}q\x00(" + text("little_endian") + b"\x88" + text("type_sizes") + b"}u."
    f += b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01("
    for name, ty, key, size, stride, view in entries:
        f += text(name) + b"ctorch._utils\n_rebuild_tensor_v2\n("
        f += b"(" + text("storage") + f"ctorch\n{ty}\n".encode() + text(key) + text("cpu")
        f += b"K\x01" + (b"(" + text("v") + b"K" + bytes([view]) + b"K\x01t" if view is not None else b"N")
        f += b"tQK\x00" + ints(size) + ints(stride) + b"\x89}tR"
    f += b"u}q\x02b."
    f += b"\x80\x02](" + b"".join(text(k) for k, _ in storages) + b"e."
    for key, n in storages:
        size = 8 if any(e[2] == key and e[1] == "LongStorage" for e in entries) else 4
        f += struct.pack("<q", n) + b"\x00" * (size * n)
    return f


conv = ("_conv_stem.weight", "FloatStorage", "0", [2, 1, 1, 3], [3, 3, 3, 1], None)
bias = ("_fc.bias", "FloatStorage", "1", [2], [1], 1)
steps = ("_bn0.num_batches_tracked", "LongStorage", "2", [], [], None)
one = legacy([conv, bias, steps], [("0", 6), ("1", 3), ("2", 1)])
put("pth", "three-tensors.pth", one)
put("pth", "transposed.pth", legacy([("w", "FloatStorage", "0", [2, 3], [1, 2], None)], [("0", 6)]))
# Each pickle of the file alone, and Python values, seed the pickle VM.
pos = 0
for i, piece in enumerate(re.split(rb"(?<=\.)(?=\x80\x02)", one.split(b"e.")[0] + b"e.")):
    put("pickle", f"pth-part-{i}.pkl", piece)
put("pickle", "dict-list-tuple.pkl",
    b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffM,\x01Jp\x11\x01\x00e"
    b"X\x01\x00\x00\x00bq\x03\x88NX\x01\x00\x00\x00xq\x04\x87q\x05u.")
put("pickle", "long-float-bytes.pkl",
    b"\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
    b"G?\xf0\x00\x00\x00\x00\x00\x00C\x03abc\x8c\x01k\x94\x87.")
put("pickle", "reduce-build.pkl", b"\x80\x02ctorch\nFloatStorage\nK\x01\x85R}b.")

# ---- the model contract: header bytes (fuzzing.rs: contract) and the vision.* values -------

header = bytes([0, 4, 1, 3, 0xE8, 0xE8, 0, 2, 1, 0xE9, 0])  # f32 [1,3,224,224] -> f32 [1,1000]
put("contract", "lite0.bin", header + b"\0".join([
    b'"1"',
    json.dumps(["tench", "goldfish", "shark"]).encode(),
    b'{"size":[224,224],"layout":"NCHW","color":"RGB","resize":"center-crop",'
    b'"scale":0.00392,"mean":[0.5,0.5,0.5],"std":[0.5,0.5,0.5]}',
    b'{"name":"scores","scores":"logits"}',
    b'{"name":"efficientnet-lite0","version":"1","task":"classification"}',
]))
dynamic = bytes([1, 4, 0xE0, 0xE8, 0xE8, 3, 0, 2, 0xE0, 3, 1])  # u8 NHWC, 3 classes
put("contract", "dynamic-nhwc.bin", dynamic + b"\0".join([
    b"1", b'["red","green","blue"]', b'{"size":[64,48],"layout":"NHWC","color":"BGR"}',
    b'{"name":"logits","scores":"probabilities"}', b"", b"a\nb\nc\n",
]))
put("contract", "gray-letterbox.bin", bytes([0, 4, 1, 1, 28, 28, 0, 4, 1, 10, 1, 1, 1])
    + b'\0\0{"size":[28,28],"color":"GRAY","resize":"letterbox","scale":1}')

# ---- labels: a labels file, and timm's two ImageNet files -----------------------------------

put("labels", "labels-file.txt", "cat\ndog\r\n  bird \n\n")
deps = ROOT / ".deps" / "data" / "imagenet"
synsets = deps / "imagenet_synsets.txt"
lemmas = deps / "imagenet_synset_to_lemma.txt"
if synsets.exists() and lemmas.exists():
    wanted = synsets.read_text().split()
    keep = set(wanted)
    lines = [l for l in lemmas.read_text().splitlines() if l.split("\t")[0] in keep]
    put("labels", "imagenet.txt", "\n".join(wanted) + "\n\0" + "\n".join(lines) + "\n")
put("labels", "two-synsets.txt", "n01440764\nn01443537\n\0n01440764\ttench, Tinca tinca\n"
    "n01443537\tgoldfish, Carassius auratus\n")

# ---- events and meta structures --------------------------------------------------------------

readme = (ROOT / "gst-plugin" / "README.md").read_text()
for i, block in enumerate(re.findall(r"<!-- event -->\n```json\n(.*?)```", readme, re.S)):
    put("event", f"readme-{i}.json", block)
put("event", "meta.json", json.dumps({
    "model": "color3", "model-version": "2", "class-ids": [0, 2], "labels": ["red", "blue"],
    "confidences": [0.75, 0.25], "best-class-id": 0, "best-label": "red",
    "best-confidence": 0.75, "below-threshold": False, "inference-time": 1200000,
    "batch-size": 4, "reused": False, "frame": 41}))
put("event", "tags.json", '{"site": "north", "floor": 3, "zones": ["a", "b"]}')

# ---- MQTT settings: URI, user, password, topic, client id (NUL-separated) --------------------

for name, parts in {
    "plain": ["mqtt://broker.local:1883", "gateway", "s3cret-pw", "vision/{sensor}/classifications", "cam-1"],
    "tls-v6": ["mqtts://[::1]", "", "", "vision/{sensor}/{model}/{label}", "site/cam-2"],
    "userinfo": ["mqtt://user:hunter22@broker/", "u", "p", "a/{x}/b", "c+1"],
}.items():
    put("mqtt_settings", f"{name}.txt", "\0".join(parts))
