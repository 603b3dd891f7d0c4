//! Runs an exported model with ONNX Runtime on real photos, preprocessed exactly as its
//! `vision.preprocess` metadata tells `visionclassify` to, and checks the classes it finds.
//!
//! Resampling mirrors the element (gst-plugin/src/preprocess.rs, OpenCV): the fitted region
//! is resized to 8-bit pixels with bilinear interpolation (pixel centres at +0.5), or with
//! area averaging when it shrinks by more than 2× in both directions; then each value is
//! `(pixel × scale − mean[c]) / std[c]`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::TensorRef;

use crate::export::{INPUT_NAME, OUTPUT_NAME, Preprocess, Resize};

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

impl RgbImage {
    fn px(&self, x: usize, y: usize) -> &[u8] {
        let i = (y * self.width + x) * 3;
        &self.data[i..i + 3]
    }
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

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    x: usize,
    y: usize,
    w: usize,
    h: usize,
}

/// Fits `img` into a `width`×`height` image as `resize` says (the element's geometry).
pub fn fit(img: &RgbImage, resize: Resize, width: usize, height: usize) -> RgbImage {
    let (fw, fh) = (img.width, img.height);
    let full_src = Region {
        x: 0,
        y: 0,
        w: fw,
        h: fh,
    };
    let full_dst = Region {
        x: 0,
        y: 0,
        w: width,
        h: height,
    };
    let round_div = |a: usize, b: usize| (a + b / 2) / b.max(1);
    let (src, dst) = match resize {
        Resize::Stretch => (full_src, full_dst),
        Resize::CenterCrop => {
            let (cw, ch) = if fw * height > fh * width {
                (round_div(fh * width, height).clamp(1, fw), fh)
            } else {
                (fw, round_div(fw * height, width).clamp(1, fh))
            };
            let src = Region {
                x: (fw - cw) / 2,
                y: (fh - ch) / 2,
                w: cw,
                h: ch,
            };
            (src, full_dst)
        }
        Resize::Letterbox => {
            let (cw, ch) = if fw * height >= fh * width {
                (width, round_div(fh * width, fw).clamp(1, height))
            } else {
                (round_div(fw * height, fh).clamp(1, width), height)
            };
            let dst = Region {
                x: (width - cw) / 2,
                y: (height - ch) / 2,
                w: cw,
                h: ch,
            };
            (full_src, dst)
        }
    };
    let mut out = RgbImage {
        width,
        height,
        data: vec![0; width * height * 3],
    };
    let area = src.w > 2 * dst.w && src.h > 2 * dst.h;
    for y in 0..dst.h {
        for x in 0..dst.w {
            let px = if area {
                area_sample(img, src, dst, x, y)
            } else {
                bilinear_sample(img, src, dst, x, y)
            };
            let o = ((dst.y + y) * width + dst.x + x) * 3;
            out.data[o..o + 3].copy_from_slice(&px);
        }
    }
    out
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// OpenCV INTER_LINEAR: source coordinate `(x + 0.5) · scale − 0.5`, clamped at the edges.
fn bilinear_sample(img: &RgbImage, src: Region, dst: Region, x: usize, y: usize) -> [u8; 3] {
    let coord = |d: usize, s_len: usize, d_len: usize| {
        let f = ((d as f32 + 0.5) * s_len as f32 / d_len as f32 - 0.5).max(0.0);
        let i0 = (f.floor() as usize).min(s_len - 1);
        let i1 = (i0 + 1).min(s_len - 1);
        (i0, i1, f - i0 as f32)
    };
    let (x0, x1, fx) = coord(x, src.w, dst.w);
    let (y0, y1, fy) = coord(y, src.h, dst.h);
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let p = |xx: usize, yy: usize| f32::from(img.px(src.x + xx, src.y + yy)[c]);
        let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
        let bottom = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
        *o = to_u8(top * (1.0 - fy) + bottom * fy);
    }
    out
}

/// OpenCV INTER_AREA for shrinking: the mean of the source pixels the destination pixel
/// covers, partly covered ones weighted by their coverage.
fn area_sample(img: &RgbImage, src: Region, dst: Region, x: usize, y: usize) -> [u8; 3] {
    let sx = src.w as f64 / dst.w as f64;
    let sy = src.h as f64 / dst.h as f64;
    let (x0, x1) = (x as f64 * sx, (x + 1) as f64 * sx);
    let (y0, y1) = (y as f64 * sy, (y + 1) as f64 * sy);
    let mut acc = [0f64; 3];
    let mut total = 0f64;
    let mut yy = y0.floor() as usize;
    while (yy as f64) < y1 && yy < src.h {
        let wy = (y1.min(yy as f64 + 1.0) - y0.max(yy as f64)).max(0.0);
        let mut xx = x0.floor() as usize;
        while (xx as f64) < x1 && xx < src.w {
            let wx = (x1.min(xx as f64 + 1.0) - x0.max(xx as f64)).max(0.0);
            let p = img.px(src.x + xx, src.y + yy);
            for c in 0..3 {
                acc[c] += f64::from(p[c]) * wx * wy;
            }
            total += wx * wy;
            xx += 1;
        }
        yy += 1;
    }
    acc.map(|a| to_u8((a / total.max(f64::MIN_POSITIVE)) as f32))
}

/// Appends one image as NCHW (or NHWC) floats: `(pixel × scale − mean[c]) / std[c]`, RGB.
pub fn push_tensor(img: &RgbImage, pre: &Preprocess, out: &mut Vec<f32>) {
    let norm = |v: u8, c: usize| (f32::from(v) * pre.scale - pre.mean[c]) / pre.std[c];
    let channel = |c: usize| if pre.color == "BGR" { 2 - c } else { c };
    if pre.layout == "NHWC" {
        for p in img.data.chunks_exact(3) {
            out.extend((0..3).map(|c| norm(p[channel(c)], c)));
        }
    } else {
        for c in 0..3 {
            out.extend(img.data.chunks_exact(3).map(|p| norm(p[channel(c)], c)));
        }
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
        let [h, w] = self.preprocess.size;
        let mut input = Vec::with_capacity(images.len() * 3 * h * w);
        for img in images {
            let fitted = fit(img, self.preprocess.resize, w, h);
            push_tensor(&fitted, &self.preprocess, &mut input);
        }
        let shape = if self.preprocess.layout == "NHWC" {
            [images.len(), h, w, 3]
        } else {
            [images.len(), 3, h, w]
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
        let out = fit(&img, Resize::Stretch, 3, 1);
        assert_eq!(out.data, [255, 0, 0, 0, 255, 0, 0, 0, 255]);
        let out = fit(&img, Resize::Letterbox, 6, 6);
        assert_eq!(&out.data[..3], &[0, 0, 0]);
        assert_eq!(out.px(0, 2), &[255, 0, 0]);
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
            layout: "NCHW",
            color: "RGB",
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
