//! `visionclassify`: classifies every frame with an ONNX model and attaches the result as
//! metadata; the video passes through untouched.

use gst::glib;
use gst::prelude::*;

mod imp;
pub mod video;

glib::wrapper! {
    pub struct VisionClassify(ObjectSubclass<imp::VisionClassify>) @extends gst::Element, gst::Object;
}

/// `execution-provider`: where ONNX Runtime runs the model.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstVisionClassifyProvider")]
pub enum ProviderChoice {
    #[default]
    #[enum_value(name = "CPU", nick = "cpu")]
    Cpu = 0,
    #[enum_value(
        name = "CUDA (NVIDIA GPU, needs the onnxruntime-gpu library)",
        nick = "cuda"
    )]
    Cuda = 1,
    #[enum_value(
        name = "TensorRT (NVIDIA GPU, needs the onnxruntime-gpu library and TensorRT 10)",
        nick = "tensorrt"
    )]
    TensorRt = 2,
    #[enum_value(name = "Best available: TensorRT, then CUDA, then CPU", nick = "auto")]
    Auto = 3,
}

/// `resize`: how a frame is fitted to the model's input size.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstVisionClassifyResize")]
pub enum ResizeChoice {
    #[default]
    #[enum_value(
        name = "As the model's metadata says (stretch if it says nothing)",
        nick = "model"
    )]
    Model = 0,
    #[enum_value(name = "Stretch the whole frame to the input size", nick = "stretch")]
    Stretch = 1,
    #[enum_value(name = "Keep the aspect ratio and pad with black", nick = "letterbox")]
    Letterbox = 2,
    #[enum_value(
        name = "Keep the aspect ratio and crop the centre",
        nick = "center-crop"
    )]
    CenterCrop = 3,
}

/// `resize-filter`: the resampling kernel of the resize.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstVisionClassifyResizeFilter")]
pub enum ResizeFilterChoice {
    #[default]
    #[enum_value(
        name = "Area average when shrinking (OpenCV INTER_AREA): no aliasing; bilinear on an enlarged axis",
        nick = "area"
    )]
    Area = 0,
    #[enum_value(
        name = "Bilinear, 2 taps per axis (OpenCV INTER_LINEAR, torch interpolate antialias=False): aliases when shrinking more than 2x",
        nick = "bilinear"
    )]
    Bilinear = 1,
    #[enum_value(name = "Nearest pixel (OpenCV INTER_NEAREST)", nick = "nearest")]
    Nearest = 2,
}

impl From<ResizeFilterChoice> for crate::preprocess::ResizeFilter {
    fn from(choice: ResizeFilterChoice) -> Self {
        match choice {
            ResizeFilterChoice::Area => Self::Area,
            ResizeFilterChoice::Bilinear => Self::Bilinear,
            ResizeFilterChoice::Nearest => Self::Nearest,
        }
    }
}

/// `channel-order`: the colour order the model expects.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstVisionClassifyChannelOrder")]
pub enum ChannelChoice {
    #[default]
    #[enum_value(
        name = "As the model's metadata says (RGB if it says nothing)",
        nick = "model"
    )]
    Model = 0,
    #[enum_value(name = "RGB", nick = "rgb")]
    Rgb = 1,
    #[enum_value(name = "BGR", nick = "bgr")]
    Bgr = 2,
}

/// `target`: what is classified.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstVisionClassifyTarget")]
pub enum TargetChoice {
    #[default]
    #[enum_value(name = "The whole frame", nick = "frame")]
    Frame = 0,
    #[enum_value(
        name = "Each region of interest a detector attached (GstVideoRegionOfInterestMeta)",
        nick = "roi"
    )]
    Roi = 1,
}

/// `scores`: what the model's output holds.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstVisionClassifyScores")]
pub enum ScoresChoice {
    #[default]
    #[enum_value(
        name = "As the model's metadata says (logits if it says nothing)",
        nick = "model"
    )]
    Model = 0,
    #[enum_value(name = "Logits: softmax is applied", nick = "logits")]
    Logits = 1,
    #[enum_value(name = "Probabilities: taken as they are", nick = "probabilities")]
    Probabilities = 2,
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    crate::meta::register();
    gst::Element::register(
        Some(plugin),
        "visionclassify",
        gst::Rank::NONE,
        VisionClassify::static_type(),
    )
}
