#!/usr/bin/env python3
"""Generate the tiny ONNX test models used by the visionclassify tests.

Run from the repository root:

    python3 tests/data/make_models.py            # (re)write the files
    python3 tests/data/make_models.py --check    # also verify them in onnxruntime

Requirements: Python 3, numpy, onnx (made with onnx 1.17.0). The --check mode
additionally needs the onnxruntime Python package (dev only; checked with
onnxruntime 1.31.1). The output is deterministic: running the script twice
produces byte-identical files.

All models use opset 17 and IR version 8, so ONNX Runtime >= 1.14 loads them.
See README.md in this directory for what each file computes.
"""

import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT_DIR = os.path.dirname(os.path.abspath(__file__))
OPSET = 17
IR_VERSION = 8
PRODUCER = "visionclassify tests/data/make_models.py"
PRODUCER_VERSION = "1"
SCALE_1_255 = 1.0 / 255.0  # 0.00392156862745098
SEPARATION = 20.0  # logits multiplier: e^20 separation between classes
RGB_LABELS = ["red", "green", "blue"]


# --------------------------------------------------------------------------
# metadata helpers
# --------------------------------------------------------------------------


def _j(obj):
    return json.dumps(obj, separators=(",", ":"))


def vision_metadata(labels, preprocess, output, model):
    """Return the metadata_props dict following the vision.* contract."""
    return {
        "vision.schema": "1",
        "vision.labels": _j(labels),
        "vision.preprocess": _j(preprocess),
        "vision.output": _j(output),
        "vision.model": _j(model),
    }


def preprocess(size, layout="NCHW", color="RGB", resize="stretch",
               scale=SCALE_1_255, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
    return {
        "size": list(size),
        "layout": layout,
        "color": color,
        "resize": resize,
        "scale": scale,
        "mean": list(mean),
        "std": list(std),
    }


def model_info(name, architecture):
    return {
        "name": name,
        "version": "1.0.0",
        "task": "classification",
        "architecture": architecture,
        "optimisation": "fp32",
    }


def make_model(graph, metadata=None, doc=""):
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    model.model_version = 1
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    return model


def scalar(name, value):
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name=name)


# --------------------------------------------------------------------------
# graphs
# --------------------------------------------------------------------------


def color3_graph(batch="N", size=(32, 32), name="color3", gain=SEPARATION):
    """float32 [B,3,H,W] RGB in 0..1 -> GlobalAveragePool -> Flatten -> *gain (20)."""
    h, w = size
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, h, w])
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 3])
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        helper.make_node("Mul", ["flat", "k20"], ["scores"], name="separate"),
    ]
    return helper.make_graph(
        nodes, name, [inp], [out], initializer=[scalar("k20", gain)],
        doc_string="Mean of each colour channel times 20 = per-class logits",
    )


def color3_nhwc_u8_graph():
    """uint8 [N,32,32,3] BGR -> mean per channel -> reorder to RGB -> softmax."""
    inp = helper.make_tensor_value_info("input", TensorProto.UINT8, ["N", 32, 32, 3])
    out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])
    nodes = [
        helper.make_node("Cast", ["input"], ["as_float"], name="cast",
                         to=TensorProto.FLOAT),
        helper.make_node("Mul", ["as_float", "k_scale"], ["scaled"], name="scale"),
        helper.make_node("ReduceMean", ["scaled"], ["mean_bgr"], name="mean_hw",
                         axes=[1, 2], keepdims=0),
        helper.make_node("Gather", ["mean_bgr", "bgr_to_rgb"], ["mean_rgb"],
                         name="reorder", axis=1),
        helper.make_node("Mul", ["mean_rgb", "k20"], ["logits"], name="separate"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    inits = [
        scalar("k_scale", SCALE_1_255),
        numpy_helper.from_array(np.array([2, 1, 0], dtype=np.int64), name="bgr_to_rgb"),
        scalar("k20", SEPARATION),
    ]
    return helper.make_graph(
        nodes, "color3_nhwc_u8", [inp], [out], initializer=inits,
        doc_string="uint8 NHWC BGR input, softmax probabilities in R,G,B order",
    )


def gray2_graph():
    """float32 [N,1,28,28] in 0..1 -> m = mean -> [20*(m-0.5), -20*(m-0.5)]."""
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2])
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["m"], name="flatten", axis=1),  # [N,1]
        helper.make_node("Sub", ["m", "k_half"], ["centred"], name="centre"),
        helper.make_node("Mul", ["centred", "k_pm20"], ["scores"], name="split"),  # [N,2]
    ]
    inits = [
        scalar("k_half", 0.5),
        numpy_helper.from_array(np.array([SEPARATION, -SEPARATION], dtype=np.float32),
                                name="k_pm20"),
    ]
    return helper.make_graph(
        nodes, "gray2", [inp], [out], initializer=inits,
        doc_string="logits [20*(m-0.5), -20*(m-0.5)] for labels bright, dark",
    )


