//! Runs an exported model with ONNX Runtime on real photos, preprocessed as its
//! `vision.preprocess` metadata tells `visionclassify` to, and checks the classes it finds.
//!
//! The preprocessing is the element's own code ([`gstvision::preprocess`],
//! gst-plugin/src/preprocess.rs) run on the photo as an RGB frame: OpenCV resizing (exact 2×2
//! area halvings, then `INTER_AREA` or `INTER_LINEAR`), then each value
//! `(pixel × scale − mean[c]) / std[c]`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::TensorRef;

use gstvision::preprocess::{
    ChannelOrder, Frame, Layout, Normalize, PixelFormat, PreprocessError, Preprocessor, SlotMut,
    SlotSpec, YuvColor,
};

use super::metadata::{INPUT_NAME, OUTPUT_NAME, Preprocess, Resize};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read photo {path}: {reason}")]
    Photo { path: PathBuf, reason: String },
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    Runtime { path: PathBuf, reason: String },
    #[error("ONNX Runtime cannot load the exported model: {0}")]
    Load(String),
    #[error("ONNX Runtime failed to run the exported model: {0}")]
    Run(String),
    #[error("cannot preprocess a photo as the model's metadata says: {0}")]
    Preprocess(#[from] PreprocessError),
    #[error("the model gives {got} scores per image, expected {expected}")]
    Output { got: usize, expected: usize },
}

/// An 8-bit RGB image, rows packed.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Decodes a PNG (8 or 16 bit; grey, RGB, with or without alpha) into RGB.
pub fn read_png(path: &Path) -> Result<RgbImage, VerifyError> {
    let err = |reason: String| VerifyError::Photo {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| err(e.to_string()))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| err("image too large".into()))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| err(e.to_string()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err(err("palette not expanded".into())),
    };
    let mut data = Vec::with_capacity(w * h * 3);
    for p in buf[..info.buffer_size()].chunks_exact(channels) {
        match channels {
            1 | 2 => data.extend_from_slice(&[p[0], p[0], p[0]]),
            _ => data.extend_from_slice(&p[..3]),
        }
    }
    Ok(RgbImage {
        width: w,
        height: h,
        data,
    })
}

/// `img` as the element sees a mapped packed-RGB video frame.
fn frame_of(img: &RgbImage) -> Frame<'_> {
    Frame {
        format: PixelFormat::Rgb,
        width: img.width,
        height: img.height,
        planes: [&img.data, &[], &[]],
        strides: [img.width * 3, 0, 0],
        yuv: YuvColor::default(),
    }
}

/// The element's preprocessing of `img` into `slot` (letterbox borders black).
fn preprocess(
    img: &RgbImage,
    spec: SlotSpec,
    normalize: Normalize,
    resize: Resize,
    slot: SlotMut<'_>,
) -> Result<(), VerifyError> {
    Preprocessor::new(spec, normalize, resize.into())
        .with_letterbox_pad(0)
        .run(&frame_of(img), slot)
        .map_err(VerifyError::from)
}

/// The tensor slot `pre` describes: its size, layout (`NHWC` or NCHW) and colour (`BGR`,
/// `GRAY` or RGB).
fn slot_of(pre: &Preprocess) -> SlotSpec {
    let [height, width] = pre.size;
    SlotSpec {
        layout: pre.layout.into(),
        width,
        height,
        channels: pre.color.into(),
    }
}

/// Appends one image to `out` as the element's preprocessing with `pre` gives it.
fn append_tensor(img: &RgbImage, pre: &Preprocess, out: &mut Vec<f32>) -> Result<(), VerifyError> {
    let spec = slot_of(pre);
    let start = out.len();
    out.resize(start + spec.len(), 0.0);
    let normalize = Normalize {
        scale: pre.scale,
        mean: pre.mean,
        std: pre.std,
    };
    let done = preprocess(
        img,
        spec,
        normalize,
        pre.resize,
        SlotMut::F32(&mut out[start..]),
    );
    if done.is_err() {
        out.truncate(start);
    }
    done
}

