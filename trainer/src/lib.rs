//! The visionclassify trainer. Its datasets, training, evaluation and ONNX export land with
//! the trainer issue; until then this crate is an empty member of the workspace.
