//! Data augmentation: per-image geometric and photometric operations on 8-bit images at the
//! model's size, and MixUp/CutMix on whole batches.
//!
//! Every operation has a probability and a strength; [`AugmentConfig::scaled`] multiplies all
//! of them for hyper-parameter search. Geometric operations (random resized crop, rotation,
//! flip) are composed into one affine warp (OpenCV `warpAffine`, bilinear, the border
//! mirrored where a rotation uncovers it); a flip alone is an exact mirror. Randomness comes from the caller's seeded RNG,
//! so a seed reproduces every augmented batch.

use opencv::{core, imgproc, prelude::*};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::decode::to_mat;
use super::error::cv_err;
use super::input::luma;
use super::{Batch, DataError, Image};

/// Random resized crop: a region of `scale` (fraction of the area) and `ratio` (width/height,
/// log-uniform) is cut out and stretched back to the full size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CropAug {
    pub p: f32,
    pub scale: [f32; 2],
    pub ratio: [f32; 2],
}

impl Default for CropAug {
    fn default() -> Self {
        Self {
            p: 0.5,
            scale: [0.8, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
        }
    }
}

/// Rotation about the centre by up to ±`degrees`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RotateAug {
    pub p: f32,
    pub degrees: f32,
}

impl Default for RotateAug {
    fn default() -> Self {
        Self {
            p: 0.3,
            degrees: 10.0,
        }
    }
}

/// Colour jitter: brightness, contrast and saturation factors drawn from `1 ± value`
/// (saturation only changes RGB images).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ColorJitter {
    pub p: f32,
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
}

impl Default for ColorJitter {
    fn default() -> Self {
        Self {
            p: 0.5,
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
        }
    }
}

/// Gaussian blur with sigma drawn from `sigma` (pixels at the model's size).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlurAug {
    pub p: f32,
    pub sigma: [f32; 2],
}

impl Default for BlurAug {
    /// Off (p = 0): small inputs such as 28×28 lose too much from blur.
    fn default() -> Self {
        Self {
            p: 0.0,
            sigma: [0.1, 1.5],
        }
    }
}

/// Random erasing (cutout): a rectangle covering `area` (fraction of the image, aspect
/// 0.3..3.3) is filled with random noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EraseAug {
    pub p: f32,
    pub area: [f32; 2],
}

impl Default for EraseAug {
    fn default() -> Self {
        Self {
            p: 0.25,
            area: [0.02, 0.15],
        }
    }
}

/// MixUp or CutMix on a batch: with probability `p`, λ ~ Beta(`alpha`, `alpha`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MixAug {
    pub p: f32,
    pub alpha: f32,
}

impl Default for MixAug {
    /// Off (p = 0), alpha 0.2 once switched on.
    fn default() -> Self {
        Self { p: 0.0, alpha: 0.2 }
    }
}

/// Which augmentations run and how strongly. `Default` is a light setting (crop 0.8–1 of the
/// area half of the time, flip, ±10° rotation 30 %, mild colour jitter, random erasing 25 %,
/// no blur, no MixUp/CutMix); [`AugmentConfig::none`] switches everything off. Missing fields
/// in a TOML/JSON file take these defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AugmentConfig {
    pub crop: CropAug,
    /// Probability of a horizontal flip.
    pub hflip: f32,
    pub rotate: RotateAug,
    pub color: ColorJitter,
    pub blur: BlurAug,
    pub erase: EraseAug,
    pub mixup: MixAug,
    pub cutmix: MixAug,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            crop: CropAug::default(),
            hflip: 0.5,
            rotate: RotateAug::default(),
            color: ColorJitter::default(),
            blur: BlurAug::default(),
            erase: EraseAug::default(),
            mixup: MixAug::default(),
            cutmix: MixAug { p: 0.0, alpha: 1.0 },
        }
    }
}

fn clamp01(v: f32) -> f32 {
    v.clamp(0.0, 1.0)
}

impl AugmentConfig {
    /// Everything off: images pass unchanged.
    pub fn none() -> Self {
        let mut c = Self::default();
        c.crop.p = 0.0;
        c.hflip = 0.0;
        c.rotate.p = 0.0;
        c.color.p = 0.0;
        c.blur.p = 0.0;
        c.erase.p = 0.0;
        c.mixup.p = 0.0;
        c.cutmix.p = 0.0;
        c
    }

