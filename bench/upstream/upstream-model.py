#!/usr/bin/env python3
"""Copies a visionclassify model with the metadata upstream `onnxinference` needs added.

GStreamer 1.26's onnxinference (gst-plugins-bad ext/onnx/gstonnxclient.cpp, createSession)
looks up every output name of the model as a key of the model's custom metadata; the value
becomes the GstTensor id (a GQuark) of that output in the GstTensorMeta it attaches. An output
without such a key fails the session ("Failed to look up id for key ...") unless its name starts
with one of the SSD detector names (detection_scores, detection_boxes, ...). So for a
classifier whose output is `logits` we add `logits -> Gst.Model.Classifier.Logits` (any id
string works: 1.26 has no classifier tensor decoder that would read it). Nothing else is
changed: graph, weights and the vision.* keys stay as they are.

    upstream-model.py IN.onnx OUT.onnx [--id-prefix Gst.Model.Classifier.]
"""
import argparse
import sys

import onnx


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--id-prefix", default="Gst.Model.Classifier.")
    args = ap.parse_args()

    model = onnx.load(args.src)
    present = {p.key: p for p in model.metadata_props}
    for out in model.graph.output:
        tensor_id = args.id_prefix + out.name.capitalize()
        if out.name in present:
            present[out.name].value = tensor_id
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = out.name, tensor_id
        print(f"[upstream-model] output {out.name!r} -> tensor id {tensor_id!r}")
    onnx.save(model, args.dst)
    print(f"[upstream-model] wrote {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
