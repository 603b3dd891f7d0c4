//! Turns one mapped video frame into one image slot of a model's input batch tensor.
//!
//! No GStreamer or ONNX Runtime types live here, so the whole path is unit-tested on plain
//! byte buffers. One pass per output row does everything: the separable resampling of
//! [`crate::resample`] (area averaging by default, see [`ResizeFilter`]) brings the rows of each
//! plane to the slot's width in `f32`, then colour conversion, channel reordering,
//! normalisation and the tensor layout are applied as the values are stored, so each output
//! value is written once and no full-size intermediate image exists.

pub use crate::resample::ResizeFilter;
use crate::resample::{self, Axis, Expanded, Source};

/// Pixel formats the preprocessor reads, named as in GStreamer's `video/x-raw` caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    Rgb,
    Bgr,
    Rgba,
    Bgra,
    Rgbx,
    Bgrx,
    Xrgb,
    Xbgr,
    Nv12,
    I420,
    Gray8,
}

/// How a format's bytes are organised, as far as preprocessing cares.
#[derive(Clone, Copy)]
enum FormatKind {
    /// One plane, `bpp` bytes per pixel, R, G and B at byte offsets `rgb`.
    Packed {
        bpp: usize,
        rgb: [usize; 3],
    },
    Gray,
    Nv12,
    I420,
}

impl PixelFormat {
    fn kind(self) -> FormatKind {
        let packed = |bpp, rgb| FormatKind::Packed { bpp, rgb };
        match self {
            Self::Rgb => packed(3, [0, 1, 2]),
            Self::Bgr => packed(3, [2, 1, 0]),
            Self::Rgba | Self::Rgbx => packed(4, [0, 1, 2]),
            Self::Bgra | Self::Bgrx => packed(4, [2, 1, 0]),
            Self::Xrgb => packed(4, [1, 2, 3]),
            Self::Xbgr => packed(4, [3, 2, 1]),
            Self::Nv12 => FormatKind::Nv12,
            Self::I420 => FormatKind::I420,
            Self::Gray8 => FormatKind::Gray,
        }
    }
}

/// How the frame is fitted to the slot's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizeMode {
    /// The whole frame is resized to the slot, ignoring aspect ratio.
    #[default]
    Stretch,
    /// The frame keeps its aspect ratio, fits inside the slot and is centred; the rest is padded
    /// with black (see [`Preprocessor::with_letterbox_pad`]).
    Letterbox,
    /// The largest centred region with the slot's aspect ratio is cut out and resized.
    CenterCrop,
}

/// Channels the model expects, in tensor channel order. Gray = a single luma channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
    Gray,
}

/// Memory layout of one slot: channel planes (`Nchw`) or interleaved pixels (`Nhwc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    #[default]
    Nchw,
    Nhwc,
}

/// Y'CbCr → R'G'B' matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YuvMatrix {
    #[default]
    Bt601,
    Bt709,
}

/// How Y'CbCr frames map to RGB (from the caps' colorimetry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct YuvColor {
    pub matrix: YuvMatrix,
    /// `false`: limited ("TV") range, Y 16..235 and chroma 16..240; `true`: 0..255.
    pub full_range: bool,
}

/// A borrowed, mapped video frame. planes/strides follow GStreamer's layout for the format:
/// packed formats use plane 0; NV12 uses Y (plane 0) + interleaved UV (plane 1, half width/height);
/// I420 uses Y, U, V (planes 0,1,2; chroma at half width/height rounded up). Unused planes are empty slices.
/// Strides may be larger than the row width (padding) and are honoured; the planes are never written.
#[derive(Clone, Copy)]
pub struct Frame<'a> {
    pub format: PixelFormat,
    pub width: usize,
    pub height: usize,
    pub planes: [&'a [u8]; 3],
    pub strides: [usize; 3],
    /// Only read for NV12 and I420.
    pub yuv: YuvColor,
}

/// A rectangle of a frame in pixels: columns `x..x + width`, rows `y..y + height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

impl PixelFormat {
    /// True for formats whose chroma is subsampled 2×2 (NV12, I420): their crops start on
    /// even coordinates.
    pub fn subsampled(self) -> bool {
        matches!(self, Self::Nv12 | Self::I420)
    }
}

impl<'a> Frame<'a> {
    /// A view of `rect` of this frame: the planes start at the rectangle's first pixel and
    /// keep their strides, so nothing is copied and the view preprocesses exactly like a
    /// frame holding only those pixels. For NV12 and I420 the rectangle first grows to start
    /// on an even column and row (at most one more of each), so every luma sample keeps the
    /// chroma sample it had in the frame. The rectangle actually used is returned with the
    /// view.
    pub fn crop(&self, rect: Rect) -> Result<(Frame<'a>, Rect), PreprocessError> {
        let outside = || PreprocessError::CropOutside {
            rect,
            width: self.width,
            height: self.height,
        };
        let right = rect.x.checked_add(rect.width).ok_or_else(outside)?;
        let bottom = rect.y.checked_add(rect.height).ok_or_else(outside)?;
        if rect.width == 0 || rect.height == 0 || right > self.width || bottom > self.height {
            return Err(outside());
        }
        let rect = if self.format.subsampled() {
            let (x, y) = (rect.x & !1, rect.y & !1);
            Rect {
                x,
                y,
                width: right - x,
                height: bottom - y,
            }
        } else {
            rect
        };
        // Byte offset of the rectangle's first sample in each plane.
        let (cx, cy) = (rect.x / 2, rect.y / 2);
        let offsets = match self.format.kind() {
            FormatKind::Packed { bpp, .. } => [rect.y * self.strides[0] + rect.x * bpp, 0, 0],
            FormatKind::Gray => [rect.y * self.strides[0] + rect.x, 0, 0],
            FormatKind::Nv12 => [
                rect.y * self.strides[0] + rect.x,
                cy * self.strides[1] + cx * 2,
                0,
            ],
            FormatKind::I420 => [
                rect.y * self.strides[0] + rect.x,
                cy * self.strides[1] + cx,
                cy * self.strides[2] + cx,
            ],
        };
        let mut planes = self.planes;
        for (plane, offset) in planes.iter_mut().zip(offsets) {
            if plane.is_empty() {
                continue;
            }
            *plane = plane.get(offset..).ok_or(PreprocessError::CropPlane {
                rect,
                len: plane.len(),
                offset,
            })?;
        }
        Ok((
            Frame {
                width: rect.width,
                height: rect.height,
                planes,
                ..*self
            },
            rect,
        ))
    }
}

/// Shape of one tensor slot (one image of the batch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlotSpec {
    pub layout: Layout,
    pub width: usize,
    pub height: usize,
    pub channels: ChannelOrder,
}

impl SlotSpec {
    /// 1 for [`ChannelOrder::Gray`], else 3.
    pub fn channel_count(&self) -> usize {
        match self.channels {
            ChannelOrder::Gray => 1,
            ChannelOrder::Rgb | ChannelOrder::Bgr => 3,
        }
    }

    /// Number of values in one slot: width × height × channels.
    pub fn len(&self) -> usize {
        self.width * self.height * self.channel_count()
    }

    /// True when the slot has no pixels; [`Preprocessor::run`] rejects such a spec.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// value = (pixel * scale - mean[c]) / std[c], per tensor channel c (c in model channel order;
/// for Gray only index 0 is used). Only applied to f32 slots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for Normalize {
    /// Pixels to 0..1: scale 1/255, mean 0, std 1.
    fn default() -> Self {
        Self {
            scale: 1.0 / 255.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }
}

/// Where a slot's values go: f32 tensors get normalized values; u8 tensors get raw 0..255 pixels
/// (no normalisation).
pub enum SlotMut<'a> {
    F32(&'a mut [f32]),
    U8(&'a mut [u8]),
}

impl SlotMut<'_> {
    /// Number of values in the slot.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(s) => s.len(),
            Self::U8(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("video frame is empty ({width}x{height})")]
    EmptyFrame { width: usize, height: usize },
    #[error("model input slot is empty ({width}x{height}); check the model's input shape")]
    EmptySlot { width: usize, height: usize },
    #[error("{what} size {width}x{height} is too large (each side must fit in i32)")]
    TooLarge {
        what: &'static str,
        width: usize,
        height: usize,
    },
    #[error("plane {plane} stride {stride} is shorter than one row of {row_bytes} bytes")]
    StrideTooSmall {
        plane: usize,
        stride: usize,
        row_bytes: usize,
    },
    #[error(
        "plane {plane} holds {len} bytes but {rows} rows of {row_bytes} bytes at stride {stride} need {needed}"
    )]
    PlaneTooSmall {
        plane: usize,
        len: usize,
        rows: usize,
        row_bytes: usize,
        stride: usize,
        needed: usize,
    },
    #[error("region {rect:?} is empty or not inside the {width}x{height} frame")]
    CropOutside {
        rect: Rect,
        width: usize,
        height: usize,
    },
    #[error("region {rect:?} starts at byte {offset} of a plane of {len} bytes")]
    CropPlane {
        rect: Rect,
        len: usize,
        offset: usize,
    },
    #[error("slot holds {actual} values but the model input needs {expected}")]
    SlotLength { expected: usize, actual: usize },
    #[error("normalisation std for channel {channel} is {value}; it must be finite and non-zero")]
    InvalidStd { channel: usize, value: f32 },
}