    /// All probabilities and strengths multiplied by `strength` (0 = [`AugmentConfig::none`],
    /// 1 = unchanged, 2 = twice as strong), clamped to valid values: probabilities to 1 (flip
    /// to 0.5, since always flipping is no augmentation), the crop's smallest area to 0.05,
    /// rotation to 180°, jitter to 1, erased area to 0.5.
    pub fn scaled(&self, strength: f32) -> AugmentConfig {
        if strength == 1.0 || !strength.is_finite() {
            return *self;
        }
        let s = strength.max(0.0);
        let mut c = *self;
        c.crop.p = clamp01(c.crop.p * s);
        c.crop.scale[0] = (1.0 - (1.0 - c.crop.scale[0]) * s).clamp(0.05, c.crop.scale[1]);
        c.crop.ratio = c.crop.ratio.map(|r| (r.max(1e-3).ln() * s).exp());
        c.hflip = (c.hflip * s).clamp(0.0, 0.5_f32.max(self.hflip.min(1.0)));
        c.rotate.p = clamp01(c.rotate.p * s);
        c.rotate.degrees = (c.rotate.degrees * s).min(180.0);
        c.color.p = clamp01(c.color.p * s);
        c.color.brightness = clamp01(c.color.brightness * s);
        c.color.contrast = clamp01(c.color.contrast * s);
        c.color.saturation = clamp01(c.color.saturation * s);
        c.blur.p = clamp01(c.blur.p * s);
        c.blur.sigma[1] = c.blur.sigma[0] + (c.blur.sigma[1] - c.blur.sigma[0]) * s;
        c.erase.p = clamp01(c.erase.p * s);
        c.erase.area[1] = (c.erase.area[1] * s).clamp(c.erase.area[0].min(0.5), 0.5);
        c.mixup.p = clamp01(c.mixup.p * s);
        c.mixup.alpha = (c.mixup.alpha * s).max(1e-3);
        c.cutmix.p = clamp01(c.cutmix.p * s);
        c.cutmix.alpha = (c.cutmix.alpha * s).max(1e-3);
        c
    }