def not_image_graph():
    """float32 [N,10] -> MatMul 10x3 -> [N,3]: rank-2 input, not an image."""
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 10])
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])
    weights = (np.arange(30, dtype=np.float32).reshape(10, 3) / 10.0).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["input", "w"], ["scores"], name="matmul")]
    return helper.make_graph(
        nodes, "not_image", [inp], [out],
        initializer=[numpy_helper.from_array(weights, name="w")],
        doc_string="Rank-2 feature-vector input: not an image tensor",
    )


# --------------------------------------------------------------------------
# building all files
# --------------------------------------------------------------------------


def color3_metadata(resize="stretch", labels=RGB_LABELS, name="color3", version="1.0.0"):
    info = model_info(name, "gap-mul")
    info["version"] = version
    return vision_metadata(
        labels,
        preprocess((32, 32), resize=resize),
        {"name": "scores", "scores": "logits"},
        info,
    )


def build_models():
    """Return {filename: bytes} for every file in tests/data."""
    files = {}

    def add(fname, model):
        files[fname] = model.SerializeToString(deterministic=True)

    # 1. color3.onnx
    color3 = make_model(color3_graph(), color3_metadata(),
                        doc="Dominant colour channel classifier (red/green/blue), logits")
    add("color3.onnx", color3)

    # 2. color3_nhwc_u8.onnx
    add("color3_nhwc_u8.onnx", make_model(
        color3_nhwc_u8_graph(),
        vision_metadata(
            RGB_LABELS,
            preprocess((32, 32), layout="NHWC", color="BGR", scale=1.0),
            {"name": "probs", "scores": "probabilities"},
            model_info("color3_nhwc_u8", "reducemean-gather-softmax"),
        ),
        doc="Dominant colour classifier, uint8 NHWC BGR input, probabilities"))

    # 3. color3_fixed4.onnx
    add("color3_fixed4.onnx", make_model(
        color3_graph(batch=4, name="color3_fixed4"),
        color3_metadata(name="color3_fixed4"),
        doc="color3 with a fixed batch dimension of 4"))

    # 4. color3_nometa.onnx (no metadata_props at all, 16x16 input)
    add("color3_nometa.onnx", make_model(
        color3_graph(size=(16, 16), name="color3_nometa"), None,
        doc="color3 with 16x16 input and no metadata_props"))

    # 5. gray2.onnx
    add("gray2.onnx", make_model(
        gray2_graph(),
        vision_metadata(
            ["bright", "dark"],
            preprocess((28, 28), color="GRAY"),
            {"name": "scores", "scores": "logits"},
            model_info("gray2", "gap-affine"),
        ),
        doc="Brightness classifier on a 1-channel image (bright/dark), logits"))

    # 6. two_inputs_not_image.onnx (full, otherwise valid metadata)
    add("two_inputs_not_image.onnx", make_model(
        not_image_graph(),
        vision_metadata(
            ["a", "b", "c"],
            preprocess((32, 32)),
            {"name": "scores", "scores": "logits"},
            model_info("not_image", "matmul"),
        ),
        doc="Rank-2 [N,10] input; the element must reject it as not an image"))

    # 7. labels_mismatch.onnx (5 labels, 3 outputs)
    add("labels_mismatch.onnx", make_model(
        color3_graph(name="labels_mismatch"),
        color3_metadata(labels=["red", "green", "blue", "cyan", "magenta"],
                        name="labels_mismatch"),
        doc="color3 with 5 labels for 3 output classes"))

    # 8. truncated.onnx: first 60% of color3.onnx
    c3 = files["color3.onnx"]
    files["truncated.onnx"] = c3[: int(len(c3) * 0.6)]

    # 9. not_onnx.onnx: plain text
    files["not_onnx.onnx"] = (
        b"This is not an ONNX model.\n"
        b"It is a plain text file with an .onnx extension,\n"
        b"used to test that visionclassify reports a load error.\n"
    )

    # 10. color3_letterbox.onnx
    add("color3_letterbox.onnx", make_model(
        color3_graph(name="color3_letterbox"),
        color3_metadata(resize="letterbox", name="color3_letterbox"),
        doc="color3 with resize=letterbox in its metadata"))

    # labels file
    files["labels_rgb.txt"] = b"R\nG\nB\n"
    # 11. color3_inverse.onnx: the same input and labels as color3, but the *least* present
    # colour wins (gain -20), version 2.0.0: a replacement model that disagrees by design
    # (hot reload tests).
    add("color3_inverse.onnx", make_model(
        color3_graph(name="color3_inverse", gain=-SEPARATION),
        color3_metadata(name="color3_inverse", version="2.0.0"),
        doc="color3 with logits -20*mean: the least present colour channel wins"))

    return files