/// Converts frames into slots of one model input. Holds the resampling weights and row buffers,
/// reused from frame to frame while the geometry stays the same, so keep one per stream (it is
/// `Send`, so it can live in element state).
pub struct Preprocessor {
    spec: SlotSpec,
    normalize: Normalize,
    mode: ResizeMode,
    filter: ResizeFilter,
    pad: u8,
    /// Weights of the last geometry, rebuilt when the frame size, region or format changes.
    axes: Option<Axes>,
    /// One source-width row of `f32` (the vertical pass) and one output row per plane.
    acc: Vec<f32>,
    rows: [Vec<f32>; 3],
    /// Model channels computed from several plane values (R, G, B of Y'CbCr; luma), one row.
    planar: [Vec<f32>; 3],
}

/// The taps of every axis of one geometry: luma (or packed) and, for subsampled formats, chroma.
struct Axes {
    key: (usize, usize, Plan, ResizeFilter, PixelFormat),
    x: Expanded,
    y: Axis,
    chroma: Option<(Region, Expanded, Axis)>,
}

impl Preprocessor {
    pub fn new(spec: SlotSpec, normalize: Normalize, mode: ResizeMode) -> Self {
        Self {
            spec,
            normalize,
            mode,
            filter: ResizeFilter::default(),
            pad: 0,
            axes: None,
            acc: Vec::new(),
            rows: Default::default(),
            planar: Default::default(),
        }
    }

    /// Raw pixel value (before normalisation, same for every channel) of the letterbox
    /// border. Defaults to 0 (black); some detectors are trained with 114 instead.
    pub fn with_letterbox_pad(mut self, value: u8) -> Self {
        self.pad = value;
        self
    }

    /// The resampling kernel; [`ResizeFilter::Area`] by default.
    pub fn with_filter(mut self, filter: ResizeFilter) -> Self {
        self.filter = filter;
        self
    }

    pub fn spec(&self) -> &SlotSpec {
        &self.spec
    }

    pub fn normalize(&self) -> &Normalize {
        &self.normalize
    }

    pub fn mode(&self) -> ResizeMode {
        self.mode
    }

    pub fn filter(&self) -> ResizeFilter {
        self.filter
    }

    /// Fills `slot` (exactly `spec().len()` values) from `frame`.
    ///
    /// Bad input (short planes, strides below the row width, a zero-sized frame, a slot of the
    /// wrong length) is reported as an error; nothing is written to `slot` in that case.
    ///
    /// Each output row is made in one go: the source rows it covers are summed (vertical
    /// pass), reduced to the output width (horizontal pass), converted to the model's colour
    /// channels, normalised and stored in the slot's layout. No full-size intermediate image
    /// exists.
    pub fn run(&mut self, frame: &Frame<'_>, slot: SlotMut<'_>) -> Result<(), PreprocessError> {
        let spec = self.spec;
        if spec.width == 0 || spec.height == 0 {
            return Err(PreprocessError::EmptySlot {
                width: spec.width,
                height: spec.height,
            });
        }
        if frame.width == 0 || frame.height == 0 {
            return Err(PreprocessError::EmptyFrame {
                width: frame.width,
                height: frame.height,
            });
        }
        fits_i32("model input", spec.width, spec.height)?;
        fits_i32("video frame", frame.width, frame.height)?;
        if slot.len() != spec.len() {
            return Err(PreprocessError::SlotLength {
                expected: spec.len(),
                actual: slot.len(),
            });
        }
        let mut sink = Sink::new(&spec, &self.normalize, slot)?;
        let plan = Plan::new(frame.width, frame.height, &spec, self.mode);
        let (w, h) = (frame.width, frame.height);
        let kind = frame.format.kind();
        // Validate every plane before anything is written.
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let planes: [Option<Plane<'_>>; 3] = match kind {
            FormatKind::Packed { bpp, .. } => [Some(Plane::new(frame, 0, w, h, bpp)?), None, None],
            FormatKind::Gray => [Some(Plane::new(frame, 0, w, h, 1)?), None, None],
            FormatKind::Nv12 => [
                Some(Plane::new(frame, 0, w, h, 1)?),
                Some(Plane::new(frame, 1, cw, ch, 2)?),
                None,
            ],
            FormatKind::I420 => [
                Some(Plane::new(frame, 0, w, h, 1)?),
                Some(Plane::new(frame, 1, cw, ch, 1)?),
                Some(Plane::new(frame, 2, cw, ch, 1)?),
            ],
        };

        let key = (w, h, plan, self.filter, frame.format);
        if self.axes.as_ref().is_none_or(|a| a.key != key) {
            let filter = self.filter;
            let cn = planes[0].map_or(1, |p| p.cn);
            let chroma = planes[1].map(|p| {
                let c = plan.src.chroma(cw, ch);
                (
                    c,
                    Expanded::new(&Axis::new(filter, c.w, plan.dst.w), p.cn),
                    Axis::new(filter, c.h, plan.dst.h),
                )
            });
            self.axes = Some(Axes {
                key,
                x: Expanded::new(&Axis::new(filter, plan.src.w, plan.dst.w), cn),
                y: Axis::new(filter, plan.src.h, plan.dst.h),
                chroma,
            });
        }
        let Some(axes) = self.axes.as_ref() else {
            unreachable!("the axes were set just above")
        };

        if plan.dst != Region::whole(spec.width, spec.height) {
            sink.fill_all(&spec, f32::from(self.pad));
        }
        let Self {
            acc, rows, planar, ..
        } = self;
        let dst = plan.dst;
        let [r0, r1, r2] = rows;
        let luma_roi = plan.src;
        let conv = YuvToRgb::new(frame.yuv);
        let gray = spec.channels == ChannelOrder::Gray;
        let bgr = spec.channels == ChannelOrder::Bgr;
        // Model channel c comes from this index of an RGB triple (or of the planar rows).
        let pick = |c: usize| if bgr { 2 - c } else { c };
        let w = dst.w;
        for p in planar.iter_mut() {
            if p.len() < w {
                p.resize(w, 0.0);
            }
        }
        for oy in 0..dst.h {
            let y = dst.y + oy;
            match (kind, planes) {
                (FormatKind::Packed { bpp, rgb }, [Some(p0), ..]) => {
                    resample_row(acc, r0, p0, luma_roi, &axes.x, &axes.y, oy);
                    if gray {
                        let [r, g, b] = rgb;
                        for (l, px) in planar[0][..w].iter_mut().zip(r0.chunks_exact(bpp)) {
                            *l = luma_f(px[r], px[g], px[b]);
                        }
                        sink.store(&spec, y, dst.x, w, [(&planar[0][..], 0, 1); 3]);
                    } else {
                        // Channel reordering is just a choice of offsets in the pixel.
                        let src = |c: usize| (&r0[..], rgb[pick(c)], bpp);
                        sink.store(&spec, y, dst.x, w, [src(0), src(1), src(2)]);
                    }
                }
                (FormatKind::Gray, [Some(p0), ..]) => {
                    resample_row(acc, r0, p0, luma_roi, &axes.x, &axes.y, oy);
                    // Replicated for colour models; a Gray model only reads channel 0.
                    sink.store(&spec, y, dst.x, w, [(&r0[..], 0, 1); 3]);
                }
                (FormatKind::Nv12, [Some(py), Some(puv), _]) => {
                    let Some((croi, cx, cy)) = axes.chroma.as_ref() else {
                        unreachable!("NV12 is subsampled")
                    };
                    resample_row(acc, r0, py, luma_roi, &axes.x, &axes.y, oy);
                    resample_row(acc, r1, puv, *croi, cx, cy, oy);
                    let (ly, luv) = (&r0[..w], &r1[..2 * w]);
                    yuv_rows(&conv, gray, w, planar, |x| {
                        (ly[x], luv[2 * x], luv[2 * x + 1])
                    });
                    let src = |c: usize| (&planar[if gray { 0 } else { pick(c) }][..], 0, 1);
                    sink.store(&spec, y, dst.x, w, [src(0), src(1), src(2)]);
                }
                (FormatKind::I420, [Some(py), Some(pu), Some(pv)]) => {
                    let Some((croi, cx, cy)) = axes.chroma.as_ref() else {
                        unreachable!("I420 is subsampled")
                    };
                    resample_row(acc, r0, py, luma_roi, &axes.x, &axes.y, oy);
                    resample_row(acc, r1, pu, *croi, cx, cy, oy);
                    resample_row(acc, r2, pv, *croi, cx, cy, oy);
                    let (ly, lu, lv) = (&r0[..w], &r1[..w], &r2[..w]);
                    yuv_rows(&conv, gray, w, planar, |x| (ly[x], lu[x], lv[x]));
                    let src = |c: usize| (&planar[if gray { 0 } else { pick(c) }][..], 0, 1);
                    sink.store(&spec, y, dst.x, w, [src(0), src(1), src(2)]);
                }
                _ => unreachable!("planes were validated for the format above"),
            }
        }
        Ok(())
    }
}