    /// Checks probabilities (0..=1), ranges (low ≤ high) and strengths.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |reason: String| Err(DataError::BadAugment { reason });
        for (name, p) in [
            ("crop.p", self.crop.p),
            ("hflip", self.hflip),
            ("rotate.p", self.rotate.p),
            ("color.p", self.color.p),
            ("blur.p", self.blur.p),
            ("erase.p", self.erase.p),
            ("mixup.p", self.mixup.p),
            ("cutmix.p", self.cutmix.p),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} = {p} is a probability: 0 to 1"));
            }
        }
        let range = |name: &str, r: [f32; 2], lo: f32, hi: f32| {
            if r[0].is_finite() && r[1].is_finite() && lo <= r[0] && r[0] <= r[1] && r[1] <= hi {
                Ok(())
            } else {
                Err(DataError::BadAugment {
                    reason: format!(
                        "{name} = [{}, {}] must be a range with {lo} <= low <= high <= {hi}",
                        r[0], r[1]
                    ),
                })
            }
        };
        range("crop.scale", self.crop.scale, 0.01, 1.0)?;
        range("crop.ratio", self.crop.ratio, 0.05, 20.0)?;
        range("blur.sigma", self.blur.sigma, 0.01, 50.0)?;
        range("erase.area", self.erase.area, 0.0, 1.0)?;
        if !(0.0..=180.0).contains(&self.rotate.degrees) {
            return bad(format!(
                "rotate.degrees = {} must be 0 to 180",
                self.rotate.degrees
            ));
        }
        for (name, v) in [
            ("color.brightness", self.color.brightness),
            ("color.contrast", self.color.contrast),
            ("color.saturation", self.color.saturation),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("{name} = {v} must be 0 to 1 (factor 1 ± value)"));
            }
        }
        for (name, m) in [("mixup", self.mixup), ("cutmix", self.cutmix)] {
            if !(m.alpha.is_finite() && m.alpha > 0.0) {
                return bad(format!("{name}.alpha = {} must be above 0", m.alpha));
            }
        }
        Ok(())
    }

    /// True when no per-image operation can fire.
    pub fn is_identity_per_image(&self) -> bool {
        self.crop.p == 0.0
            && self.hflip == 0.0
            && self.rotate.p == 0.0
            && self.color.p == 0.0
            && self.blur.p == 0.0
            && self.erase.p == 0.0
    }

    /// Applies the per-image operations to `img` (any size, 1 or 3 channels) in place:
    /// crop/rotation/flip, colour jitter, blur, erasing; shape and channels stay the same.
    pub fn augment_image(&self, img: &mut Image, rng: &mut impl Rng) -> Result<(), DataError> {
        let (w, h) = (img.width as f64, img.height as f64);
        let flip = rng.random::<f32>() < self.hflip;
        let crop = (rng.random::<f32>() < self.crop.p).then(|| {
            let area = w * h * f64::from(uniform(rng, self.crop.scale));
            let log_r = [self.crop.ratio[0].ln(), self.crop.ratio[1].ln()];
            let ratio = f64::from(uniform(rng, log_r).exp());
            let cw = (area * ratio).sqrt().min(w);
            let ch = (area / ratio).sqrt().min(h);
            let x0 = f64::from(rng.random::<f32>()) * (w - cw);
            let y0 = f64::from(rng.random::<f32>()) * (h - ch);
            [x0, y0, cw, ch]
        });
        let angle = (rng.random::<f32>() < self.rotate.p)
            .then(|| uniform(rng, [-self.rotate.degrees, self.rotate.degrees]));
        if crop.is_some() || angle.is_some() {
            let m = affine(img.width, img.height, flip, angle, crop);
            warp(img, &m)?;
        } else if flip {
            hflip(img);
        }
        if rng.random::<f32>() < self.color.p {
            let c = &self.color;
            let factor = |rng: &mut _, v: f32| uniform(rng, [1.0 - v, 1.0 + v]).max(0.0);
            let b = factor(rng, c.brightness);
            let k = factor(rng, c.contrast);
            let s = factor(rng, c.saturation);
            jitter(img, b, k, s);
        }
        if rng.random::<f32>() < self.blur.p {
            let sigma = uniform(rng, self.blur.sigma);
            blur(img, f64::from(sigma))?;
        }
        if rng.random::<f32>() < self.erase.p {
            erase(img, self.erase.area, rng);
        }
        Ok(())
    }

    /// MixUp or CutMix on a whole batch (at most one of them, chosen with their
    /// probabilities): image i is mixed with image N−1−i (the batch is already shuffled),
    /// targets are mixed with the same λ, and `labels` become the dominant label.
    pub fn mix_batch(&self, batch: &mut Batch, rng: &mut impl Rng) {
        let u = rng.random::<f32>();
        if u < self.mixup.p {
            let lambda = sample_beta(self.mixup.alpha, self.mixup.alpha, rng);
            mixup(batch, lambda);
        } else if u < self.mixup.p + self.cutmix.p {
            let lambda = sample_beta(self.cutmix.alpha, self.cutmix.alpha, rng);
            cutmix(batch, lambda, rng);
        }
    }
}

/// Uniform in `[r[0], r[1]]` (r[0] when the range is empty).
fn uniform(rng: &mut impl Rng, r: [f32; 2]) -> f32 {
    r[0] + (r[1] - r[0]) * rng.random::<f32>()
}

/// 3×3 matrix product `a · b` (row-major, last row 0 0 1).
fn mul(a: [[f64; 3]; 3], b: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut out = [[0.0; 3]; 3];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    out
}

fn translate(x: f64, y: f64) -> [[f64; 3]; 3] {
    [[1.0, 0.0, x], [0.0, 1.0, y], [0.0, 0.0, 1.0]]
}