/// Fits `img` into a `width`×`height` image as `resize` says, with the element's code: the
/// 8-bit pixels `visionclassify` normalises (letterbox borders black).
///
/// # Panics
/// When `img`, `width` or `height` is empty, or `img.data` is shorter than
/// `img.width × img.height × 3` bytes (an image from [`read_png`] never is).
pub fn fit(img: &RgbImage, resize: Resize, width: usize, height: usize) -> RgbImage {
    let spec = SlotSpec {
        layout: Layout::Nhwc,
        width,
        height,
        channels: ChannelOrder::Rgb,
    };
    let mut data = vec![0u8; spec.len()];
    // A u8 slot takes the resized pixels as they are; the normalisation is not applied.
    let slot = SlotMut::U8(&mut data);
    if let Err(e) = preprocess(img, spec, Normalize::default(), resize, slot) {
        panic!(
            "fitting a {}x{} image to {width}x{height}: {e}",
            img.width, img.height
        );
    }
    RgbImage {
        width,
        height,
        data,
    }
}

/// Appends one image as the element's tensor for `pre`: fitted with `pre.resize` (an image of
/// `pre.size` is taken as it is), NCHW or NHWC, RGB, BGR or GRAY (BT.601 luma), each value
/// `(pixel × scale − mean[c]) / std[c]`.
///
/// # Panics
/// As [`fit`] does, and when a `std` of a channel used is 0 or not finite.
pub fn push_tensor(img: &RgbImage, pre: &Preprocess, out: &mut Vec<f32>) {
    if let Err(e) = append_tensor(img, pre, out) {
        panic!("preprocessing a {}x{} image: {e}", img.width, img.height);
    }
}

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Loads the ONNX Runtime library once per process (ort allows one environment).
pub fn load_runtime(library: &Path) -> Result<&'static Environment, VerifyError> {
    let env = ENVIRONMENT.get_or_init(|| {
        if library.is_absolute() && !library.exists() {
            return Err("the file does not exist (scripts/setup.sh fetches it)".into());
        }
        ort::init_from(library)
            .map_err(|e| e.to_string())?
            .with_name("vision-trainer")
            .build()
            .map_err(|e| e.to_string())
    });
    env.as_ref().map_err(|reason| VerifyError::Runtime {
        path: library.to_path_buf(),
        reason: reason.clone(),
    })
}

/// One class and its softmax probability.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassScore {
    pub index: usize,
    pub label: String,
    pub probability: f32,
}

/// An ORT session over an exported model that maps a preprocessed `input` tensor to its
/// `logits`.
pub struct LogitsSession {
    session: Session,
    classes: usize,
}

impl LogitsSession {
    /// `classes`: the scores per image the model must give.
    pub fn new(env: &Environment, model: &[u8], classes: usize) -> Result<Self, VerifyError> {
        let load = |e: ort::Error| VerifyError::Load(e.to_string());
        let session = Session::builder(env)
            .map_err(load)?
            .commit_from_memory(model)
            .map_err(load)?;
        Ok(LogitsSession { session, classes })
    }

    /// The `logits` output for an already preprocessed input tensor of `shape`: `shape[0]`
    /// rows of `classes` scores, row-major.
    pub fn run(&mut self, input: &[f32], shape: [usize; 4]) -> Result<Vec<f32>, VerifyError> {
        let run = |e: ort::Error| VerifyError::Run(e.to_string());
        let tensor = TensorRef::from_array_view((shape, input)).map_err(run)?;
        let outputs = self
            .session
            .run(ort::inputs![INPUT_NAME => tensor])
            .map_err(run)?;
        let value = outputs
            .get(OUTPUT_NAME)
            .ok_or_else(|| VerifyError::Run(format!("no output `{OUTPUT_NAME}`")))?;
        let (_, logits) = value.try_extract_tensor::<f32>().map_err(run)?;
        let batch = shape[0];
        if logits.len() != self.classes * batch {
            return Err(VerifyError::Output {
                got: logits.len() / batch.max(1),
                expected: self.classes,
            });
        }
        Ok(logits.to_vec())
    }
}

/// An ORT session over an exported model that classifies photos, preprocessed as its
/// metadata says.
pub struct Classifier {
    session: LogitsSession,
    labels: Vec<String>,
    preprocess: Preprocess,
}

