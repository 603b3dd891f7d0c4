//! Making trained models smaller without quantization:
//!
//! - [`prune`]: structured L1 filter pruning of `SmallCnn` into a genuinely smaller dense
//!   network (per layer or global; the residual structure stays aligned).
//! - [`distill`]: knowledge distillation of a student from a [`teacher`]: any burn
//!   `Classifier`, or an exported ONNX model run by ONNX Runtime.
//! - [`cost`]: parameters and FLOPs of a `SmallCnn` from its layer shapes.

pub mod cli;
pub mod cost;
pub mod distill;
pub mod prune;
pub mod teacher;

pub use cost::{Cost, Topology, Widths, batch_norm_channels, cost_of, widths_of};
pub use distill::{
    DistillConfig, DistillData, DistillError, DistillOutcome, distill, distillation_loss,
};
pub use prune::{
    PruneConfig, PruneError, PrunePlan, PruneReport, Scope, Target, apply, plan, prune,
};
pub use teacher::{ModelTeacher, OnnxTeacher, Teacher, TeacherError};
