#!/usr/bin/env python3
"""Generate the malformed-model corpus in tests/data/bad-models/ and its manifest.

Every file is a model that `visionclassify` (and the plain-Rust loading API behind it) must
refuse with a clear error naming the file and the reason, never a panic or an abort. The
manifest `cases.json` gives, per file, what is wrong with it, the stage at which it must
fail ("open": the session or the model description; "first-run": the warm-up run on a
zero batch) and a substring the error message must contain. The files are committed, so
the tests (gst-plugin/tests/bad_models.rs) need no Python.

Install and run (from the repository root):

    python3 -m venv /tmp/badmodels-venv
    /tmp/badmodels-venv/bin/pip install onnx==1.17.0
    /tmp/badmodels-venv/bin/python scripts/bad-models.py

    # optional: also print what the ONNX Runtime Python package says about each file
    /tmp/badmodels-venv/bin/pip install onnxruntime==1.31.1
    /tmp/badmodels-venv/bin/python scripts/bad-models.py --probe

The output is deterministic (byte-identical files on every run). Each file is a few hundred
bytes: "huge" models only *declare* huge shapes.
"""

import argparse
import json
import os
import sys

import onnx
from onnx import TensorProto, helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "data", "bad-models")
OPSET = 17
IR_VERSION = 8
PRODUCER = "visionclassify scripts/bad-models.py"


def _j(obj):
    return json.dumps(obj, separators=(",", ":"))


def graph(inputs=None, outputs=None, nodes=None, initializer=None, name="bad"):
    """A tiny classifier: float [N,3,8,8] -> GlobalAveragePool -> Flatten -> [N,3]."""
    if inputs is None:
        inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])]
    if outputs is None:
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])]
    if nodes is None:
        nodes = [
            helper.make_node("GlobalAveragePool", [inputs[0].name], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], [outputs[0].name], axis=1),
        ]
    return helper.make_graph(nodes, name, inputs, outputs, initializer=initializer or [])


def model(g, metadata=None, opset=OPSET, ir_version=IR_VERSION):
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name=PRODUCER)
    m.ir_version = ir_version
    if metadata:
        helper.set_model_props(m, metadata)
    return m.SerializeToString(deterministic=True)


def image_input(shape, dtype=TensorProto.FLOAT, name="image"):
    return helper.make_tensor_value_info(name, dtype, shape)


def scores_output(shape, dtype=TensorProto.FLOAT, name="logits"):
    return helper.make_tensor_value_info(name, dtype, shape)


def reshaped_to(shape):
    """Input [N,3,8,8] reshaped to a constant `shape`: the graph's output shape is whatever
    the output declares, and the run fails when the element count does not match."""
    inp = image_input(["N", 3, 8, 8])
    const = helper.make_node(
        "Constant", [], ["shape"],
        value=helper.make_tensor("shape_value", TensorProto.INT64, [len(shape)], shape))
    return inp, [const, helper.make_node("Reshape", ["image", "shape"], ["logits"])]


def with_meta(**keys):
    """vision.* metadata from keyword arguments (labels=..., preprocess=...): dicts and
    lists are written as JSON, strings as they are (to write malformed JSON)."""
    out = {}
    for key, value in keys.items():
        out[f"vision.{key}"] = value if isinstance(value, str) else _j(value)
    return out