/// The output→source pixel map of flip, then rotation about the centre, then the crop
/// `[x0, y0, w, h]` stretched to the whole image. Pixel centres are at +0.5, so a flip alone
/// maps x to exactly `width − 1 − x`.
pub(crate) fn affine(
    width: usize,
    height: usize,
    flip: bool,
    degrees: Option<f32>,
    crop: Option<[f64; 4]>,
) -> [[f64; 3]; 2] {
    let (w, h) = (width as f64, height as f64);
    let mut m = translate(0.5, 0.5);
    if flip {
        m = mul([[-1.0, 0.0, w], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], m);
    }
    if let Some(deg) = degrees {
        let (s, c) = f64::from(deg).to_radians().sin_cos();
        let rot = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
        m = mul(
            translate(w / 2.0, h / 2.0),
            mul(rot, mul(translate(-w / 2.0, -h / 2.0), m)),
        );
    }
    if let Some([x0, y0, cw, ch]) = crop {
        m = mul([[cw / w, 0.0, x0], [0.0, ch / h, y0], [0.0, 0.0, 1.0]], m);
    }
    m = mul(translate(-0.5, -0.5), m);
    [m[0], m[1]]
}

/// Resamples `img` through the output→source map `m` (bilinear; outside the picture the
/// border is mirrored without repeating the edge, OpenCV's `BORDER_REFLECT_101`).
fn warp(img: &mut Image, m: &[[f64; 3]; 2]) -> Result<(), DataError> {
    let src = to_mat(img)?;
    let m = core::Mat::from_slice_2d(m).map_err(cv_err("building the affine matrix"))?;
    let mut dst = core::Mat::default();
    imgproc::warp_affine(
        &src,
        &mut dst,
        &m,
        core::Size::new(img.width as i32, img.height as i32),
        imgproc::INTER_LINEAR | imgproc::WARP_INVERSE_MAP,
        core::BORDER_REFLECT_101,
        core::Scalar::all(0.0),
    )
    .map_err(cv_err("warping an image"))?;
    copy_back(img, &dst, "warping an image")
}

fn copy_back(img: &mut Image, mat: &core::Mat, context: &'static str) -> Result<(), DataError> {
    let bytes = mat.data_bytes().map_err(cv_err(context))?;
    if bytes.len() != img.pixels.len() {
        return Err(DataError::OpenCv {
            context,
            source: opencv::Error::new(
                core::StsAssert,
                format!("{} bytes back for {}", bytes.len(), img.pixels.len()),
            ),
        });
    }
    img.pixels.copy_from_slice(bytes);
    Ok(())
}

/// Exact horizontal mirror.
pub(crate) fn hflip(img: &mut Image) {
    let (w, c) = (img.width, img.channels);
    for row in img.pixels.chunks_exact_mut(w * c) {
        for x in 0..w / 2 {
            let (a, b) = (x * c, (w - 1 - x) * c);
            for k in 0..c {
                row.swap(a + k, b + k);
            }
        }
    }
}

