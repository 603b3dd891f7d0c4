//! Model architectures in burn (small residual CNN, EfficientNet-Lite0) and their ONNX export.