def build():
    """Return [(file name, bytes, what, stage, reason)]."""
    cases = []

    def add(name, data, what, reason, stage="open"):
        cases.append((name, data, what, stage, reason))

    good = model(graph())

    # --- the file itself ----------------------------------------------------------------
    add("empty.onnx", b"", "an empty file", "the file is empty")
    add("truncated.onnx", good[: len(good) // 2], "a valid model cut in half",
        "Protobuf parsing failed")
    add("not_protobuf.onnx", b"this is a text file, not a model\n" * 4,
        "text, not protobuf", "Protobuf parsing failed")
    # A valid protobuf message of another type (a TensorProto): it parses as a ModelProto
    # with no graph and no opset.
    # A bare GraphProto (no ModelProto around it): valid protobuf whose fields ModelProto
    # does not have, so it parses as a model without a graph.
    bare = helper.make_graph([], "bare", [image_input(["N", 3, 8, 8])],
                             [scores_output(["N", 3])])
    add("protobuf_not_onnx.onnx", bare.SerializeToString(deterministic=True),
        "a serialized GraphProto, not a ModelProto", "No graph was found")
    no_graph = helper.make_model(graph(), opset_imports=[helper.make_opsetid("", OPSET)])
    no_graph.ir_version = IR_VERSION
    no_graph.ClearField("graph")
    add("no_graph.onnx", no_graph.SerializeToString(deterministic=True),
        "a ModelProto without a graph", "No graph was found")
    add("ir_version_unsupported.onnx", model(graph(), ir_version=99),
        "IR version 99", "Unsupported model IR version: 99")
    add("opset_unsupported.onnx", model(graph(), opset=99),
        "default-domain opset 99", "Opset 99")
    add("unknown_op.onnx",
        model(graph(nodes=[helper.make_node("FrobnicateImage", ["image"], ["logits"])])),
        "a node of an operator that does not exist", "FrobnicateImage")
    ext = helper.make_tensor("weights", TensorProto.FLOAT, [3, 3], [0.0] * 9)
    ext.ClearField("float_data")
    ext.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "missing-weights.bin"), ("offset", "0"), ("length", "36")):
        entry = ext.external_data.add()
        entry.key, entry.value = k, v
    ext_nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weights"], ["logits"]),
    ]
    add("external_data_missing.onnx", model(graph(nodes=ext_nodes, initializer=[ext])),
        "weights in an external file that does not exist",
        "External data path does not exist")
    ext.external_data[0].value = "../../../../etc/passwd"
    add("external_data_outside.onnx", model(graph(nodes=ext_nodes, initializer=[ext])),
        "weights in an external file outside the model's folder",
        "External data path escapes model directory")

    # --- the input ----------------------------------------------------------------------
    const_out = helper.make_node(
        "Constant", [], ["logits"],
        value=helper.make_tensor("v", TensorProto.FLOAT, [1, 3], [0.0, 1.0, 2.0]))
    add("no_inputs.onnx",
        model(graph(inputs=[], outputs=[scores_output([1, 3])], nodes=[const_out])),
        "a graph without inputs", "it has no input")
    two = [image_input(["N", 3, 8, 8], name="left"), image_input(["N", 3, 8, 8], name="right")]
    add("two_image_inputs.onnx",
        model(graph(inputs=two, nodes=[
            helper.make_node("Add", ["left", "right"], ["sum"]),
            helper.make_node("GlobalAveragePool", ["sum"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["logits"], axis=1),
        ])),
        "two image inputs", "it has 2 inputs")
    add("input_5d.onnx",
        model(graph(inputs=[image_input(["N", 2, 3, 8, 8])], nodes=[
            helper.make_node("ReduceMean", ["image"], ["logits"], axes=[1, 3, 4],
                             keepdims=0)])),
        "a 5-D input", "an image input has 4 dimensions")
    add("dynamic_hw.onnx", model(graph(inputs=[image_input(["N", 3, "H", "W"])])),
        "symbolic height and width and no vision.preprocess size",
        "input height is dynamic and vision.preprocess gives no size")
    add("zero_height.onnx", model(graph(inputs=[image_input(["N", 3, 0, 8])])),
        "height 0", "input height is 0")
    add("zero_batch.onnx", model(graph(inputs=[image_input([0, 3, 8, 8])])),
        "batch dimension 0", "batch dimension is 0")
    add("negative_width.onnx", model(graph(inputs=[image_input(["N", 3, 8, -5])])),
        "width -5 (ONNX Runtime reports it as unknown, -1)",
        "input width is dynamic and vision.preprocess gives no size")
    add("dims_overflow_usize.onnx",
        model(graph(inputs=[image_input(["N", 3, 1 << 40, 1 << 40])])),
        "height and width 2^40: the element count overflows 64 bits",
        "values per image (MAX_IMAGE_VALUES)")
    add("dims_overflow_i32.onnx",
        model(graph(inputs=[image_input(["N", 3, 1, (1 << 31) + 1])])),
        "width 2^31 + 1, beyond OpenCV's 32-bit sizes", "values per image (MAX_IMAGE_VALUES)")
    add("input_several_gb.onnx",
        model(graph(inputs=[image_input(["N", 3, 40000, 40000])])),
        "a 3x40000x40000 input: 19 GB of float32 per image",
        "more than the limit of 67108864 values per image (MAX_IMAGE_VALUES)")
    add("fixed_batch_several_gb.onnx",
        model(graph(inputs=[image_input([100000, 3, 64, 64])],
                    outputs=[scores_output([100000, 3])])),
        "a fixed batch of 100000 images of 3x64x64: 4.9 GB per run",
        "100000 images × 12288 values per image is more than the limit of 268435456 values"
        " per batch (MAX_BATCH_VALUES)")
    add("input_int64.onnx",
        model(graph(inputs=[image_input(["N", 3, 8, 8], dtype=TensorProto.INT64)], nodes=[
            helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("GlobalAveragePool", ["f"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["logits"], axis=1)])),
        "an int64 input", "supported are float32 and uint8")
    add("input_too_many_channels.onnx",
        model(graph(inputs=[image_input(["N", 4, 8, 8])], outputs=[scores_output(["N", 4])])),
        "4 channels in both candidate places", "neither dimension 1 nor 3")
    # The declared size is huge, the input's own dimensions are symbolic.
    add("dynamic_hw_huge_size.onnx",
        model(graph(inputs=[image_input(["N", 3, "H", "W"])]),
              with_meta(preprocess={"size": [100000, 100000]})),
        "symbolic height and width, vision.preprocess size 100000x100000",
        "values per image (MAX_IMAGE_VALUES)")

    # --- the output ---------------------------------------------------------------------
    add("no_outputs.onnx", model(graph(outputs=[], nodes=[])),
        "a graph without outputs",
        "ONNX Runtime could not load it: Exception during initialization")
    inp, nodes = reshaped_to([-1, 3, 2])
    add("output_3d.onnx",
        model(graph(inputs=[inp], outputs=[scores_output(["N", 3, 2])], nodes=nodes)),
        "scores of shape [N, 3, 2]", "which is not [N, classes]")
    zero = [helper.make_node("Constant", [], [k], value=helper.make_tensor(
        k, TensorProto.INT64, [1], [v])) for k, v in (("zero", 0), ("one", 1))]
    add("classes_zero.onnx",
        model(graph(outputs=[scores_output(["N", 0])], nodes=zero + [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("Slice", ["flat", "zero", "zero", "one"], ["logits"])])),
        "scores of shape [N, 0]", "has shape [-1, 0]: 0 classes")
    inp, nodes = reshaped_to([-1, 1000000000])
    add("classes_1e9.onnx",
        model(graph(inputs=[inp], outputs=[scores_output(["N", 1000000000])], nodes=nodes)),
        "scores of shape [N, 10^9]",
        "1000000000 classes, more than the limit of 1048576 classes (MAX_CLASSES)")
    add("output_int64.onnx",
        model(graph(outputs=[scores_output(["N"], dtype=TensorProto.INT64, name="label")],
                    nodes=[
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("ArgMax", ["flat"], ["label"], axis=1, keepdims=0)])),
        "an int64 class-id output", "float32 scores are supported")
    add("output_named_missing.onnx",
        model(graph(), with_meta(output={"name": "probabilities"})),
        "vision.output names an output the graph does not have",
        "vision.output names `probabilities`, which is not an output")
    # NonZero's output length is known only when run: the class count is unknown.
    add("classes_dynamic_no_labels.onnx",
        model(graph(outputs=[scores_output(["N", "C"])], nodes=[
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("NonZero", ["flat"], ["where"]),
            helper.make_node("Cast", ["where"], ["logits"], to=TensorProto.FLOAT)])),
        "a symbolic class count and no labels",
        "the class count is unknown and no labels are given")
    inp, nodes = reshaped_to([-1, 7])
    add("fails_at_first_run.onnx",
        model(graph(inputs=[inp], outputs=[scores_output(["N", 7])], nodes=nodes)),
        "reshapes 3x8x8 = 192 values to rows of 7: fails only when run",
        "fails on its first run", stage="first-run")

    # --- the contract -------------------------------------------------------------------
    add("labels_count_mismatch.onnx",
        model(graph(), with_meta(labels=["cat", "dog", "bird", "fish", "frog"])),
        "5 labels for 3 classes", "vision.labels has 5 labels but the model outputs 3 classes")
    add("labels_not_json.onnx", model(graph(), with_meta(labels="cat,dog,bird")),
        "vision.labels is not JSON", "metadata key `vision.labels` is not valid")
    add("labels_not_strings.onnx", model(graph(), with_meta(labels=[1, 2, 3])),
        "vision.labels holds numbers", "metadata key `vision.labels` is not valid")
    add("preprocess_wrong_type.onnx",
        model(graph(), with_meta(preprocess={"size": "8x8", "scale": "1/255"})),
        "vision.preprocess size and scale as strings",
        "metadata key `vision.preprocess` is not valid")
    add("preprocess_wrong_length.onnx",
        model(graph(), with_meta(preprocess={"mean": [0.5, 0.5]})),
        "vision.preprocess mean of 2 values", "invalid length 2")
    add("preprocess_nan.onnx",
        model(graph(), with_meta(preprocess='{"mean":[NaN,0,0]}')),
        "vision.preprocess mean holds NaN (not JSON)",
        "metadata key `vision.preprocess` is not valid")
    add("preprocess_std_zero.onnx",
        model(graph(), with_meta(preprocess={"std": [1.0, 0.0, 1.0]})),
        "vision.preprocess std of 0 (a division by zero)", "std [1.0, 0.0, 1.0] holds 0")
    add("preprocess_scale_infinite.onnx",
        model(graph(), with_meta(preprocess={"scale": 1e39})),
        "vision.preprocess scale 1e39, beyond float32", "number out of range")
    add("preprocess_scale_zero.onnx",
        model(graph(), with_meta(preprocess={"scale": 0})),
        "vision.preprocess scale 0 (every input value the same)",
        "scale 0 is not a finite number other than 0")
    add("preprocess_size_zero.onnx",
        model(graph(inputs=[image_input(["N", 3, "H", "W"])]),
              with_meta(preprocess={"size": [0, 8]})),
        "symbolic input, vision.preprocess size 0x8", "size [0, 8] has a side of 0")
    add("schema_from_the_future.onnx", model(graph(), with_meta(schema='"7"')),
        "vision.schema 7", "contract version 7")
    return cases


def write(cases):
    os.makedirs(OUT_DIR, exist_ok=True)
    names = {c[0] for c in cases}
    for old in os.listdir(OUT_DIR):
        if old.endswith(".onnx") and old not in names:
            os.remove(os.path.join(OUT_DIR, old))
    manifest = []
    for name, data, what, stage, reason in cases:
        assert len(data) < 16 * 1024, f"{name} is {len(data)} bytes: keep the corpus small"
        with open(os.path.join(OUT_DIR, name), "wb") as f:
            f.write(data)
        manifest.append({"file": name, "what": what, "stage": stage, "reason": reason})
    with open(os.path.join(OUT_DIR, "cases.json"), "w") as f:
        json.dump({"generator": "scripts/bad-models.py", "cases": manifest}, f, indent=1)
        f.write("\n")


def probe(cases):
    import onnxruntime as ort

    for name, *_ in cases:
        path = os.path.join(OUT_DIR, name)
        try:
            s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            ins = [(i.name, i.shape, i.type) for i in s.get_inputs()]
            outs = [(o.name, o.shape, o.type) for o in s.get_outputs()]
            print(f"{name}: LOADS inputs={ins} outputs={outs}")
        except Exception as e:  # noqa: BLE001 - we print whatever ORT says
            print(f"{name}: {str(e)[-300:]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", action="store_true",
                        help="also load each file in the onnxruntime Python package")
    args = parser.parse_args()
    cases = build()
    write(cases)
    print(f"wrote {len(cases)} cases to {os.path.relpath(OUT_DIR, ROOT)}", file=sys.stderr)
    if args.probe:
        probe(cases)


if __name__ == "__main__":
    main()
