//! The model's input: size, channels, resize mode and normalisation, and the conversion of an
//! [`Image`] into the model's tensor. The conversion is `visionclassify`'s own code
//! ([`gstvision::preprocess`], gst-plugin/src/preprocess.rs) run on the image as an RGB or
//! GRAY8 frame, so a trained model sees the element's pixels by construction.

use std::borrow::Cow;

use gstvision::preprocess::{
    ChannelOrder, Frame, Layout, Normalize, PixelFormat, PreprocessError, Preprocessor, ResizeMode,
    SlotMut, SlotSpec, YuvColor,
};

use super::{DataError, Dataset, Image};
use crate::onnx::metadata::{Preprocess, Resize};
use gstvision::contract::{ColorName, ContractError, LayoutName, PreprocessContract};

/// What the model takes: `size` = `[height, width]`, `channels` 1 (grey) or 3 (RGB), how an
/// image is fitted to the size, and the normalisation `(pixel × scale − mean[c]) / std[c]`.
/// The layout is always NCHW.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub size: [usize; 2],
    pub channels: usize,
    pub resize: Resize,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Why a model's `vision.preprocess` does not describe an input the trainer can feed.
#[derive(Debug, thiserror::Error)]
pub enum InputContractError {
    /// The element rejects the metadata too (the same error it reports).
    #[error(transparent)]
    Contract(#[from] ContractError),
    #[error("vision.preprocess: {0}")]
    Unsupported(String),
}

impl InputSpec {
    /// The input a model's `vision.preprocess` describes, read as `visionclassify` reads it
    /// (model.rs): a fixed channel dimension of the graph input decides grey or colour, the
    /// contract's size stands in for symbolic height/width, and what the contract leaves out
    /// takes the element's default for a float input (scale 1/255, mean 0, std 1, stretch).
    /// `dims` are the graph input's `[N, C, H, W]` (`None` = symbolic). BGR and NHWC models
    /// are refused: the trainer's tensors are RGB or grey, NCHW.
    pub fn from_contract(
        pre: &PreprocessContract,
        dims: &[Option<usize>],
    ) -> Result<InputSpec, InputContractError> {
        let unsupported = |reason: String| Err(InputContractError::Unsupported(reason));
        if pre.layout == Some(LayoutName::Nhwc) {
            return unsupported("layout NHWC: only NCHW inputs are supported".into());
        }
        let channels = match (dims.get(1).copied().flatten(), pre.color) {
            (_, Some(ColorName::Bgr)) => {
                return unsupported("color BGR: only RGB and GRAY inputs are supported".into());
            }
            (Some(3), Some(ColorName::Gray)) => {
                return unsupported("it says GRAY but the input has 3 channels".into());
            }
            (Some(c @ (1 | 3)), _) => c,
            (Some(c), _) => {
                return unsupported(format!(
                    "the input has {c} channels: 1 (GRAY) or 3 (RGB) are supported"
                ));
            }
            (None, Some(ColorName::Gray)) => 1,
            (None, _) => 3,
        };
        let size = match (pre.size, dims.get(2..4)) {
            (Some(s), _) => s,
            (None, Some([Some(h), Some(w)])) => [*h, *w],
            _ => return unsupported("the input size is symbolic and it gives no size".into()),
        };
        // The element's limit, checked before any image of this size is made.
        let limit = gstvision::model::MAX_IMAGE_VALUES;
        if size[0]
            .checked_mul(size[1])
            .and_then(|v| v.checked_mul(channels))
            .is_none_or(|v| v > limit || v == 0)
        {
            return unsupported(format!(
                "an input of {channels} × {} × {} is empty or more than the limit of {limit} values per image (MAX_IMAGE_VALUES)",
                size[0], size[1]
            ));
        }
        Ok(InputSpec {
            size,
            channels,
            resize: pre.resize.map_or(Resize::Stretch, Into::into),
            scale: pre.scale.unwrap_or(1.0 / 255.0),
            mean: pre.mean.unwrap_or([0.0; 3]),
            std: pre.std.unwrap_or([1.0; 3]),
        })
    }

