//! Quantization (int8 QDQ static/dynamic, fp16) as ONNX graph transformations calibrated with ONNX Runtime.