def write_files(files):
    for fname in sorted(files):
        path = os.path.join(OUT_DIR, fname)
        with open(path, "wb") as f:
            f.write(files[fname])
        print(f"wrote {os.path.relpath(path)} ({len(files[fname])} bytes)")


# --------------------------------------------------------------------------
# --check: verify with onnxruntime
# --------------------------------------------------------------------------

COLOURS = {  # name -> RGB 0..255
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "grey": (128, 128, 128),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def frame_nchw_f32(rgb, h, w):
    a = np.empty((1, 3, h, w), dtype=np.float32)
    for c in range(3):
        a[0, c] = rgb[c] * SCALE_1_255
    return a


def frame_nhwc_u8_bgr(rgb, h, w):
    a = np.empty((1, h, w, 3), dtype=np.uint8)
    a[..., :] = (rgb[2], rgb[1], rgb[0])
    return a


def frame_gray_f32(rgb, h, w):
    # BT.601 luma, like an RGB -> GRAY8 conversion
    luma = round(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])
    return np.full((1, 1, h, w), luma * SCALE_1_255, dtype=np.float32)


def check(files):
    import onnxruntime as ort

    failures = []

    def expect(cond, msg):
        print(("  ok   " if cond else "  FAIL ") + msg)
        if not cond:
            failures.append(msg)

    def session(fname):
        so = ort.SessionOptions()
        so.log_severity_level = 3
        return ort.InferenceSession(files[fname], so, providers=["CPUExecutionProvider"])

    def run(sess, x):
        return sess.run(None, {"input": x})[0]

    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}")

    # metadata round trip
    for fname in sorted(files):
        if not fname.endswith(".onnx") or fname in ("truncated.onnx", "not_onnx.onnx"):
            continue
        m = onnx.load_from_string(files[fname])
        props = {p.key: p.value for p in m.metadata_props}
        onnx.checker.check_model(m, full_check=True)
        if fname == "color3_nometa.onnx":
            expect(props == {}, f"{fname}: no metadata_props")
        else:
            keys = sorted(props)
            expect(keys == ["vision.labels", "vision.model", "vision.output",
                            "vision.preprocess", "vision.schema"],
                   f"{fname}: metadata keys {keys}")
            for k, v in props.items():
                json.loads(v)
        expect(m.ir_version == IR_VERSION and m.opset_import[0].version == OPSET,
               f"{fname}: ir_version {m.ir_version}, opset {m.opset_import[0].version}")

    # color3-like float NCHW models with logits
    for fname, size in [("color3.onnx", 32), ("color3_letterbox.onnx", 32),
                        ("color3_nometa.onnx", 16), ("labels_mismatch.onnx", 32)]:
        print(fname)
        s = session(fname)
        for cls, colour in enumerate(["red", "green", "blue"]):
            p = softmax(run(s, frame_nchw_f32(COLOURS[colour], size, size)))[0]
            expect(int(p.argmax()) == cls and p[cls] > 0.9999,
                   f"{colour} -> class {int(p.argmax())} ({RGB_LABELS[int(p.argmax())]}) "
                   f"conf {p[cls]:.9f}")
        p = softmax(run(s, frame_nchw_f32(COLOURS["grey"], size, size)))[0]
        expect(np.allclose(p, 1 / 3, atol=1e-5), f"grey -> probs {np.round(p, 6).tolist()}")
        batch = np.concatenate([frame_nchw_f32(COLOURS[c], size, size)
                                for c in ("blue", "red", "green")])
        out = run(s, batch)
        expect(out.shape == (3, 3) and out.argmax(axis=1).tolist() == [2, 0, 1],
               f"batch [blue,red,green] -> shape {out.shape} argmax {out.argmax(axis=1).tolist()}")

    # fixed batch 4
    print("color3_fixed4.onnx")
    s = session("color3_fixed4.onnx")
    batch = np.concatenate([frame_nchw_f32(COLOURS[c], 32, 32)
                            for c in ("red", "green", "blue", "grey")])
    p = softmax(run(s, batch))
    expect(p.shape == (4, 3) and p[:3].argmax(axis=1).tolist() == [0, 1, 2]
           and np.allclose(p[3], 1 / 3, atol=1e-5),
           f"batch [red,green,blue,grey] -> argmax {p.argmax(axis=1).tolist()}, "
           f"grey probs {np.round(p[3], 6).tolist()}")
    try:
        run(s, frame_nchw_f32(COLOURS["red"], 32, 32))
        expect(False, "batch of 1 rejected by fixed-batch model")
    except Exception as e:  # noqa: BLE001
        expect(True, f"batch of 1 rejected: {type(e).__name__}")

    # uint8 NHWC BGR with probabilities
    print("color3_nhwc_u8.onnx")
    s = session("color3_nhwc_u8.onnx")
    for cls, colour in enumerate(["red", "green", "blue"]):
        p = run(s, frame_nhwc_u8_bgr(COLOURS[colour], 32, 32))[0]
        expect(int(p.argmax()) == cls and p[cls] > 0.9999 and abs(p.sum() - 1) < 1e-5,
               f"{colour} (fed as BGR) -> class {int(p.argmax())} "
               f"({RGB_LABELS[int(p.argmax())]}) prob {p[cls]:.9f}")
    p = run(s, frame_nhwc_u8_bgr(COLOURS["grey"], 32, 32))[0]
    expect(np.allclose(p, 1 / 3, atol=1e-5), f"grey -> probs {np.round(p, 6).tolist()}")
    # feeding RGB order by mistake swaps red and blue
    wrong = np.empty((1, 32, 32, 3), dtype=np.uint8)
    wrong[..., :] = COLOURS["red"]
    p = run(s, wrong)[0]
    expect(int(p.argmax()) == 2, f"red fed in RGB order (wrong) -> class {int(p.argmax())} (blue)")

    # gray2
    print("gray2.onnx")
    s = session("gray2.onnx")
    labels = ["bright", "dark"]
    for colour, want in [("white", 0), ("black", 1), ("red", 1), ("green", 0),
                         ("blue", 1), ("grey", 0)]:
        x = frame_gray_f32(COLOURS[colour], 28, 28)
        p = softmax(run(s, x))[0]
        expect(int(p.argmax()) == want,
               f"{colour} (luma {x[0, 0, 0, 0] * 255:.0f}) -> {labels[int(p.argmax())]} "
               f"conf {p.max():.6f}")

    # not an image: runs in ORT, but rank 2
    print("two_inputs_not_image.onnx")
    s = session("two_inputs_not_image.onnx")
    shape = s.get_inputs()[0].shape
    out = run(s, np.ones((2, 10), dtype=np.float32))
    expect(len(shape) == 2 and out.shape == (2, 3),
           f"input shape {shape} (rank 2), output {out.shape}")

    # labels mismatch: outputs 3 classes, metadata lists 5 labels
    m = onnx.load_from_string(files["labels_mismatch.onnx"])
    n_labels = len(json.loads({p.key: p.value for p in m.metadata_props}["vision.labels"]))
    expect(n_labels == 5, f"labels_mismatch.onnx: {n_labels} labels vs 3 outputs")

    # broken files must fail to load
    for fname in ("truncated.onnx", "not_onnx.onnx"):
        print(fname)
        try:
            session(fname)
            expect(False, "load fails in onnxruntime")
        except Exception as e:  # noqa: BLE001
            first = str(e).splitlines()[0][:100]
            expect(True, f"load fails in onnxruntime: {type(e).__name__}: {first}")

    # size limit
    for fname in sorted(files):
        expect(len(files[fname]) < 10 * 1024, f"{fname}: {len(files[fname])} bytes < 10 KB")

    if failures:
        print(f"\n{len(failures)} check(s) FAILED")
        return 1
    print("\nall checks passed")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="after writing, verify every model with onnxruntime")
    args = ap.parse_args()
    files = build_models()
    write_files(files)
    if args.check:
        return check(files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