    /// The normalised value of a raw 0..255 `pixel` in tensor channel `channel`:
    /// `(pixel × scale − mean[c]) / std[c]`, computed as `pixel × (scale / std) − mean / std`
    /// like `visionclassify` does (the two agree to within one float rounding).
    pub fn normalise(&self, pixel: u8, channel: usize) -> f32 {
        self.normalise_f32(f32::from(pixel), channel)
    }

    /// [`InputSpec::normalise`] of a raw value that need not be an integer (luma of RGB).
    #[inline]
    pub(crate) fn normalise_f32(&self, raw: f32, channel: usize) -> f32 {
        let [mul, add] = self.folded(channel);
        raw * mul + add
    }

    /// `[scale / std, −mean / std]` of a channel.
    #[inline]
    fn folded(&self, c: usize) -> [f32; 2] {
        [self.scale / self.std[c], -self.mean[c] / self.std[c]]
    }

    /// The `vision.preprocess` contract for this input (layout NCHW, color RGB or GRAY).
    pub fn to_preprocess(&self) -> Preprocess {
        Preprocess {
            size: self.size,
            layout: LayoutName::Nchw,
            color: if self.channels == 1 {
                ColorName::Gray
            } else {
                ColorName::Rgb
            },
            resize: self.resize,
            scale: self.scale,
            mean: self.mean,
            std: self.std,
        }
    }

    /// `[height, width]`.
    pub fn height(&self) -> usize {
        self.size[0]
    }

    pub fn width(&self) -> usize {
        self.size[1]
    }

    /// Values in one image's tensor: channels × height × width.
    pub fn len(&self) -> usize {
        self.channels * self.size[0] * self.size[1]
    }

    /// True when the size or channel count is zero ([`InputSpec::validate`] refuses it).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the size (1..=16384 per side), channels (1 or 3), and that scale, mean and std
    /// are finite with std non-zero for the channels used.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |reason: String| Err(DataError::BadInput { reason });
        let [h, w] = self.size;
        if !(1..=16384).contains(&h) || !(1..=16384).contains(&w) {
            return bad(format!(
                "size {h}x{w} (height x width) must be 1..=16384 per side"
            ));
        }
        if self.channels != 1 && self.channels != 3 {
            return bad(format!("{} channels; 1 (grey) or 3 (RGB)", self.channels));
        }
        if !self.scale.is_finite() || self.scale == 0.0 {
            return bad(format!("scale {} must be finite and non-zero", self.scale));
        }
        for c in 0..self.channels {
            if !self.mean[c].is_finite() {
                return bad(format!("mean[{c}] = {} is not finite", self.mean[c]));
            }
            if !self.std[c].is_finite() || self.std[c] == 0.0 {
                return bad(format!(
                    "std[{c}] = {} must be finite and non-zero",
                    self.std[c]
                ));
            }
        }
        Ok(())
    }
}

impl From<Resize> for ResizeMode {
    fn from(resize: Resize) -> Self {
        match resize {
            Resize::Stretch => ResizeMode::Stretch,
            Resize::CenterCrop => ResizeMode::CenterCrop,
            Resize::Letterbox => ResizeMode::Letterbox,
        }
    }
}

/// `img` as the element sees a mapped video frame: packed RGB, or GRAY8 for a 1-channel
/// image, rows `width × channels` bytes apart.
fn frame_of(img: &Image) -> Frame<'_> {
    Frame {
        format: if img.channels == 1 {
            PixelFormat::Gray8
        } else {
            PixelFormat::Rgb
        },
        width: img.width,
        height: img.height,
        planes: [&img.pixels, &[], &[]],
        strides: [img.width * img.channels, 0, 0],
        yuv: YuvColor::default(),
    }
}

fn order_of(channels: usize) -> ChannelOrder {
    if channels == 1 {
        ChannelOrder::Gray
    } else {
        ChannelOrder::Rgb
    }
}