/// Brightness `b` and contrast `k` (around the mean luma) as one lookup table, then
/// saturation `s` (around each pixel's luma) for RGB.
pub(crate) fn jitter(img: &mut Image, b: f32, k: f32, s: f32) {
    let n = (img.width * img.height).max(1) as f64;
    let mean = if img.channels == 3 {
        img.pixels
            .chunks_exact(3)
            .map(|p| f64::from(luma(p[0], p[1], p[2])))
            .sum::<f64>()
            / n
    } else {
        img.pixels.iter().map(|&v| f64::from(v)).sum::<f64>() / n
    } as f32;
    let m = mean * b;
    let lut: [u8; 256] =
        std::array::from_fn(|v| ((v as f32 * b - m) * k + m).round().clamp(0.0, 255.0) as u8);
    for v in img.pixels.iter_mut() {
        *v = lut[usize::from(*v)];
    }
    if img.channels == 3 && s != 1.0 {
        for p in img.pixels.chunks_exact_mut(3) {
            let g = luma(p[0], p[1], p[2]);
            for v in p.iter_mut() {
                *v = ((f32::from(*v) - g) * s + g).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// Gaussian blur with OpenCV (kernel size from sigma, reflected border).
fn blur(img: &mut Image, sigma: f64) -> Result<(), DataError> {
    let src = to_mat(img)?;
    let mut dst = core::Mat::default();
    imgproc::gaussian_blur(
        &src,
        &mut dst,
        core::Size::new(0, 0),
        sigma,
        sigma,
        core::BORDER_REFLECT_101,
    )
    .map_err(cv_err("blurring an image"))?;
    copy_back(img, &dst, "blurring an image")
}

/// Fills a random rectangle of `area` (fraction range) with noise; up to 10 tries to find one
/// that fits.
pub(crate) fn erase(img: &mut Image, area: [f32; 2], rng: &mut impl Rng) {
    let (w, h, c) = (img.width, img.height, img.channels);
    for _ in 0..10 {
        let a = uniform(rng, area) * (w * h) as f32;
        let r = uniform(rng, [0.3_f32.ln(), (1.0_f32 / 0.3).ln()]).exp();
        let eh = (a * r).sqrt().round() as usize;
        let ew = (a / r).sqrt().round() as usize;
        if ew == 0 || eh == 0 || ew >= w || eh >= h {
            continue;
        }
        let x0 = rng.random_range(0..=w - ew);
        let y0 = rng.random_range(0..=h - eh);
        for y in y0..y0 + eh {
            let row = &mut img.pixels[(y * w + x0) * c..(y * w + x0 + ew) * c];
            rng.fill(row);
        }
        return;
    }
}

/// `x ← λ·x + (1−λ)·x_rev`, targets likewise.
fn mixup(batch: &mut Batch, lambda: f32) {
    let n = batch.shape[0];
    let per = batch.images.len() / n.max(1);
    let k = batch.classes;
    let images = batch.images.clone();
    let targets = batch.targets.clone();
    let labels = batch.labels.clone();
    for i in 0..n {
        let j = n - 1 - i;
        for (o, (a, b)) in batch.images[i * per..(i + 1) * per].iter_mut().zip(
            images[i * per..(i + 1) * per]
                .iter()
                .zip(&images[j * per..]),
        ) {
            *o = lambda * a + (1.0 - lambda) * b;
        }
        for (o, (a, b)) in batch.targets[i * k..(i + 1) * k]
            .iter_mut()
            .zip(targets[i * k..(i + 1) * k].iter().zip(&targets[j * k..]))
        {
            *o = lambda * a + (1.0 - lambda) * b;
        }
        batch.labels[i] = if lambda >= 0.5 { labels[i] } else { labels[j] };
    }
}

/// Pastes a box of x_rev (area ≈ 1−λ) into x; targets mixed by the box's real area.
fn cutmix(batch: &mut Batch, lambda: f32, rng: &mut impl Rng) {
    let [n, c, h, w] = batch.shape;
    let cut = (1.0 - lambda).max(0.0).sqrt();
    let (bw, bh) = ((w as f32 * cut) as usize, (h as f32 * cut) as usize);
    let (cx, cy) = (rng.random_range(0..w.max(1)), rng.random_range(0..h.max(1)));
    let x0 = cx.saturating_sub(bw / 2);
    let y0 = cy.saturating_sub(bh / 2);
    let x1 = (cx + bw.div_ceil(2)).min(w);
    let y1 = (cy + bh.div_ceil(2)).min(h);
    if x1 <= x0 || y1 <= y0 {
        return;
    }
    let lambda = 1.0 - ((x1 - x0) * (y1 - y0)) as f32 / (w * h) as f32;
    let per = c * h * w;
    let k = batch.classes;
    let images = batch.images.clone();
    let targets = batch.targets.clone();
    let labels = batch.labels.clone();
    for i in 0..n {
        let j = n - 1 - i;
        for ch in 0..c {
            for y in y0..y1 {
                let row = ch * h * w + y * w;
                let (to, from) = (i * per + row, j * per + row);
                batch.images[to + x0..to + x1].copy_from_slice(&images[from + x0..from + x1]);
            }
        }
        for (o, (a, b)) in batch.targets[i * k..(i + 1) * k]
            .iter_mut()
            .zip(targets[i * k..(i + 1) * k].iter().zip(&targets[j * k..]))
        {
            *o = lambda * a + (1.0 - lambda) * b;
        }
        batch.labels[i] = if lambda >= 0.5 { labels[i] } else { labels[j] };
    }
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut impl Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Gamma(shape, 1) by Marsaglia–Tsang (shape < 1 through the boost `U^(1/shape)`).
fn gamma(shape: f64, rng: &mut impl Rng) -> f64 {
    if shape < 1.0 {
        let u = 1.0 - rng.random::<f64>();
        return gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = 1.0 - rng.random::<f64>();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// A Beta(a, b) sample in [0, 1] (a, b > 0), as MixUp and CutMix draw λ.
pub fn sample_beta(a: f32, b: f32, rng: &mut impl Rng) -> f32 {
    let x = gamma(f64::from(a.max(1e-3)), rng);
    let y = gamma(f64::from(b.max(1e-3)), rng);
    if x + y == 0.0 {
        return 0.5;
    }
    (x / (x + y)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn gradient(w: usize, h: usize, c: usize) -> Image {
        Image {
            width: w,
            height: h,
            channels: c,
            pixels: (0..w * h * c).map(|i| (i * 37 % 251) as u8).collect(),
        }
    }

    #[test]
    fn defaults_validate_and_none_is_identity() {
        AugmentConfig::default().validate().expect("default");
        let none = AugmentConfig::none();
        none.validate().expect("none");
        assert!(none.is_identity_per_image());
        let mut rng = StdRng::seed_from_u64(1);
        let mut img = gradient(9, 7, 3);
        let before = img.clone();
        for _ in 0..20 {
            none.augment_image(&mut img, &mut rng).expect("augment");
        }
        assert_eq!(img, before);
    }

    #[test]
    fn scaled_zero_is_none_and_scaling_is_clamped() {
        let d = AugmentConfig::default();
        assert!(d.scaled(0.0).is_identity_per_image());
        assert_eq!(d.scaled(1.0), d);
        let strong = d.scaled(10.0);
        strong.validate().expect("clamped to valid values");
        assert_eq!(strong.hflip, 0.5);
        assert_eq!(strong.crop.scale[0], 0.05);
        assert!(strong.rotate.degrees > d.rotate.degrees);
        let half = d.scaled(0.5);
        assert!((half.rotate.degrees - 5.0).abs() < 1e-6);
        assert!((half.crop.scale[0] - 0.9).abs() < 1e-6);
    }

    #[test]
    fn serde_fills_missing_fields_with_defaults() {
        let c: AugmentConfig =
            serde_json::from_str(r#"{"hflip": 0.0, "rotate": {"degrees": 20}}"#).expect("json");
        assert_eq!(c.hflip, 0.0);
        assert_eq!(c.rotate.degrees, 20.0);
        assert_eq!(c.rotate.p, RotateAug::default().p);
        assert_eq!(c.crop, CropAug::default());
    }

    #[test]
    fn invalid_settings_are_named() {
        let mut c = AugmentConfig::default();
        c.erase.p = 1.5;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("erase.p = 1.5"), "{err}");
        let mut c = AugmentConfig::default();
        c.crop.scale = [0.9, 0.5];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("crop.scale = [0.9, 0.5]"), "{err}");
    }

    #[test]
    fn flip_is_exact_alone_and_through_the_warp() {
        let img = gradient(5, 3, 3);
        let mut flipped = img.clone();
        hflip(&mut flipped);
        for y in 0..3 {
            for x in 0..5 {
                assert_eq!(flipped.pixel(x, y), img.pixel(4 - x, y));
            }
        }
        let mut warped = img.clone();
        warp(&mut warped, &affine(5, 3, true, None, None)).expect("warp");
        assert_eq!(warped, flipped);
        let mut same = img.clone();
        warp(&mut same, &affine(5, 3, false, Some(0.0), None)).expect("warp");
        assert_eq!(same, img);
    }

    #[test]
    fn rotation_by_90_degrees_moves_pixels_as_expected() {
        // 4×4: rotating by 90° maps the image onto itself exactly (pixel centres land on
        // pixel centres).
        let img = gradient(4, 4, 1);
        let mut r = img.clone();
        warp(&mut r, &affine(4, 4, false, Some(90.0), None)).expect("warp");
        // Output (x, y) samples source centre + R·(x − c, y − c): (x, y) ← (3 − y, x).
        for y in 0..4 {
            for x in 0..4 {
                assert_eq!(r.pixel(x, y), img.pixel(3 - y, x), "({x},{y})");
            }
        }
    }

    #[test]
    fn crop_of_the_top_left_quarter_zooms_in() {
        let mut img = Image {
            width: 8,
            height: 8,
            channels: 1,
            pixels: vec![0; 64],
        };
        for y in 0..4 {
            for x in 0..4 {
                img.pixels[y * 8 + x] = 200;
            }
        }
        warp(
            &mut img,
            &affine(8, 8, false, None, Some([0.0, 0.0, 4.0, 4.0])),
        )
        .expect("warp");
        // The white quarter now fills the picture except the bilinear edge at the far side
        // (the mirrored border keeps the near edge white).
        assert!(
            img.pixels[..6 * 8]
                .chunks(8)
                .all(|row| row[..6].iter().all(|&v| v == 200))
        );
    }

    #[test]
    fn jitter_brightness_contrast_saturation() {
        let mut img = Image {
            width: 2,
            height: 1,
            channels: 3,
            pixels: vec![100, 100, 100, 50, 150, 200],
        };
        let before = img.clone();
        jitter(&mut img, 1.0, 1.0, 1.0);
        assert_eq!(img, before);
        jitter(&mut img, 1.5, 1.0, 1.0);
        assert_eq!(&img.pixels[..3], &[150, 150, 150]);
        let mut grey = img.clone();
        jitter(&mut grey, 1.0, 1.0, 0.0);
        let p = grey.pixel(1, 0);
        assert!(
            p[0] == p[1] && p[1] == p[2],
            "saturation 0 makes grey: {p:?}"
        );
    }

    #[test]
    fn every_augmentation_keeps_shape_and_changes_pixels() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut full = AugmentConfig::default();
        full.blur.p = 1.0;
        full.crop.p = 1.0;
        full.rotate.p = 1.0;
        full.color.p = 1.0;
        full.erase.p = 1.0;
        for c in [1, 3] {
            let mut img = gradient(28, 28, c);
            let before = img.clone();
            full.augment_image(&mut img, &mut rng).expect("augment");
            assert_eq!((img.width, img.height, img.channels), (28, 28, c));
            assert_eq!(img.pixels.len(), before.pixels.len());
            assert_ne!(img.pixels, before.pixels);
        }
    }

    #[test]
    fn beta_samples_have_the_right_mean() {
        let mut rng = StdRng::seed_from_u64(3);
        for (a, b) in [(0.2_f32, 0.2_f32), (1.0, 1.0), (2.0, 5.0)] {
            let n = 20_000;
            let xs: Vec<f32> = (0..n).map(|_| sample_beta(a, b, &mut rng)).collect();
            assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
            let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
            let want = f64::from(a / (a + b));
            assert!(
                (mean - want).abs() < 0.01,
                "Beta({a},{b}) mean {mean} want {want}"
            );
            let var = xs
                .iter()
                .map(|&x| (f64::from(x) - want).powi(2))
                .sum::<f64>()
                / n as f64;
            let want_var = f64::from(a * b / ((a + b).powi(2) * (a + b + 1.0)));
            assert!(
                (var - want_var).abs() < 0.01,
                "Beta({a},{b}) var {var} want {want_var}"
            );
        }
    }

    fn two_image_batch() -> Batch {
        Batch {
            images: vec![1.0; 4].into_iter().chain(vec![0.0; 4]).collect(),
            targets: vec![1.0, 0.0, 0.0, 1.0],
            labels: vec![0, 1],
            shape: [2, 1, 2, 2],
            classes: 2,
        }
    }

    #[test]
    fn mixup_mixes_images_and_targets_alike() {
        let mut b = two_image_batch();
        mixup(&mut b, 0.7);
        assert!(b.images[..4].iter().all(|&v| (v - 0.7).abs() < 1e-6));
        assert!(b.images[4..].iter().all(|&v| (v - 0.3).abs() < 1e-6));
        // Each image keeps its own label: it carries 0.7 of the weight.
        assert_eq!(b.labels, vec![0, 1]);
        for t in b.targets.chunks(2) {
            assert!((t.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert!((b.targets[0] - 0.7).abs() < 1e-6 && (b.targets[3] - 0.7).abs() < 1e-6);
    }

    #[test]
    fn cutmix_targets_follow_the_pasted_area() {
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..20 {
            let mut b = two_image_batch();
            cutmix(&mut b, 0.5, &mut rng);
            // Image 0 was all ones: the share of ones left is its target weight.
            let ones = b.images[..4].iter().filter(|&&v| v == 1.0).count() as f32 / 4.0;
            assert!((b.targets[0] - ones).abs() < 1e-6, "{b:?}");
            assert!((b.targets[0] + b.targets[1] - 1.0).abs() < 1e-6);
        }
    }
}