impl Classifier {
    pub fn new(
        env: &Environment,
        model: &[u8],
        labels: Vec<String>,
        preprocess: Preprocess,
    ) -> Result<Classifier, VerifyError> {
        Ok(Classifier {
            session: LogitsSession::new(env, model, labels.len())?,
            labels,
            preprocess,
        })
    }

    /// Class probabilities of each image, best first.
    pub fn classify(&mut self, images: &[RgbImage]) -> Result<Vec<Vec<ClassScore>>, VerifyError> {
        let spec = slot_of(&self.preprocess);
        let (h, w, c) = (spec.height, spec.width, spec.channel_count());
        let mut input = Vec::with_capacity(images.len() * spec.len());
        for img in images {
            append_tensor(img, &self.preprocess, &mut input)?;
        }
        let shape = if spec.layout == Layout::Nhwc {
            [images.len(), h, w, c]
        } else {
            [images.len(), c, h, w]
        };
        let logits = self.session.run(&input, shape)?;
        Ok(logits
            .chunks_exact(self.labels.len().max(1))
            .map(|l| ranked(l, &self.labels))
            .collect())
    }
}

/// Softmax of `logits`, sorted by probability.
pub fn ranked(logits: &[f32], labels: &[String]) -> Vec<ClassScore> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let mut scores: Vec<ClassScore> = exp
        .iter()
        .enumerate()
        .map(|(index, &e)| ClassScore {
            index,
            label: labels
                .get(index)
                .cloned()
                .unwrap_or_else(|| index.to_string()),
            probability: e / sum,
        })
        .collect();
    scores.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    scores
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: usize, h: usize, f: impl Fn(usize, usize) -> [u8; 3]) -> RgbImage {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&f(x, y));
            }
        }
        RgbImage {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn center_crop_keeps_the_middle_square() {
        // Red | green | blue thirds of a 30×10 image: the centre square is all green.
        let img = image(30, 10, |x, _| match x {
            0..10 => [255, 0, 0],
            10..20 => [0, 255, 0],
            _ => [0, 0, 255],
        });
        let out = fit(&img, Resize::CenterCrop, 5, 5);
        assert!(
            out.data.chunks(3).all(|p| p == [0, 255, 0]),
            "{:?}",
            out.data
        );
        // Stretch keeps the width: red, green, blue from left to right, each output pixel the
        // mean of exactly its third (area resampling covers every source column once).
        let out = fit(&img, Resize::Stretch, 3, 1);
        assert_eq!(out.data, [255, 0, 0, 0, 255, 0, 0, 0, 255]);
        let out = fit(&img, Resize::Letterbox, 6, 6);
        assert_eq!(&out.data[..3], &[0, 0, 0]);
        // The picture is 10 × 6/30 = 2 rows high, centred: rows 2 and 3.
        let px = |x: usize, y: usize| &out.data[(y * 6 + x) * 3..(y * 6 + x) * 3 + 3];
        assert_eq!(px(0, 2), &[255, 0, 0]);
    }

    #[test]
    fn area_resize_averages() {
        let img = image(8, 8, |x, _| if x % 2 == 0 { [0; 3] } else { [200; 3] });
        let out = fit(&img, Resize::Stretch, 2, 2);
        assert!(out.data.iter().all(|&v| v == 100), "{:?}", out.data);
    }

    #[test]
    fn normalisation_follows_the_metadata() {
        let img = image(1, 1, |_, _| [255, 127, 0]);
        let pre = Preprocess {
            size: [1, 1],
            layout: gstvision::contract::LayoutName::Nchw,
            color: gstvision::contract::ColorName::Rgb,
            resize: Resize::Stretch,
            scale: 1.0,
            mean: [127.0; 3],
            std: [128.0; 3],
        };
        let mut t = Vec::new();
        push_tensor(&img, &pre, &mut t);
        assert_eq!(t, [1.0, 0.0, -127.0 / 128.0]);
    }

    #[test]
    fn softmax_ranks() {
        let labels = vec!["a".to_string(), "b".into(), "c".into()];
        let r = ranked(&[0.0, 2.0, 1.0], &labels);
        assert_eq!(r[0].label, "b");
        assert_eq!(r[2].label, "a");
        let total: f32 = r.iter().map(|s| s.probability).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
