//! The model's input: size, channels, resize mode and normalisation, and the conversion of an
//! [`Image`] into the model's tensor exactly as `visionclassify` does it for a video frame
//! (gst-plugin/src/preprocess.rs), so a trained model sees the same pixels in the element.

use std::borrow::Cow;

use opencv::{core, imgproc, prelude::*};

use super::decode::to_mat;
use super::error::cv_err;
use super::{DataError, Dataset, Image};
use crate::export::{Preprocess, Resize};

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

impl InputSpec {
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
            layout: "NCHW",
            color: if self.channels == 1 { "GRAY" } else { "RGB" },
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

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

impl Region {
    fn whole(w: usize, h: usize) -> Self {
        Self { x: 0, y: 0, w, h }
    }
}

/// Which part of the image is sampled (`src`) and where it lands in the model input (`dst`);
/// the same arithmetic as `Plan::new` in gst-plugin/src/preprocess.rs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub src: Region,
    pub dst: Region,
}

impl Plan {
    pub(crate) fn new(fw: usize, fh: usize, sw: usize, sh: usize, mode: Resize) -> Self {
        let src = Region::whole(fw, fh);
        let dst = Region::whole(sw, sh);
        let (fw_, fh_, sw_, sh_) = (fw as u128, fh as u128, sw as u128, sh as u128);
        let round_div = |a: u128, b: u128| ((a + b / 2) / b) as usize;
        match mode {
            Resize::Stretch => Self { src, dst },
            Resize::CenterCrop => {
                let (cw, ch) = if fw_ * sh_ > fh_ * sw_ {
                    (round_div(fh_ * sw_, sh_).clamp(1, fw), fh)
                } else {
                    (fw, round_div(fw_ * sh_, sw_).clamp(1, fh))
                };
                Self {
                    src: Region {
                        x: (fw - cw) / 2,
                        y: (fh - ch) / 2,
                        w: cw,
                        h: ch,
                    },
                    dst,
                }
            }
            Resize::Letterbox => {
                let (cw, ch) = if fw_ * sh_ >= fh_ * sw_ {
                    (sw, round_div(fh_ * sw_, fw_).clamp(1, sh))
                } else {
                    (round_div(fw_ * sh_, fh_).clamp(1, sw), sh)
                };
                Self {
                    src,
                    dst: Region {
                        x: (sw - cw) / 2,
                        y: (sh - ch) / 2,
                        w: cw,
                        h: ch,
                    },
                }
            }
        }
    }
}

fn rect(r: Region) -> core::Rect {
    core::Rect::new(r.x as i32, r.y as i32, r.w as i32, r.h as i32)
}

/// Resizes `roi` of `src` to `w`×`h` as the element's `stage` does: exact 2×2 area halvings
/// while both sides stay at least twice the target, then one `INTER_AREA` (shrinking both
/// sides) or `INTER_LINEAR` step.
fn stage(src: &core::Mat, roi: Region, w: usize, h: usize) -> Result<core::Mat, DataError> {
    let err = cv_err("resizing an image to the model's input");
    let mut current = core::Mat::roi(src, rect(roi))
        .map_err(cv_err("cutting the image's region"))?
        .try_clone()
        .map_err(cv_err("cutting the image's region"))?;
    let (mut cw, mut ch) = (roi.w, roi.h);
    while cw >= 2 * w && ch >= 2 * h && cw >= 2 && ch >= 2 {
        let (ew, eh) = (cw & !1, ch & !1);
        let mut next = core::Mat::default();
        let size = core::Size::new((ew / 2) as i32, (eh / 2) as i32);
        if (ew, eh) == (cw, ch) {
            imgproc::resize(&current, &mut next, size, 0.0, 0.0, imgproc::INTER_AREA)
        } else {
            let even = core::Mat::roi(&current, core::Rect::new(0, 0, ew as i32, eh as i32))
                .map_err(cv_err("halving"))?;
            imgproc::resize(&even, &mut next, size, 0.0, 0.0, imgproc::INTER_AREA)
        }
        .map_err(cv_err("halving"))?;
        current = next;
        (cw, ch) = (ew / 2, eh / 2);
    }
    let interpolation = if cw > w && ch > h {
        imgproc::INTER_AREA
    } else {
        imgproc::INTER_LINEAR
    };
    let mut out = core::Mat::default();
    imgproc::resize(
        &current,
        &mut out,
        core::Size::new(w as i32, h as i32),
        0.0,
        0.0,
        interpolation,
    )
    .map_err(err)?;
    Ok(out)
}