/// The element's errors in the data layer's terms.
fn preprocess_err(e: PreprocessError) -> DataError {
    DataError::BadInput {
        reason: e.to_string(),
    }
}

/// `img` fitted to the model's size with `input.resize`, keeping its channels; letterbox
/// borders are black (0). Borrowed when the image already has the size (every mode is then
/// the identity).
///
/// The element's preprocessing into a u8 NHWC slot, which takes the resized pixels without
/// normalisation: the packed image the element would have normalised, so [`write_tensor`] of
/// the result equals [`tensor_of`] of `img`.
pub(crate) fn fit<'a>(img: &'a Image, input: &InputSpec) -> Result<Cow<'a, Image>, DataError> {
    let [h, w] = input.size;
    if img.width == w && img.height == h {
        return Ok(Cow::Borrowed(img));
    }
    let spec = SlotSpec {
        layout: Layout::Nhwc,
        width: w,
        height: h,
        channels: order_of(img.channels),
    };
    let mut pixels = vec![0u8; spec.len()];
    // Normalisation applies to f32 slots only.
    Preprocessor::new(spec, Normalize::default(), input.resize.into())
        .with_letterbox_pad(0)
        .run(&frame_of(img), SlotMut::U8(&mut pixels))
        .map_err(preprocess_err)?;
    Ok(Cow::Owned(Image {
        width: w,
        height: h,
        channels: img.channels,
        pixels,
    }))
}

/// BT.601 luma without rounding: the weights the element uses for grey models, here for
/// the colour jitter (a grey model's input itself comes from the element's Gray path).
#[inline]
pub(crate) fn luma(r: u8, g: u8, b: u8) -> f32 {
    0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b)
}

/// The element's preprocessing of `img` into `out` (exactly `input.len()` values, NCHW):
/// fitted with `input.resize` (letterbox borders black), grey data → RGB model by
/// replication, RGB data → grey model by BT.601 luma, then normalised.
fn preprocess(img: &Image, input: &InputSpec, out: &mut [f32]) -> Result<(), DataError> {
    let spec = SlotSpec {
        layout: Layout::Nchw,
        width: input.width(),
        height: input.height(),
        channels: order_of(input.channels),
    };
    let normalize = Normalize {
        scale: input.scale,
        mean: input.mean,
        std: input.std,
    };
    Preprocessor::new(spec, normalize, input.resize.into())
        .with_letterbox_pad(0)
        .run(&frame_of(img), SlotMut::F32(out))
        .map_err(preprocess_err)
}

/// Writes an image that already has the model's size (from [`fit`], perhaps augmented) into
/// `out` (exactly `input.len()` values, NCHW), as [`tensor_of`] does.
///
/// # Panics
/// When `img` or `input` were not checked (`check_image`, [`InputSpec::validate`]) or `out`
/// is not `input.len()` long: the [`super::Loader`] checks all three before its first batch,
/// and an image of the model's size is never handed to OpenCV, so nothing else can fail.
pub(crate) fn write_tensor(img: &Image, input: &InputSpec, out: &mut [f32]) {
    if let Err(e) = preprocess(img, input, out) {
        panic!(
            "preprocessing a checked {}x{} image: {e}",
            img.width, img.height
        );
    }
}

/// One image as the model's input tensor (C×H×W, normalised) in `out`, which is cleared and
/// resized to `input.len()`: `visionclassify`'s own preprocessing of this picture as an RGB
/// (or GRAY8) frame with these settings, so the values are the element's, bit for bit.
pub fn tensor_of(img: &Image, input: &InputSpec, out: &mut Vec<f32>) -> Result<(), DataError> {
    input.validate()?;
    super::check_image(img).map_err(|reason| DataError::BadImage {
        index: 0,
        origin: "tensor_of".into(),
        reason,
    })?;
    out.clear();
    out.resize(input.len(), 0.0);
    preprocess(img, input, out)
}

