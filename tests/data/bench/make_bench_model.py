#!/usr/bin/env python3
"""Generate convnet224.onnx, the benchmark model of `vision-bench`.

Run from the repository root:

    python3 tests/data/bench/make_bench_model.py           # (re)write the file
    python3 tests/data/bench/make_bench_model.py --check   # also run it in onnxruntime

A MobileNet-like classifier with the compute of a real small model, for measuring the element
against a bare ONNX Runtime session until the trainer exports a real EfficientNet-Lite0. Its
weights are random (He init, fixed seed): the classes it picks mean nothing.

Requirements: Python 3, numpy, onnx (made with onnx 1.17.0). --check also needs the
onnxruntime package (dev only; checked with onnxruntime 1.31.1). Deterministic: running the
script twice gives byte-identical files. Opset 17, IR version 8.
"""

import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "convnet224.onnx")
OPSET = 17
IR_VERSION = 8
SEED = 20240224
SIZE = 224
CLASSES = 1000
INPUT = "input"
OUTPUT = "logits"

# Depthwise-separable blocks after the stem, as (output channels, stride). The layout of
# MobileNetV1 at width 0.5, with the last 7x7 stage narrowed to 384 channels so that the
# 1000-class head keeps the file under 4 MB.
STEM = 24
BLOCKS = [
    (32, 1),    # 112x112
    (64, 2),    # 56x56
    (64, 1),
    (128, 2),   # 28x28
    (128, 1),
    (256, 2),   # 14x14
    (256, 1),
    (256, 1),
    (256, 1),
    (256, 1),
    (256, 1),
    (384, 2),   # 7x7
]


def _j(obj):
    return json.dumps(obj, separators=(",", ":"))


METADATA = {
    "vision.schema": "1",
    "vision.labels": _j([f"class{i}" for i in range(CLASSES)]),
    "vision.preprocess": _j({
        "size": [SIZE, SIZE],
        "layout": "NCHW",
        "color": "RGB",
        "resize": "stretch",
        "scale": 0.00392156862745098,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }),
    "vision.output": _j({"name": OUTPUT, "scores": "logits"}),
    "vision.model": _j({
        "name": "convnet224-bench",
        "version": "1",
        "task": "classification",
        "architecture": "synthetic depthwise convnet, random weights, for benchmarks only",
        "optimisation": "fp32",
    }),
}


class Builder:
    """Collects nodes and initializers and counts parameters and multiply-adds."""

    def __init__(self, rng):
        self.rng = rng
        self.nodes = []
        self.inits = []
        self.params = 0
        self.macs = 0
        self.n = 0

    def _name(self, kind):
        self.n += 1
        return f"{kind}{self.n}"

    def _weight(self, name, shape, fan_in, gain=2.0):
        # He init keeps the activations' variance roughly constant through the Relu layers,
        # so the logits neither vanish nor explode (and no layer is all zeros or all clipped).
        w = self.rng.normal(0.0, np.sqrt(gain / fan_in), size=shape).astype(np.float32)
        self.inits.append(numpy_helper.from_array(w, name=name))
        self.params += w.size
        return name

    def _bias(self, name, n):
        b = self.rng.uniform(-0.05, 0.05, size=n).astype(np.float32)
        self.inits.append(numpy_helper.from_array(b, name=name))
        self.params += b.size
        return name

    def conv(self, x, cin, cout, k, stride, groups, hw_out):
        """Conv with bias (batch norm folded in, as in an exported model)."""
        name = self._name("conv")
        fan_in = (cin // groups) * k * k
        w = self._weight(f"{name}.w", (cout, cin // groups, k, k), fan_in)
        b = self._bias(f"{name}.b", cout)
        pad = k // 2
        self.nodes.append(helper.make_node(
            "Conv", [x, w, b], [name], name=name, kernel_shape=[k, k],
            strides=[stride, stride], pads=[pad, pad, pad, pad], group=groups))
        self.macs += hw_out * hw_out * cout * fan_in
        return name

    def relu(self, x):
        name = self._name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [name], name=name))
        return name

    def relu6(self, x):
        name = self._name("relu6")
        self.nodes.append(helper.make_node("Clip", [x, "zero", "six"], [name], name=name))
        return name


def build():
    rng = np.random.default_rng(SEED)
    b = Builder(rng)
    b.inits += [
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), name="zero"),
        numpy_helper.from_array(np.array(6.0, dtype=np.float32), name="six"),
    ]
    hw = SIZE // 2
    x = b.relu6(b.conv(INPUT, 3, STEM, 3, 2, 1, hw))
    cin = STEM
    for cout, stride in BLOCKS:
        hw //= stride
        x = b.relu6(b.conv(x, cin, cin, 3, stride, cin, hw))   # depthwise 3x3
        x = b.relu(b.conv(x, cin, cout, 1, 1, 1, hw))          # pointwise 1x1
        cin = cout
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="gap"))
    b.nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], name="flatten",
                                    axis=1))
    fc_w = b._weight("fc.w", (CLASSES, cin), cin, gain=1.0)
    fc_b = b._bias("fc.b", CLASSES)
    b.nodes.append(helper.make_node("Gemm", ["features", fc_w, fc_b], [OUTPUT], name="fc",
                                    transB=1))
    b.macs += cin * CLASSES

    graph = helper.make_graph(
        b.nodes, "convnet224",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", CLASSES])],
        initializer=b.inits,
        doc_string="Synthetic depthwise-separable convnet with random weights, for benchmarks",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="visionclassify tests/data/bench/make_bench_model.py",
        producer_version="1",
    )
    model.ir_version = IR_VERSION
    model.model_version = 1
    helper.set_model_props(model, METADATA)
    onnx.checker.check_model(model, full_check=True)
    return model, b.params, b.macs


def check(path, params, macs):
    import onnxruntime as ort

    size = os.path.getsize(path)
    m = onnx.load(path)
    props = {p.key: p.value for p in m.metadata_props}
    assert props == METADATA, "metadata differs"
    assert len(json.loads(props["vision.labels"])) == CLASSES
    assert m.ir_version == IR_VERSION and m.opset_import[0].version == OPSET
    assert size <= 4 * 1024 * 1024, f"{size} bytes is over 4 MB"

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)
    pixels = rng.integers(0, 256, size=(4, 3, SIZE, SIZE)).astype(np.float32)
    x = (pixels / 255.0 - mean) / std
    (logits,) = sess.run([OUTPUT], {INPUT: x})
    assert logits.shape == (4, CLASSES), logits.shape
    assert np.all(np.isfinite(logits))
    spread = float(logits.std(axis=1).mean())
    # Activations that vanished (or exploded) through the stack would show here.
    assert 0.05 < spread < 1000.0, f"logit spread {spread}"
    (one,) = sess.run([OUTPUT], {INPUT: x[:1]})
    assert np.allclose(one, logits[:1], atol=1e-4), "batch of 1 differs from batch of 4"
    print(f"ok   {os.path.basename(path)}: {size} bytes, {params} parameters, "
          f"{macs / 1e6:.1f} M multiply-adds ({2 * macs / 1e9:.3f} GFLOPs) per image")
    print(f"ok   logits shape {logits.shape}, mean std over classes {spread:.3f}, "
          f"argmax {logits.argmax(axis=1).tolist()}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="after writing, verify the model with onnxruntime")
    args = ap.parse_args()
    model, params, macs = build()
    with open(OUT, "wb") as f:
        f.write(model.SerializeToString())
    print(f"wrote {OUT}: {params} parameters, {2 * macs / 1e9:.3f} GFLOPs per image")
    if args.check:
        return check(OUT, params, macs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