/// `img` fitted to the model's size with `mode`, keeping its channels; letterbox borders are
/// black (0). Borrowed when the image already has the size (every mode is then the identity).
pub(crate) fn fit<'a>(img: &'a Image, input: &InputSpec) -> Result<Cow<'a, Image>, DataError> {
    let [h, w] = input.size;
    if img.width == w && img.height == h {
        return Ok(Cow::Borrowed(img));
    }
    let plan = Plan::new(img.width, img.height, w, h, input.resize);
    let c = img.channels;
    let mat = to_mat(img)?;
    let content = if plan.src.w == plan.dst.w && plan.src.h == plan.dst.h {
        core::Mat::roi(&mat, rect(plan.src))
            .map_err(cv_err("cutting the image's region"))?
            .try_clone()
            .map_err(cv_err("cutting the image's region"))?
    } else {
        stage(&mat, plan.src, plan.dst.w, plan.dst.h)?
    };
    let bytes = content
        .data_bytes()
        .map_err(cv_err("reading the resized image"))?;
    let row = plan.dst.w * c;
    if bytes.len() < row * plan.dst.h {
        return Err(DataError::BadInput {
            reason: format!(
                "OpenCV returned {} bytes for a {}x{}x{c} image",
                bytes.len(),
                plan.dst.w,
                plan.dst.h
            ),
        });
    }
    let mut pixels = vec![0u8; w * h * c];
    for y in 0..plan.dst.h {
        let to = ((plan.dst.y + y) * w + plan.dst.x) * c;
        pixels[to..to + row].copy_from_slice(&bytes[y * row..(y + 1) * row]);
    }
    Ok(Cow::Owned(Image {
        width: w,
        height: h,
        channels: c,
        pixels,
    }))
}

/// BT.601 luma, as the element computes it for grey models (no rounding).
#[inline]
pub(crate) fn luma(r: u8, g: u8, b: u8) -> f32 {
    0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b)
}

/// Writes an image that already has the model's size into `out` (exactly `input.len()`
/// values, NCHW): grey data → RGB model by replication, RGB data → grey model by BT.601 luma,
/// then normalisation.
pub(crate) fn write_tensor(img: &Image, input: &InputSpec, out: &mut [f32]) {
    let plane = img.width * img.height;
    match (img.channels, input.channels) {
        (1, _) => {
            for c in 0..input.channels {
                let [mul, add] = input.folded(c);
                for (o, &v) in out[c * plane..(c + 1) * plane].iter_mut().zip(&img.pixels) {
                    *o = f32::from(v) * mul + add;
                }
            }
        }
        (_, 1) => {
            let [mul, add] = input.folded(0);
            for (o, px) in out[..plane].iter_mut().zip(img.pixels.chunks_exact(3)) {
                *o = luma(px[0], px[1], px[2]) * mul + add;
            }
        }
        _ => {
            let folded = [input.folded(0), input.folded(1), input.folded(2)];
            let (r, rest) = out.split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            for (i, px) in img.pixels.chunks_exact(3).enumerate() {
                r[i] = f32::from(px[0]) * folded[0][0] + folded[0][1];
                g[i] = f32::from(px[1]) * folded[1][0] + folded[1][1];
                b[i] = f32::from(px[2]) * folded[2][0] + folded[2][1];
            }
        }
    }
}

/// One image as the model's input tensor (C×H×W, normalised) in `out`, which is cleared and
/// resized to `input.len()`: the same values `visionclassify` computes for this picture as an
/// RGB (or GRAY8) frame with these preprocessing settings.
pub fn tensor_of(img: &Image, input: &InputSpec, out: &mut Vec<f32>) -> Result<(), DataError> {
    input.validate()?;
    super::check_image(img).map_err(|reason| DataError::BadImage {
        index: 0,
        origin: "tensor_of".into(),
        reason,
    })?;
    let fitted = fit(img, input)?;
    out.clear();
    out.resize(input.len(), 0.0);
    write_tensor(&fitted, input, out);
    Ok(())
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
        assert_eq!((pre.layout, pre.color, pre.size), ("NCHW", "RGB", [2, 2]));
        assert_eq!(
            spec(2, 2, 1, Resize::Letterbox).to_preprocess().color,
            "GRAY"
        );
    }

    #[test]
    fn plans_match_the_element() {
        // 4:3 frame into a square: crop the centre 3:3 / letterbox with bars above and below.
        let p = Plan::new(400, 300, 224, 224, Resize::CenterCrop);
        assert_eq!(
            p.src,
            Region {
                x: 50,
                y: 0,
                w: 300,
                h: 300
            }
        );
        let p = Plan::new(400, 300, 224, 224, Resize::Letterbox);
        assert_eq!(
            p.dst,
            Region {
                x: 0,
                y: 28,
                w: 224,
                h: 168
            }
        );
        let p = Plan::new(300, 400, 224, 224, Resize::Letterbox);
        assert_eq!(
            p.dst,
            Region {
                x: 28,
                y: 0,
                w: 168,
                h: 224
            }
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