impl Dataset {
    /// A copy with every image fitted to the model's size (channels kept), as the
    /// [`super::Loader`] would do for each image in each epoch. Use it once before training on
    /// large pictures so epochs only augment; the loader passes images that already have the
    /// size through unchanged, so the batches are the same.
    pub fn fitted(&self, input: &InputSpec) -> Result<Dataset, DataError> {
        input.validate()?;
        self.validate()?;
        let images = self
            .images
            .iter()
            .map(|img| fit(img, input).map(Cow::into_owned))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Dataset {
            images,
            classes: self.classes.clone(),
            labels: self.labels.clone(),
            origins: self.origins.clone(),
            predefined_test: self.predefined_test.clone(),
            description: format!(
                "{} fitted to {}x{}",
                self.description, input.size[1], input.size[0]
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(h: usize, w: usize, channels: usize, resize: Resize) -> InputSpec {
        InputSpec {
            size: [h, w],
            channels,
            resize,
            scale: 1.0 / 255.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    fn solid(w: usize, h: usize, rgb: [u8; 3]) -> Image {
        Image {
            width: w,
            height: h,
            channels: 3,
            pixels: (0..w * h).flat_map(|_| rgb).collect(),
        }
    }

    /// Sizes a malformed model may declare: refused with the limit named, before any image
    /// of that size is made.
    #[test]
    fn inputs_beyond_the_limit_or_of_other_channel_counts_are_refused() {
        let pre = PreprocessContract::default();
        let huge = [Some(1), Some(3), Some(40_000), Some(40_000)];
        let overflow = [None, Some(3), Some(1 << 40), Some(1 << 40)];
        for dims in [&huge[..], &overflow[..]] {
            let e = InputSpec::from_contract(&pre, dims).expect_err("beyond the limit");
            assert!(e.to_string().contains("MAX_IMAGE_VALUES"), "{e}");
        }
        let e = InputSpec::from_contract(&pre, &[None, Some(4), Some(8), Some(8)])
            .expect_err("4 channels");
        assert!(e.to_string().contains("4 channels"), "{e}");
        let fine = InputSpec::from_contract(&pre, &[None, Some(3), Some(4096), Some(4096)])
            .expect("4096 × 4096 RGB fits");
        assert_eq!((fine.size, fine.channels), ([4096, 4096], 3));
    }

    #[test]
    fn normalise_is_the_contract_formula() {
        let s = spec(2, 2, 3, Resize::Stretch);
        for c in 0..3 {
            for p in [0u8, 1, 128, 255] {
                let want = (f32::from(p) / 255.0 - s.mean[c]) / s.std[c];
                assert!((s.normalise(p, c) - want).abs() < 1e-5, "{p} {c}");
            }
        }
        let pre = s.to_preprocess();
        assert_eq!(
            (pre.layout.name(), pre.color.name(), pre.size),
            ("NCHW", "RGB", [2, 2])
        );
        assert_eq!(
            spec(2, 2, 1, Resize::Letterbox)
                .to_preprocess()
                .color
                .name(),
            "GRAY"
        );
    }

    #[test]
    fn letterbox_pads_black_and_keeps_colour() {
        let img = solid(40, 20, [200, 30, 60]);
        let s = spec(10, 10, 3, Resize::Letterbox);
        let mut out = Vec::new();
        tensor_of(&img, &s, &mut out).expect("tensor");
        assert_eq!(out.len(), 300);
        // Rows 0..2 and 8..10 are the black bars, rows 3..7 the picture (20/40*10 = 5 rows
        // centred at 2..7 after rounding: (10-5)/2 = 2).
        let at = |c: usize, x: usize, y: usize| out[c * 100 + y * 10 + x];
        assert!((at(0, 5, 0) - s.normalise(0, 0)).abs() < 1e-6);
        assert!((at(0, 5, 9) - s.normalise(0, 0)).abs() < 1e-6);
        for (c, v) in [200u8, 30, 60].into_iter().enumerate() {
            assert!(
                (at(c, 5, 4) - s.normalise(v, c)).abs() < 1e-5,
                "channel {c}"
            );
        }
    }

    #[test]
    fn grey_and_colour_conversions() {
        let img = solid(3, 3, [200, 30, 60]);
        let s = spec(3, 3, 1, Resize::Stretch);
        let mut out = Vec::new();
        tensor_of(&img, &s, &mut out).expect("tensor");
        let y = 0.299 * 200.0 + 0.587 * 30.0 + 0.114 * 60.0;
        assert_eq!(out.len(), 9);
        assert!((out[4] - s.normalise_f32(y, 0)).abs() < 1e-6);

        let grey = Image {
            width: 2,
            height: 1,
            channels: 1,
            pixels: vec![10, 250],
        };
        let s = spec(1, 2, 3, Resize::Stretch);
        tensor_of(&grey, &s, &mut out).expect("tensor");
        for c in 0..3 {
            assert!((out[c * 2] - s.normalise(10, c)).abs() < 1e-6);
            assert!((out[c * 2 + 1] - s.normalise(250, c)).abs() < 1e-6);
        }
    }

    /// The element's preprocessing of `img` as an RGB frame, set up by hand from `s`.
    /// A grey model (`s.channels` 1) gets the element's Gray channel order.
    fn element(img: &Image, s: &InputSpec, mode: ResizeMode) -> Vec<f32> {
        let frame = Frame {
            format: PixelFormat::Rgb,
            width: img.width,
            height: img.height,
            planes: [&img.pixels, &[], &[]],
            strides: [img.width * 3, 0, 0],
            yuv: YuvColor::default(),
        };
        let slot = SlotSpec {
            layout: Layout::Nchw,
            width: s.width(),
            height: s.height(),
            channels: if s.channels == 1 {
                ChannelOrder::Gray
            } else {
                ChannelOrder::Rgb
            },
        };
        let normalize = Normalize {
            scale: s.scale,
            mean: s.mean,
            std: s.std,
        };
        let mut out = vec![f32::NAN; slot.len()];
        Preprocessor::new(slot, normalize, mode)
            .run(&frame, SlotMut::F32(&mut out))
            .expect("element preprocessing");
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn tensor_of_is_the_element_bit_for_bit_on_a_real_photo() {
        let path = crate::test_deps("data/photos/chelsea.png");
        let img = super::super::decode::decode_file(&path).expect("decode");
        assert_eq!((img.width, img.height, img.channels), (451, 300, 3));
        for (s, mode) in [
            (
                spec(224, 224, 3, Resize::CenterCrop),
                ResizeMode::CenterCrop,
            ),
            (spec(64, 96, 3, Resize::Letterbox), ResizeMode::Letterbox),
            // 451×300 is almost 96×64 already; a square shows the black borders too.
            (spec(64, 64, 3, Resize::Letterbox), ResizeMode::Letterbox),
            // An RGB photo for a grey model: the element's Gray path (BT.601 luma).
            (spec(28, 28, 1, Resize::Stretch), ResizeMode::Stretch),
        ] {
            let mut ours = Vec::new();
            tensor_of(&img, &s, &mut ours).expect("tensor");
            assert!(bits(&ours) == bits(&element(&img, &s, mode)), "{mode:?}");
            // The loader's path (fit once, then write) gives the same tensor.
            let fitted = fit(&img, &s).expect("fit");
            let mut written = vec![f32::NAN; s.len()];
            write_tensor(&fitted, &s, &mut written);
            assert!(bits(&written) == bits(&ours), "{mode:?} through fit");
        }
    }

    #[test]
    fn bad_inputs_are_refused() {
        let img = solid(2, 2, [1, 2, 3]);
        let mut out = Vec::new();
        let mut s = spec(2, 2, 2, Resize::Stretch);
        let err = tensor_of(&img, &s, &mut out).unwrap_err().to_string();
        assert!(err.contains("2 channels"), "{err}");
        s.channels = 3;
        s.std[1] = 0.0;
        let err = tensor_of(&img, &s, &mut out).unwrap_err().to_string();
        assert!(err.contains("std[1] = 0"), "{err}");
    }
}