/// Converts one row of resampled Y'CbCr samples (`sample(x)` = Y, Cb, Cr) to planar R, G, B
/// rows (or only luma, in `planar[0]`, for a Gray model).
#[inline]
fn yuv_rows(
    conv: &YuvToRgb,
    gray: bool,
    w: usize,
    planar: &mut [Vec<f32>; 3],
    sample: impl Fn(usize) -> (f32, f32, f32),
) {
    let [pr, pg, pb] = planar;
    let (pr, pg, pb) = (&mut pr[..w], &mut pg[..w], &mut pb[..w]);
    if gray {
        for (x, l) in pr.iter_mut().enumerate() {
            *l = conv.luma(sample(x).0);
        }
        return;
    }
    for (x, ((r, g), b)) in pr
        .iter_mut()
        .zip(pg.iter_mut())
        .zip(pb.iter_mut())
        .enumerate()
    {
        let (l, u, v) = sample(x);
        [*r, *g, *b] = conv.rgb(l, u, v);
    }
}

/// Resamples output row `oy` of region `roi` of `plane` into `out` (`ax.outputs()` pixels of
/// the plane's channels), using `acc` for the vertical pass.
fn resample_row(
    acc: &mut Vec<f32>,
    out: &mut Vec<f32>,
    plane: Plane<'_>,
    roi: Region,
    ax: &Expanded,
    ay: &Axis,
    oy: usize,
) {
    let n = roi.w * plane.cn;
    // The horizontal pass reads whole windows, past the row's end for the last outputs: those
    // values must be zeros (their weights are, and 0 × garbage could be NaN).
    let padded = n + ax.overhang();
    if acc.len() < padded {
        acc.resize(padded, 0.0);
    }
    acc[n..padded].fill(0.0);
    let m = ax.outputs() * plane.cn;
    if out.len() < m {
        out.resize(m, 0.0);
    }
    let source = Source {
        data: plane.data,
        offset: roi.y * plane.stride + roi.x * plane.cn,
        stride: plane.stride,
        row_len: n,
    };
    resample::vertical(source, ay, oy, acc);
    resample::horizontal(&acc[..padded], ax, &mut out[..m]);
    // Resampled values are rounded to 8 bits, as the resize of an OpenCV or PIL training
    // pipeline leaves them (and as this crate's earlier OpenCV path did): a model sees the
    // same values here as from `vision-trainer`'s loader, which resizes each image to 8 bits
    // once and normalises it later.
    resample::round_half_up(&mut out[..m]);
}

fn fits_i32(what: &'static str, width: usize, height: usize) -> Result<(), PreprocessError> {
    if i32::try_from(width).is_ok() && i32::try_from(height).is_ok() {
        Ok(())
    } else {
        Err(PreprocessError::TooLarge {
            what,
            width,
            height,
        })
    }
}

/// BT.601 luma weights, the same ones a Gray model would have been trained with through
/// `cv::cvtColor(..., COLOR_RGB2GRAY)`.
#[inline]
fn luma_f(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// Y'CbCr → R'G'B' for one matrix and range, with the range expansion folded into the
/// coefficients.
#[derive(Clone, Copy)]
struct YuvToRgb {
    y_offset: f32,
    y_scale: f32,
    c_scale: f32,
    r_cr: f32,
    g_cb: f32,
    g_cr: f32,
    b_cb: f32,
}

impl YuvToRgb {
    fn new(color: YuvColor) -> Self {
        let (kr, kb) = match color.matrix {
            YuvMatrix::Bt601 => (0.299_f32, 0.114_f32),
            YuvMatrix::Bt709 => (0.2126_f32, 0.0722_f32),
        };
        let kg = 1.0 - kr - kb;
        let (y_offset, y_scale, c_scale) = if color.full_range {
            (0.0, 1.0, 1.0)
        } else {
            (16.0, 255.0 / 219.0, 255.0 / 224.0)
        };
        Self {
            y_offset,
            y_scale,
            c_scale,
            r_cr: 2.0 * (1.0 - kr),
            g_cb: 2.0 * kb * (1.0 - kb) / kg,
            g_cr: 2.0 * kr * (1.0 - kr) / kg,
            b_cb: 2.0 * (1.0 - kb),
        }
    }

    /// Full-range luma, so a Gray model sees the same values whatever the stream's range.
    #[inline]
    fn luma(&self, y: f32) -> f32 {
        ((y - self.y_offset) * self.y_scale).clamp(0.0, 255.0)
    }

    #[inline]
    fn rgb(&self, y: f32, u: f32, v: f32) -> [f32; 3] {
        let l = (y - self.y_offset) * self.y_scale;
        let cb = (u - 128.0) * self.c_scale;
        let cr = (v - 128.0) * self.c_scale;
        [
            (l + self.r_cr * cr).clamp(0.0, 255.0),
            (l - self.g_cb * cb - self.g_cr * cr).clamp(0.0, 255.0),
            (l + self.b_cb * cb).clamp(0.0, 255.0),
        ]
    }
}

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    x: usize,
    y: usize,
    w: usize,
    h: usize,
}

impl Region {
    fn whole(w: usize, h: usize) -> Self {
        Self { x: 0, y: 0, w, h }
    }

    /// The same area in a chroma plane subsampled 2×2 of size `cw`×`ch`: every chroma sample
    /// that touches the luma region, so odd offsets and sizes never lose an edge.
    fn chroma(self, cw: usize, ch: usize) -> Self {
        let x0 = (self.x / 2).min(cw - 1);
        let y0 = (self.y / 2).min(ch - 1);
        let x1 = (self.x + self.w).div_ceil(2).clamp(x0 + 1, cw);
        let y1 = (self.y + self.h).div_ceil(2).clamp(y0 + 1, ch);
        Self {
            x: x0,
            y: y0,
            w: x1 - x0,
            h: y1 - y0,
        }
    }
}

/// Which part of the frame is sampled (`src`) and where it lands in the slot (`dst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    src: Region,
    dst: Region,
}

