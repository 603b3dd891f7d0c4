"""The anchor: ONNX Runtime's own static quantizer (QDQ, per-channel, int8) on the same float
model and the same calibration tensors our `vision-trainer quantize` used.

usage: ort_quantize.py MODEL.onnx CALIBRATION.npy OUT.onnx METHOD ACTIVATIONS
  METHOD: entropy | minmax | percentile   ACTIVATIONS: s8 | u8
Only the benchmark uses Python; bench/quantize/run.sh installs onnxruntime==1.31.1 for it.
"""

import sys
import time

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)


class Reader(CalibrationDataReader):
    def __init__(self, path, input_name):
        self.data = np.load(path)
        self.name = input_name
        self.i = 0

    def get_next(self):
        if self.i >= len(self.data):
            return None
        x = self.data[self.i : self.i + 1]
        self.i += 1
        return {self.name: x}

    def rewind(self):
        self.i = 0


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    model, calib, out, method, acts = sys.argv[1:]
    input_name = onnx.load(model, load_external_data=False).graph.input[0].name
    methods = {
        "entropy": CalibrationMethod.Entropy,
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
    }
    start = time.time()
    quantize_static(
        model,
        out,
        Reader(calib, input_name),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8 if acts == "s8" else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=methods[method],
    )
    print(f"ORT quantize_static ({method}, per-channel, {acts}s8): {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