impl Plan {
    fn new(fw: usize, fh: usize, spec: &SlotSpec, mode: ResizeMode) -> Self {
        let (sw, sh) = (spec.width, spec.height);
        let src = Region::whole(fw, fh);
        let dst = Region::whole(sw, sh);
        // Aspect ratios are compared by cross-multiplying in u128: exact, and cannot overflow
        // for sides that fit in i32.
        let (fw_, fh_, sw_, sh_) = (fw as u128, fh as u128, sw as u128, sh as u128);
        let round_div = |a: u128, b: u128| ((a + b / 2) / b) as usize;
        match mode {
            ResizeMode::Stretch => Self { src, dst },
            ResizeMode::CenterCrop => {
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
            ResizeMode::Letterbox => {
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

/// One validated input plane: `height` rows of `width * cn` bytes, `stride` apart.
#[derive(Clone, Copy)]
struct Plane<'a> {
    data: &'a [u8],
    stride: usize,
    cn: usize,
}

impl<'a> Plane<'a> {
    /// Checks that plane `index` of `frame` really holds `height` rows of `width` pixels of
    /// `cn` bytes, so that wrapping it for OpenCV can never read out of bounds.
    fn new(
        frame: &Frame<'a>,
        index: usize,
        width: usize,
        height: usize,
        cn: usize,
    ) -> Result<Self, PreprocessError> {
        let data = frame.planes[index];
        let stride = frame.strides[index];
        let row_bytes = width * cn;
        if stride < row_bytes {
            return Err(PreprocessError::StrideTooSmall {
                plane: index,
                stride,
                row_bytes,
            });
        }
        // The last row needs only its pixels, not its padding: GStreamer may map the buffer
        // without trailing padding.
        let needed = (height - 1)
            .checked_mul(stride)
            .and_then(|n| n.checked_add(row_bytes))
            .unwrap_or(usize::MAX);
        if data.len() < needed {
            return Err(PreprocessError::PlaneTooSmall {
                plane: index,
                len: data.len(),
                rows: height,
                row_bytes,
                stride,
                needed,
            });
        }
        Ok(Self { data, stride, cn })
    }
}

/// The destination slot with its normalisation folded into one multiply-add per value.
enum Sink<'s> {
    F32 {
        out: &'s mut [f32],
        mul: [f32; 3],
        add: [f32; 3],
    },
    U8(&'s mut [u8]),
}

impl<'s> Sink<'s> {
    fn new(spec: &SlotSpec, norm: &Normalize, slot: SlotMut<'s>) -> Result<Self, PreprocessError> {
        Ok(match slot {
            SlotMut::F32(out) => {
                let mut mul = [0.0; 3];
                let mut add = [0.0; 3];
                for c in 0..spec.channel_count() {
                    let std = norm.std[c];
                    if std == 0.0 || !std.is_finite() {
                        return Err(PreprocessError::InvalidStd {
                            channel: c,
                            value: std,
                        });
                    }
                    mul[c] = norm.scale / std;
                    add[c] = -norm.mean[c] / std;
                }
                Self::F32 { out, mul, add }
            }
            SlotMut::U8(out) => Self::U8(out),
        })
    }

    /// Sets every value of the slot to the raw pixel value `pad` (the letterbox border).
    fn fill_all(&mut self, spec: &SlotSpec, pad: f32) {
        let cn = spec.channel_count();
        match self {
            Self::F32 { out, mul, add } => {
                for (i, v) in out.iter_mut().enumerate() {
                    let c = channel_of(spec, cn, i);
                    *v = pad * mul[c] + add[c];
                }
            }
            Self::U8(out) => out.fill((pad + 0.5) as u8),
        }
    }

    /// Writes pixels `x0 .. x0 + w` of slot row `y`. Model channel `c` takes the raw values
    /// (0..=255) `values[first + x * step]` of `src[c] = (values, first, step)`.
    #[inline]
    fn store(
        &mut self,
        spec: &SlotSpec,
        y: usize,
        x0: usize,
        w: usize,
        src: [(&[f32], usize, usize); 3],
    ) {
        let (sw, sh, cn) = (spec.width, spec.height, spec.channel_count());
        for (c, &(row, first, step)) in src.iter().enumerate().take(cn) {
            let values = row[first..].iter().step_by(step).take(w);
            // NCHW: index = c*h*w + p; NHWC: index = p*C + c (p = y*w + x).
            let (start, stride) = match spec.layout {
                Layout::Nchw => (c * sw * sh + y * sw + x0, 1),
                Layout::Nhwc => ((y * sw + x0) * cn + c, cn),
            };
            match self {
                // NCHW float from planar rows (YUV, grey) or RGB/RGBx pixels: a step known at
                // compile time, so the loop is vectorised (the general one below is not).
                Self::F32 { out, mul, add }
                    if stride == 1 && w > 0 && matches!(step, 1 | 3 | 4) =>
                {
                    let (m, a) = (mul[c], add[c]);
                    let dst = &mut out[start..start + w];
                    let row = &row[first..first + (w - 1) * step + 1];
                    match step {
                        1 => normalise_every::<1>(dst, row, m, a),
                        3 => normalise_every::<3>(dst, row, m, a),
                        _ => normalise_every::<4>(dst, row, m, a),
                    }
                }
                Self::F32 { out, mul, add } => {
                    let (m, a) = (mul[c], add[c]);
                    let dst = out[start..].iter_mut().step_by(stride).take(w);
                    for (d, &v) in dst.zip(values) {
                        *d = v * m + a;
                    }
                }
                Self::U8(out) => {
                    let dst = out[start..].iter_mut().step_by(stride).take(w);
                    for (d, &v) in dst.zip(values) {
                        // Values are in 0..=255; `as` saturates anyway.
                        *d = (v + 0.5) as u8;
                    }
                }
            }
        }
    }
}

/// `dst[x] = row[x * STEP] · m + a` for every `x` of `dst` (`row` holds at least
/// `(dst.len() - 1) · STEP + 1` values).
#[inline(always)]
fn normalise_every<const STEP: usize>(dst: &mut [f32], row: &[f32], m: f32, a: f32) {
    for (x, d) in dst.iter_mut().enumerate() {
        *d = row[x * STEP] * m + a;
    }
}

/// The channel of slot index `i`.
fn channel_of(spec: &SlotSpec, cn: usize, i: usize) -> usize {
    match spec.layout {
        Layout::Nchw => i / (spec.width * spec.height),
        Layout::Nhwc => i % cn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_FORMATS: [PixelFormat; 11] = [
        PixelFormat::Rgb,
        PixelFormat::Bgr,
        PixelFormat::Rgba,
        PixelFormat::Bgra,
        PixelFormat::Rgbx,
        PixelFormat::Bgrx,
        PixelFormat::Xrgb,
        PixelFormat::Xbgr,
        PixelFormat::Nv12,
        PixelFormat::I420,
        PixelFormat::Gray8,
    ];

    const IMAGENET: Normalize = Normalize {
        scale: 1.0 / 255.0,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    /// Byte that fills row padding; it must never show up in the output.
    const GARBAGE: u8 = 0xEE;

    fn is_yuv(f: PixelFormat) -> bool {
        matches!(f, PixelFormat::Nv12 | PixelFormat::I420)
    }

    /// Forward R'G'B' → Y'CbCr, the inverse of what the preprocessor does.
    fn rgb_to_yuv(rgb: [u8; 3], color: YuvColor) -> [u8; 3] {
        let (kr, kb) = match color.matrix {
            YuvMatrix::Bt601 => (0.299, 0.114),
            YuvMatrix::Bt709 => (0.2126, 0.0722),
        };
        let [r, g, b] = rgb.map(f64::from);
        let l = kr * r + (1.0 - kr - kb) * g + kb * b;
        let pb = (b - l) / (2.0 * (1.0 - kb));
        let pr = (r - l) / (2.0 * (1.0 - kr));
        let (y, u, v) = if color.full_range {
            (l, 128.0 + pb, 128.0 + pr)
        } else {
            (
                16.0 + l * 219.0 / 255.0,
                128.0 + pb * 224.0 / 255.0,
                128.0 + pr * 224.0 / 255.0,
            )
        };
        [y, u, v].map(|c| c.round().clamp(0.0, 255.0) as u8)
    }

    /// An owned frame for tests. Every row carries `pad` bytes of `GARBAGE` after its pixels.
    struct TestFrame {
        format: PixelFormat,
        width: usize,
        height: usize,
        planes: [Vec<u8>; 3],
        strides: [usize; 3],
        yuv: YuvColor,
    }

    impl TestFrame {
        /// Builds a frame whose pixel (x, y) has colour `rgb(x, y)`. Gray8 stores the luma;
        /// YUV formats take the chroma of the top-left pixel of each 2×2 block.
        fn new(
            format: PixelFormat,
            width: usize,
            height: usize,
            pad: usize,
            yuv: YuvColor,
            rgb: impl Fn(usize, usize) -> [u8; 3],
        ) -> Self {
            let mut planes: [Vec<u8>; 3] = Default::default();
            let mut strides = [0; 3];
            let mut plane =
                |i: usize, w: usize, h: usize, cn: usize, px: &dyn Fn(usize, usize) -> Vec<u8>| {
                    let stride = w * cn + pad;
                    let mut data = vec![GARBAGE; stride * h];
                    for y in 0..h {
                        for x in 0..w {
                            let o = y * stride + x * cn;
                            data[o..o + cn].copy_from_slice(&px(x, y));
                        }
                    }
                    planes[i] = data;
                    strides[i] = stride;
                };
            let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
            match format {
                PixelFormat::Gray8 => plane(0, width, height, 1, &|x, y| {
                    let [r, g, b] = rgb(x, y);
                    vec![luma_f(f32::from(r), f32::from(g), f32::from(b)).round() as u8]
                }),
                PixelFormat::Nv12 => {
                    plane(0, width, height, 1, &|x, y| {
                        vec![rgb_to_yuv(rgb(x, y), yuv)[0]]
                    });
                    plane(1, cw, ch, 2, &|x, y| {
                        rgb_to_yuv(rgb(2 * x, 2 * y), yuv)[1..].to_vec()
                    });
                }
                PixelFormat::I420 => {
                    plane(0, width, height, 1, &|x, y| {
                        vec![rgb_to_yuv(rgb(x, y), yuv)[0]]
                    });
                    plane(1, cw, ch, 1, &|x, y| {
                        vec![rgb_to_yuv(rgb(2 * x, 2 * y), yuv)[1]]
                    });
                    plane(2, cw, ch, 1, &|x, y| {
                        vec![rgb_to_yuv(rgb(2 * x, 2 * y), yuv)[2]]
                    });
                }
                packed => {
                    let FormatKind::Packed { bpp, rgb: offsets } = packed.kind() else {
                        unreachable!("{packed:?} is handled above")
                    };
                    plane(0, width, height, bpp, &|x, y| {
                        // Alpha / X bytes get a value unlike any colour channel.
                        let mut px = vec![77; bpp];
                        for (o, v) in offsets.iter().zip(rgb(x, y)) {
                            px[*o] = v;
                        }
                        px
                    });
                }
            }
            Self {
                format,
                width,
                height,
                planes,
                strides,
                yuv,
            }
        }

        fn solid(
            format: PixelFormat,
            width: usize,
            height: usize,
            pad: usize,
            rgb: [u8; 3],
        ) -> Self {
            Self::new(
                format,
                width,
                height,
                pad,
                YuvColor::default(),
                move |_, _| rgb,
            )
        }

        fn frame(&self) -> Frame<'_> {
            Frame {
                format: self.format,
                width: self.width,
                height: self.height,
                planes: [&self.planes[0], &self.planes[1], &self.planes[2]],
                strides: self.strides,
                yuv: self.yuv,
            }
        }
    }

    fn spec(layout: Layout, width: usize, height: usize, channels: ChannelOrder) -> SlotSpec {
        SlotSpec {
            layout,
            width,
            height,
            channels,
        }
    }

    fn run_f32(spec: SlotSpec, norm: Normalize, mode: ResizeMode, frame: &TestFrame) -> Vec<f32> {
        let mut out = vec![f32::NAN; spec.len()];
        Preprocessor::new(spec, norm, mode)
            .run(&frame.frame(), SlotMut::F32(&mut out))
            .expect("preprocess");
        out
    }

    fn run_u8(spec: SlotSpec, mode: ResizeMode, frame: &TestFrame) -> Vec<u8> {
        let mut out = vec![0xAB; spec.len()];
        Preprocessor::new(spec, Normalize::default(), mode)
            .run(&frame.frame(), SlotMut::U8(&mut out))
            .expect("preprocess");
        out
    }

    /// Value of channel `c` at (x, y) of a slot.
    fn at<T: Copy>(out: &[T], s: &SlotSpec, x: usize, y: usize, c: usize) -> T {
        match s.layout {
            Layout::Nchw => out[c * s.width * s.height + y * s.width + x],
            Layout::Nhwc => out[(y * s.width + x) * s.channel_count() + c],
        }
    }

    fn normalised(raw: f32, c: usize, n: &Normalize) -> f32 {
        (raw * n.scale - n.mean[c]) / n.std[c]
    }

    /// Raw values a model with `order` should see for input colour `rgb`.
    fn in_order(rgb: [u8; 3], order: ChannelOrder) -> [f32; 3] {
        let [r, g, b] = rgb.map(f32::from);
        match order {
            ChannelOrder::Rgb => [r, g, b],
            ChannelOrder::Bgr => [b, g, r],
            ChannelOrder::Gray => [
                luma_f(f32::from(rgb[0]), f32::from(rgb[1]), f32::from(rgb[2])),
                0.0,
                0.0,
            ],
        }
    }

    /// Asserts every pixel of `out` equals `expected_raw` (raw 0..255, model order) after
    /// normalisation, within `tol_raw` raw units.
    fn assert_solid(
        out: &[f32],
        s: &SlotSpec,
        n: &Normalize,
        expected_raw: [f32; 3],
        tol_raw: f32,
        what: &str,
    ) {
        for y in 0..s.height {
            for x in 0..s.width {
                for (c, &raw) in expected_raw.iter().enumerate().take(s.channel_count()) {
                    let got = at(out, s, x, y, c);
                    let want = normalised(raw, c, n);
                    let tol = tol_raw * n.scale / n.std[c] + 1e-5;
                    assert!(
                        (got - want).abs() <= tol,
                        "{what}: at ({x},{y}) channel {c}: got {got}, want {want} (±{tol})"
                    );
                }
            }
        }
    }

    fn colour_for(format: PixelFormat) -> [u8; 3] {
        // Gray8 can only hold gray; use one that is distinct from black and the garbage byte.
        if format == PixelFormat::Gray8 {
            [90, 90, 90]
        } else {
            [200, 30, 60]
        }
    }

    fn tolerance_for(format: PixelFormat) -> f32 {
        if is_yuv(format) { 3.0 } else { 0.0 }
    }

    #[test]
    fn solid_colour_every_format_order_and_layout() {
        for format in ALL_FORMATS {
            let rgb = colour_for(format);
            // Downscale (non-integer ratio), upscale and same size each take a different path.
            for (fw, fh, sw, sh) in [(37, 23, 8, 6), (6, 4, 16, 12), (10, 8, 10, 8)] {
                let frame = TestFrame::solid(format, fw, fh, 5, rgb);
                for order in [ChannelOrder::Rgb, ChannelOrder::Bgr] {
                    for layout in [Layout::Nchw, Layout::Nhwc] {
                        let s = spec(layout, sw, sh, order);
                        let out = run_f32(s, IMAGENET, ResizeMode::Stretch, &frame);
                        assert_solid(
                            &out,
                            &s,
                            &IMAGENET,
                            in_order(rgb, order),
                            tolerance_for(format),
                            &format!("{format:?} {fw}x{fh}->{sw}x{sh} {order:?} {layout:?}"),
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn channels_land_in_documented_positions() {
        // Spot-check the layout formulas directly rather than through the `at` helper.
        let frame = TestFrame::solid(PixelFormat::Rgb, 2, 2, 0, [10, 20, 30]);
        let nchw = run_u8(
            spec(Layout::Nchw, 2, 2, ChannelOrder::Bgr),
            ResizeMode::Stretch,
            &frame,
        );
        assert_eq!(nchw, vec![30, 30, 30, 30, 20, 20, 20, 20, 10, 10, 10, 10]);
        let nhwc = run_u8(
            spec(Layout::Nhwc, 2, 2, ChannelOrder::Bgr),
            ResizeMode::Stretch,
            &frame,
        );
        assert_eq!(nhwc, vec![30, 20, 10, 30, 20, 10, 30, 20, 10, 30, 20, 10]);
    }

    #[test]
    fn bt709_full_range_is_honoured() {
        let color = YuvColor {
            matrix: YuvMatrix::Bt709,
            full_range: true,
        };
        let rgb = [200, 30, 60];
        for format in [PixelFormat::Nv12, PixelFormat::I420] {
            let frame = TestFrame::new(format, 12, 10, 3, color, |_, _| rgb);
            let s = spec(Layout::Nchw, 6, 5, ChannelOrder::Rgb);
            let out = run_f32(s, Normalize::default(), ResizeMode::Stretch, &frame);
            assert_solid(
                &out,
                &s,
                &Normalize::default(),
                in_order(rgb, ChannelOrder::Rgb),
                3.0,
                "bt709 full",
            );

            // Read with the wrong matrix the colour must come out measurably different,
            // otherwise this test would not prove the matrix is used.
            let mut wrong = TestFrame::new(format, 12, 10, 3, color, |_, _| rgb);
            for misread in [
                YuvColor {
                    matrix: YuvMatrix::Bt601,
                    full_range: true,
                },
                YuvColor {
                    matrix: YuvMatrix::Bt709,
                    full_range: false,
                },
            ] {
                wrong.yuv = misread;
                let out = run_f32(s, Normalize::default(), ResizeMode::Stretch, &wrong);
                let red = at(&out, &s, 0, 0, 0) * 255.0;
                assert!((red - 200.0).abs() > 5.0, "{misread:?}: red {red}");
            }
        }
    }

    #[test]
    fn stride_padding_does_not_leak() {
        // Black pixels, 0xEE padding: any padding byte that reaches the output shows up as a
        // non-zero value (for YUV, 0xEE would be bright luma or strong chroma).
        for format in ALL_FORMATS {
            for (fw, fh, sw, sh) in [(9, 7, 9, 7), (31, 17, 7, 5), (5, 3, 13, 11)] {
                let frame = TestFrame::solid(format, fw, fh, 11, [0, 0, 0]);
                for mode in [
                    ResizeMode::Stretch,
                    ResizeMode::CenterCrop,
                    ResizeMode::Letterbox,
                ] {
                    let out = run_u8(spec(Layout::Nhwc, sw, sh, ChannelOrder::Rgb), mode, &frame);
                    assert!(
                        out.iter().all(|&v| v == 0),
                        "{format:?} {fw}x{fh}->{sw}x{sh} {mode:?}: padding leaked: {out:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn input_planes_are_not_modified() {
        for format in ALL_FORMATS {
            let frame = TestFrame::solid(format, 21, 13, 3, colour_for(format));
            let before = frame.planes.clone();
            run_u8(
                spec(Layout::Nchw, 8, 8, ChannelOrder::Rgb),
                ResizeMode::CenterCrop,
                &frame,
            );
            assert_eq!(before, frame.planes, "{format:?}");
        }
    }

    /// Left half red, next quarter green, right quarter blue.
    fn stripes(x: usize, width: usize) -> [u8; 3] {
        if x < width / 2 {
            [255, 0, 0]
        } else if x < width * 3 / 4 {
            [0, 255, 0]
        } else {
            [0, 0, 255]
        }
    }

    #[test]
    fn center_crop_takes_the_middle() {
        for format in [
            PixelFormat::Rgb,
            PixelFormat::Xbgr,
            PixelFormat::Nv12,
            PixelFormat::I420,
        ] {
            // 80x20 into 10x10: the crop is x in 30..50, red on the left, green on the right.
            let frame = TestFrame::new(format, 80, 20, 4, YuvColor::default(), |x, _| {
                stripes(x, 80)
            });
            let s = spec(Layout::Nchw, 10, 10, ChannelOrder::Rgb);
            let out = run_u8(s, ResizeMode::CenterCrop, &frame);
            for y in 0..10 {
                for x in 0..10 {
                    let px = [0, 1, 2].map(|c| at(&out, &s, x, y, c));
                    assert!(px[2] < 20, "{format:?}: blue at ({x},{y}): {px:?}");
                    if x < 4 {
                        assert!(
                            px[0] > 230 && px[1] < 25,
                            "{format:?}: ({x},{y}) not red: {px:?}"
                        );
                    }
                    if x >= 6 {
                        assert!(
                            px[1] > 230 && px[0] < 25,
                            "{format:?}: ({x},{y}) not green: {px:?}"
                        );
                    }
                }
            }
            // Stretch on the same frame does reach the blue quarter, so the assertions above
            // really depend on the crop.
            let stretched = run_u8(s, ResizeMode::Stretch, &frame);
            assert!(at(&stretched, &s, 9, 5, 2) > 200, "{format:?}");
        }
    }

    #[test]
    fn center_crop_of_a_tall_frame_crops_rows() {
        // 10 wide, 30 tall: top third red, middle green, bottom blue; a square crop is the
        // middle third.
        let frame = TestFrame::new(
            PixelFormat::Bgr,
            10,
            30,
            0,
            YuvColor::default(),
            |_, y| match y / 10 {
                0 => [255, 0, 0],
                1 => [0, 255, 0],
                _ => [0, 0, 255],
            },
        );
        let s = spec(Layout::Nhwc, 5, 5, ChannelOrder::Rgb);
        let out = run_u8(s, ResizeMode::CenterCrop, &frame);
        assert!(out.chunks(3).all(|px| px == [0, 255, 0]), "{out:?}");
    }

    #[test]
    fn letterbox_pads_top_and_bottom_with_black() {
        for format in [
            PixelFormat::Rgba,
            PixelFormat::Gray8,
            PixelFormat::Nv12,
            PixelFormat::I420,
        ] {
            let white = [255, 255, 255];
            // 40x10 into 20x20: content is 20x5 at rows 7..12.
            let frame = TestFrame::solid(format, 40, 10, 2, white);
            for layout in [Layout::Nchw, Layout::Nhwc] {
                let s = spec(layout, 20, 20, ChannelOrder::Rgb);
                let out = run_f32(s, IMAGENET, ResizeMode::Letterbox, &frame);
                for y in 0..20 {
                    // The border is written directly, so it must be exact; only the content
                    // goes through YUV rounding.
                    let (raw, tol_raw) = if (7..12).contains(&y) {
                        (255.0, 3.0)
                    } else {
                        (0.0, 0.0)
                    };
                    for x in 0..20 {
                        for c in 0..3 {
                            let want = normalised(raw, c, &IMAGENET);
                            let got = at(&out, &s, x, y, c);
                            assert!(
                                (got - want).abs() <= tol_raw / 255.0 / IMAGENET.std[c] + 1e-5,
                                "{format:?} {layout:?} ({x},{y}) c{c}: got {got}, want {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn letterbox_of_a_tall_frame_pads_left_and_right_with_custom_value() {
        let frame = TestFrame::solid(PixelFormat::Rgb, 10, 40, 0, [200, 30, 60]);
        let s = spec(Layout::Nhwc, 20, 20, ChannelOrder::Rgb);
        let mut out = vec![0; s.len()];
        Preprocessor::new(s, Normalize::default(), ResizeMode::Letterbox)
            .with_letterbox_pad(114)
            .run(&frame.frame(), SlotMut::U8(&mut out))
            .expect("preprocess");
        // Content is 5x20 at columns 7..12.
        for y in 0..20 {
            for x in 0..20 {
                let want = if (7..12).contains(&x) {
                    [200, 30, 60]
                } else {
                    [114; 3]
                };
                assert_eq!([0, 1, 2].map(|c| at(&out, &s, x, y, c)), want, "({x},{y})");
            }
        }
    }

    #[test]
    fn gray_model_gets_luma() {
        let rgb = [200, 30, 60];
        // 0.299*200 + 0.587*30 + 0.114*60
        let want = 84.25;
        for format in ALL_FORMATS {
            let frame = TestFrame::solid(format, 16, 12, 3, rgb);
            let expected = if format == PixelFormat::Gray8 {
                84.0
            } else {
                want
            };
            for layout in [Layout::Nchw, Layout::Nhwc] {
                let s = spec(layout, 8, 6, ChannelOrder::Gray);
                assert_eq!(s.len(), 48);
                let out = run_f32(s, IMAGENET, ResizeMode::Stretch, &frame);
                assert_solid(
                    &out,
                    &s,
                    &IMAGENET,
                    [expected, 0.0, 0.0],
                    tolerance_for(format),
                    &format!("{format:?} gray"),
                );
            }
        }
    }

    #[test]
    fn gray8_input_is_replicated_for_colour_models() {
        let frame = TestFrame::solid(PixelFormat::Gray8, 4, 4, 1, [90, 90, 90]);
        let out = run_u8(
            spec(Layout::Nchw, 4, 4, ChannelOrder::Bgr),
            ResizeMode::Stretch,
            &frame,
        );
        assert_eq!(out, vec![90; 48]);
    }

    #[test]
    fn u8_slot_gets_raw_pixels() {
        for format in ALL_FORMATS {
            let rgb = colour_for(format);
            let frame = TestFrame::solid(format, 14, 10, 2, rgb);
            for order in [ChannelOrder::Rgb, ChannelOrder::Bgr] {
                let s = spec(Layout::Nhwc, 7, 5, order);
                let out = run_u8(s, ResizeMode::Stretch, &frame);
                let want = in_order(rgb, order);
                let tol = tolerance_for(format);
                for (i, &v) in out.iter().enumerate() {
                    assert!(
                        (f32::from(v) - want[i % 3]).abs() <= tol,
                        "{format:?} {order:?} value {i}: {v} vs {}",
                        want[i % 3]
                    );
                }
            }
        }
    }

    #[test]
    fn short_plane_is_an_error() {
        for format in ALL_FORMATS {
            let frame = TestFrame::solid(format, 8, 6, 0, colour_for(format));
            let last = match format {
                PixelFormat::I420 => 2,
                PixelFormat::Nv12 => 1,
                _ => 0,
            };
            for plane in 0..=last {
                let short = &frame.planes[plane][..frame.planes[plane].len() - 1];
                let mut f = frame.frame();
                f.planes[plane] = short;
                let mut out = vec![0.0; 12];
                let err = Preprocessor::new(
                    spec(Layout::Nchw, 2, 2, ChannelOrder::Rgb),
                    Normalize::default(),
                    ResizeMode::Stretch,
                )
                .run(&f, SlotMut::F32(&mut out))
                .expect_err("short plane must be rejected");
                assert!(
                    matches!(err, PreprocessError::PlaneTooSmall { plane: p, .. } if p == plane),
                    "{format:?} plane {plane}: {err}"
                );
                assert!(out.iter().all(|&v| v == 0.0), "slot written on error");
            }
        }
    }

    #[test]
    fn last_row_without_padding_is_accepted() {
        // GStreamer may map a buffer that ends right after the last row's pixels.
        let frame = TestFrame::solid(PixelFormat::Rgb, 4, 3, 8, [1, 2, 3]);
        let mut f = frame.frame();
        let trimmed = &frame.planes[0][..frame.planes[0].len() - 8];
        f.planes[0] = trimmed;
        let mut out = vec![0; 12];
        Preprocessor::new(
            spec(Layout::Nhwc, 2, 2, ChannelOrder::Rgb),
            Normalize::default(),
            ResizeMode::Stretch,
        )
        .run(&f, SlotMut::U8(&mut out))
        .expect("trimmed last row");
        assert_eq!(out, [1, 2, 3].repeat(4));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let frame = TestFrame::solid(PixelFormat::Rgb, 4, 4, 0, [1, 2, 3]);
        let s = spec(Layout::Nchw, 2, 2, ChannelOrder::Rgb);
        let mut p = Preprocessor::new(s, Normalize::default(), ResizeMode::Stretch);

        let mut f = frame.frame();
        f.strides[0] = 11;
        let err = p.run(&f, SlotMut::F32(&mut [0.0; 12])).expect_err("stride");
        assert!(
            matches!(
                err,
                PreprocessError::StrideTooSmall {
                    stride: 11,
                    row_bytes: 12,
                    ..
                }
            ),
            "{err}"
        );

        let mut f = frame.frame();
        f.width = 0;
        let err = p.run(&f, SlotMut::F32(&mut [0.0; 12])).expect_err("empty");
        assert!(matches!(err, PreprocessError::EmptyFrame { .. }), "{err}");

        let err = p
            .run(&frame.frame(), SlotMut::F32(&mut [0.0; 11]))
            .expect_err("slot");
        assert!(
            matches!(
                err,
                PreprocessError::SlotLength {
                    expected: 12,
                    actual: 11
                }
            ),
            "{err}"
        );
        let err = p
            .run(&frame.frame(), SlotMut::U8(&mut [0; 13]))
            .expect_err("slot");
        assert!(
            matches!(
                err,
                PreprocessError::SlotLength {
                    expected: 12,
                    actual: 13
                }
            ),
            "{err}"
        );

        let mut missing = frame.frame();
        missing.format = PixelFormat::I420;
        missing.strides = [12, 2, 2];
        let err = p
            .run(&missing, SlotMut::F32(&mut [0.0; 12]))
            .expect_err("no chroma planes");
        assert!(
            matches!(err, PreprocessError::PlaneTooSmall { plane: 1, .. }),
            "{err}"
        );

        let bad_norm = Normalize {
            std: [1.0, 0.0, 1.0],
            ..Normalize::default()
        };
        let err = Preprocessor::new(s, bad_norm, ResizeMode::Stretch)
            .run(&frame.frame(), SlotMut::F32(&mut [0.0; 12]))
            .expect_err("std 0");
        assert!(
            matches!(err, PreprocessError::InvalidStd { channel: 1, .. }),
            "{err}"
        );

        let empty = spec(Layout::Nchw, 0, 2, ChannelOrder::Rgb);
        let err = Preprocessor::new(empty, Normalize::default(), ResizeMode::Stretch)
            .run(&frame.frame(), SlotMut::F32(&mut []))
            .expect_err("empty slot");
        assert!(matches!(err, PreprocessError::EmptySlot { .. }), "{err}");
    }

    #[test]
    fn one_pixel_frames_work() {
        for format in ALL_FORMATS {
            let rgb = colour_for(format);
            let frame = TestFrame::solid(format, 1, 1, 3, rgb);
            for mode in [
                ResizeMode::Stretch,
                ResizeMode::CenterCrop,
                ResizeMode::Letterbox,
            ] {
                for (sw, sh) in [(1, 1), (4, 4)] {
                    let s = spec(Layout::Nchw, sw, sh, ChannelOrder::Bgr);
                    let out = run_f32(s, IMAGENET, mode, &frame);
                    assert_solid(
                        &out,
                        &s,
                        &IMAGENET,
                        in_order(rgb, ChannelOrder::Bgr),
                        tolerance_for(format),
                        &format!("{format:?} 1x1 {mode:?} -> {sw}x{sh}"),
                    );
                }
            }
        }
    }

    #[test]
    fn odd_sized_yuv_frames_work() {
        let rgb = [200, 30, 60];
        for format in [PixelFormat::Nv12, PixelFormat::I420] {
            // No row padding, so the chroma planes are exactly ceil(w/2) x ceil(h/2).
            let frame = TestFrame::solid(format, 33, 17, 0, rgb);
            assert_eq!(
                frame.planes[1].len(),
                if format == PixelFormat::Nv12 {
                    17 * 2 * 9
                } else {
                    17 * 9
                }
            );
            for mode in [
                ResizeMode::Stretch,
                ResizeMode::CenterCrop,
                ResizeMode::Letterbox,
            ] {
                for (sw, sh) in [(33, 17), (16, 16), (7, 9)] {
                    let s = spec(Layout::Nhwc, sw, sh, ChannelOrder::Rgb);
                    let out = run_u8(s, mode, &frame);
                    let plan = Plan::new(33, 17, &s, mode);
                    for y in 0..sh {
                        for x in 0..sw {
                            let inside = (plan.dst.x..plan.dst.x + plan.dst.w).contains(&x)
                                && (plan.dst.y..plan.dst.y + plan.dst.h).contains(&y);
                            let want = if inside { rgb } else { [0; 3] };
                            for (c, &w) in want.iter().enumerate() {
                                let got = at(&out, &s, x, y, c);
                                assert!(
                                    got.abs_diff(w) <= 3,
                                    "{format:?} {mode:?} {sw}x{sh} ({x},{y}) c{c}: {got} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn odd_sized_yuv_keeps_chroma_aligned() {
        // Left 16 columns red, the rest blue, 33x17: with centre-crop to 17x17 the crop starts
        // at column 8 (luma) / 4 (chroma), so the colour edge sits near output column 8.
        for format in [PixelFormat::Nv12, PixelFormat::I420] {
            let frame = TestFrame::new(format, 33, 17, 1, YuvColor::default(), |x, _| {
                if x < 16 { [255, 0, 0] } else { [0, 0, 255] }
            });
            let s = spec(Layout::Nhwc, 17, 17, ChannelOrder::Rgb);
            let out = run_u8(s, ResizeMode::CenterCrop, &frame);
            for y in 0..17 {
                for x in (0..6).chain(11..17) {
                    let px = [0, 1, 2].map(|c| at(&out, &s, x, y, c));
                    let (hi, lo) = if x < 6 {
                        (px[0], px[2])
                    } else {
                        (px[2], px[0])
                    };
                    assert!(hi > 200 && lo < 40, "{format:?} ({x},{y}): {px:?}");
                }
            }
        }
    }

    #[test]
    fn plan_geometry() {
        let s = spec(Layout::Nchw, 20, 20, ChannelOrder::Rgb);
        assert_eq!(
            Plan::new(40, 10, &s, ResizeMode::Letterbox).dst,
            Region {
                x: 0,
                y: 7,
                w: 20,
                h: 5
            }
        );
        assert_eq!(
            Plan::new(80, 20, &s, ResizeMode::CenterCrop).src,
            Region {
                x: 30,
                y: 0,
                w: 20,
                h: 20
            }
        );
        let wide = spec(Layout::Nchw, 16, 9, ChannelOrder::Rgb);
        assert_eq!(
            Plan::new(100, 100, &wide, ResizeMode::CenterCrop).src,
            Region {
                x: 0,
                y: 22,
                w: 100,
                h: 56
            }
        );
        assert_eq!(
            Region {
                x: 7,
                y: 3,
                w: 10,
                h: 5
            }
            .chroma(17, 9),
            Region {
                x: 3,
                y: 1,
                w: 6,
                h: 3
            }
        );
    }

    #[test]
    fn scratch_is_reused_across_frames() {
        let s = spec(Layout::Nchw, 8, 8, ChannelOrder::Rgb);
        let mut p = Preprocessor::new(s, IMAGENET, ResizeMode::Stretch);
        let mut out = vec![0.0; s.len()];
        let a = TestFrame::solid(PixelFormat::I420, 32, 24, 0, [200, 30, 60]);
        let b = TestFrame::solid(PixelFormat::I420, 32, 24, 0, [10, 220, 40]);
        p.run(&a.frame(), SlotMut::F32(&mut out)).expect("first");
        let buffers = (p.acc.as_ptr(), p.rows.each_ref().map(|r| r.as_ptr()));
        assert!(p.rows.iter().all(|r| !r.is_empty()));
        p.run(&b.frame(), SlotMut::F32(&mut out)).expect("second");
        assert_eq!(
            buffers,
            (p.acc.as_ptr(), p.rows.each_ref().map(|r| r.as_ptr()))
        );
        // And the second frame's content, not the first's, is what was written.
        assert_solid(
            &out,
            &s,
            &IMAGENET,
            [10.0, 220.0, 40.0],
            3.0,
            "second frame",
        );
    }

    #[test]
    fn large_downscale_averages_fine_detail() {
        // One-pixel red/blue stripes and a 2-pixel checker of green: a 1080p frame brought
        // to 224×224 must average them (no aliasing), in every layout of the stages: the
        // exact 2× halvings and the final area step.
        let pattern = |x: usize, y: usize| {
            if (x / 2 + y / 2).is_multiple_of(2) {
                [0, 200, 0]
            } else if x.is_multiple_of(2) {
                [240, 0, 0]
            } else {
                [0, 0, 240]
            }
        };
        let expected = [60.0, 100.0, 60.0];
        for (format, pad) in [(PixelFormat::Rgb, 0), (PixelFormat::Bgrx, 12)] {
            for (w, h) in [(1920, 1080), (1921, 1079)] {
                let frame = TestFrame::new(format, w, h, pad, YuvColor::default(), pattern);
                let s = spec(Layout::Nchw, 224, 224, ChannelOrder::Rgb);
                let out = run_u8(s, ResizeMode::Stretch, &frame);
                for y in (0..224).step_by(37) {
                    for x in (0..224).step_by(41) {
                        for (c, want) in expected.iter().enumerate() {
                            let v = f32::from(at(&out, &s, x, y, c));
                            assert!(
                                (v - want).abs() <= 6.0,
                                "{format:?} {w}x{h} at ({x},{y}) channel {c}: {v}, expected ~{want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// An owned copy of `rect` of `frame`'s picture, built the way the test frames are.
    fn cropped_copy(
        format: PixelFormat,
        rect: Rect,
        rgb: &dyn Fn(usize, usize) -> [u8; 3],
    ) -> TestFrame {
        TestFrame::new(
            format,
            rect.width,
            rect.height,
            3,
            YuvColor::default(),
            |x, y| rgb(rect.x + x, rect.y + y),
        )
    }

    #[test]
    fn a_crop_preprocesses_like_a_frame_of_only_its_pixels() {
        // A picture with detail everywhere, so any offset error changes the tensor.
        let rgb = |x: usize, y: usize| {
            [
                (x * 7 + y * 3) as u8,
                ((x * 13) ^ (y * 5)) as u8,
                ((x / 3 + y / 2) * 29) as u8,
            ]
        };
        let s = spec(Layout::Nchw, 8, 6, ChannelOrder::Rgb);
        let formats = [
            PixelFormat::Rgb,
            PixelFormat::Bgrx,
            PixelFormat::Xbgr,
            PixelFormat::Gray8,
            PixelFormat::Nv12,
            PixelFormat::I420,
        ];
        // Odd and even origins and sizes, one at the frame's corner.
        let rects = [
            Rect {
                x: 0,
                y: 0,
                width: 16,
                height: 12,
            },
            Rect {
                x: 5,
                y: 3,
                width: 11,
                height: 9,
            },
            Rect {
                x: 4,
                y: 6,
                width: 20,
                height: 14,
            },
            Rect {
                x: 40,
                y: 27,
                width: 5,
                height: 4,
            },
            Rect {
                x: 44,
                y: 30,
                width: 1,
                height: 1,
            },
        ];
        for format in formats {
            let frame = TestFrame::new(format, 45, 31, 5, YuvColor::default(), rgb);
            for rect in rects {
                let (view, used) = frame.frame().crop(rect).expect("inside");
                if format.subsampled() {
                    assert_eq!((used.x % 2, used.y % 2), (0, 0), "{format:?} {rect:?}");
                    assert!(used.x + 1 >= rect.x && used.y + 1 >= rect.y);
                    assert_eq!(used.x + used.width, rect.x + rect.width);
                    assert_eq!(used.y + used.height, rect.y + rect.height);
                } else {
                    assert_eq!(used, rect);
                }
                let copy = cropped_copy(format, used, &rgb);
                let norm = Normalize::default();
                let mut p = Preprocessor::new(s, norm, ResizeMode::Stretch);
                let mut got = vec![0.0; s.len()];
                p.run(&view, SlotMut::F32(&mut got)).expect("crop");
                let want = run_f32(s, norm, ResizeMode::Stretch, &copy);
                // The copy takes each 2×2 block's chroma from its own top-left pixel, which
                // (on an even origin) is the frame's block: the tensors must be equal.
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5,
                        "{format:?} {rect:?} value {i}: crop {g} vs copy {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn crops_outside_the_frame_or_empty_are_errors() {
        let frame = TestFrame::solid(PixelFormat::Rgb, 20, 10, 0, [1, 2, 3]);
        let f = frame.frame();
        for rect in [
            Rect {
                x: 0,
                y: 0,
                width: 0,
                height: 5,
            },
            Rect {
                x: 0,
                y: 0,
                width: 5,
                height: 0,
            },
            Rect {
                x: 16,
                y: 0,
                width: 5,
                height: 5,
            },
            Rect {
                x: 0,
                y: 6,
                width: 5,
                height: 5,
            },
            Rect {
                x: usize::MAX,
                y: 0,
                width: 2,
                height: 2,
            },
            Rect {
                x: 0,
                y: 20,
                width: 1,
                height: 1,
            },
        ] {
            let err = f.crop(rect).err().expect("refused");
            assert!(
                err.to_string().contains("not inside the 20x10 frame"),
                "{err}"
            );
        }
        // A plane shorter than its declared rows is reported, not read past its end.
        let short = Frame {
            planes: [&frame.planes[0][..30], &[], &[]],
            ..f
        };
        let err = short
            .crop(Rect {
                x: 0,
                y: 5,
                width: 2,
                height: 2,
            })
            .err()
            .expect("refused");
        assert!(matches!(err, PreprocessError::CropPlane { .. }), "{err}");
    }

    #[test]
    fn preprocessor_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Preprocessor>();
    }
}
