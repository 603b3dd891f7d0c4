//! The fused preprocessing path (`gstvision::preprocess`) against an independent reference on
//! real photos: each plane is resized in `f32` one axis at a time (OpenCV's `INTER_AREA` or
//! `INTER_NEAREST`, or bilinear written out in f64, as the filter defines that axis), then the
//! colour conversion and normalisation are written out per pixel from their textbook formulas.
//! The preprocessor rounds resampled plane values to 8 bits (as an OpenCV/PIL training
//! pipeline does): float slots must then be the reference rounded, within 1e-5 (a value on a
//! rounding tie may go either way), `u8` slots within 1 — for every format the element accepts,
//! odd sizes, crops, and every filter; values converted from several samples (Y'CbCr, luma)
//! within the rounding each sample adds.

mod support;

use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gstvision::preprocess::{
    ChannelOrder, Frame, Layout, Normalize, PixelFormat, Preprocessor, Rect, ResizeFilter,
    ResizeMode, SlotMut, SlotSpec, YuvColor,
};
use opencv::{core, imgproc, prelude::*};

const IMAGENET: Normalize = Normalize {
    scale: 1.0 / 255.0,
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
};

/// A decoded photo in one pixel format and size, as GStreamer's own converter makes it.
struct Decoded {
    buffer: gst::Buffer,
    info: gst_video::VideoInfo,
}

fn decode(photo: &str, format: &str, width: usize, height: usize) -> Decoded {
    support::plugin::init();
    // The photos `scripts/setup.sh` takes from the scikit-image wheel.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.deps/data/photos")
        .join(photo);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh",
        path.display()
    );
    let path = path.display();
    let description = format!(
        "filesrc location={path} ! decodebin ! videoconvert ! videoscale ! \
         video/x-raw,format={format},width={width},height={height} ! \
         fakesink name=sink signal-handoffs=true"
    );
    let pipeline = gst::parse::launch(&description)
        .expect("pipeline")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    let sink = pipeline.by_name("sink").expect("sink");
    let got: Arc<Mutex<Option<(gst::Buffer, gst::Caps)>>> = Arc::default();
    let slot = got.clone();
    sink.connect("handoff", false, move |args| {
        let buffer = args[1].get::<gst::Buffer>().expect("buffer");
        let pad = args[2].get::<gst::Pad>().expect("pad");
        let caps = pad.current_caps().expect("caps");
        slot.lock().expect("lock").get_or_insert((buffer, caps));
        None
    });
    pipeline.set_state(gst::State::Playing).expect("playing");
    let bus = pipeline.bus().expect("bus");
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS or error");
    assert!(
        matches!(msg.view(), gst::MessageView::Eos(_)),
        "decoding {photo}: {msg:?}"
    );
    pipeline.set_state(gst::State::Null).expect("null");
    let (buffer, caps) = got.lock().expect("lock").take().expect("one frame");
    let info = gst_video::VideoInfo::from_caps(&caps).expect("video caps");
    Decoded { buffer, info }
}

fn pixel_format(name: &str) -> PixelFormat {
    match name {
        "RGB" => PixelFormat::Rgb,
        "BGR" => PixelFormat::Bgr,
        "RGBx" => PixelFormat::Rgbx,
        "BGRx" => PixelFormat::Bgrx,
        "xRGB" => PixelFormat::Xrgb,
        "NV12" => PixelFormat::Nv12,
        "I420" => PixelFormat::I420,
        "GRAY8" => PixelFormat::Gray8,
        other => panic!("no test format {other}"),
    }
}

/// Planes of a format: (plane index, bytes per sample, subsampled 2×2).
fn planes_of(format: PixelFormat) -> Vec<(usize, usize, bool)> {
    match format {
        PixelFormat::Rgb | PixelFormat::Bgr => vec![(0, 3, false)],
        PixelFormat::Gray8 => vec![(0, 1, false)],
        PixelFormat::Nv12 => vec![(0, 1, false), (1, 2, true)],
        PixelFormat::I420 => vec![(0, 1, false), (1, 1, true), (2, 1, true)],
        _ => vec![(0, 4, false)],
    }
}

/// An image of `f32` samples: `h` rows of `w` pixels of `cn` channels.
#[derive(Clone)]
struct Image {
    w: usize,
    h: usize,
    cn: usize,
    data: Vec<f32>,
}

impl Image {
    fn transposed(&self) -> Image {
        let mut data = vec![0.0; self.data.len()];
        for y in 0..self.h {
            for x in 0..self.w {
                for c in 0..self.cn {
                    data[(x * self.h + y) * self.cn + c] =
                        self.data[(y * self.w + x) * self.cn + c];
                }
            }
        }
        Image {
            w: self.h,
            h: self.w,
            cn: self.cn,
            data,
        }
    }
}

/// Resizes the rows of `img` to `dw` pixels with OpenCV (`INTER_AREA` or `INTER_NEAREST`).
fn opencv_rows(img: &Image, dw: usize, interpolation: i32) -> Image {
    let typ = core::CV_MAKETYPE(core::CV_32F, img.cn as i32);
    let mut src = core::Mat::new_rows_cols_with_default(
        img.h as i32,
        img.w as i32,
        typ,
        core::Scalar::all(0.0),
    )
    .expect("mat");
    for (o, v) in src
        .data_bytes_mut()
        .expect("bytes")
        .chunks_exact_mut(4)
        .zip(&img.data)
    {
        o.copy_from_slice(&v.to_ne_bytes());
    }
    let mut out = core::Mat::default();
    imgproc::resize(
        &src,
        &mut out,
        core::Size::new(dw as i32, img.h as i32),
        0.0,
        0.0,
        interpolation,
    )
    .expect("resize");
    let data = out
        .data_bytes()
        .expect("bytes")
        .chunks_exact(4)
        .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Image {
        w: dw,
        h: img.h,
        cn: img.cn,
        data,
    }
}

/// Bilinear resize of the rows of `img` to `dw` pixels, from the definition in f64 (OpenCV's
/// `INTER_LINEAR` computes sample positions in single precision, too coarse for a 1e-5
/// reference): sample centre `(x + 0.5) · scale − 0.5`, clamped at the edges.
fn bilinear_rows(img: &Image, dw: usize) -> Image {
    let scale = img.w as f64 / dw as f64;
    let mut data = Vec::with_capacity(dw * img.h * img.cn);
    for y in 0..img.h {
        for x in 0..dw {
            let pos = ((x as f64 + 0.5) * scale - 0.5).max(0.0);
            let x0 = (pos.floor() as usize).min(img.w - 1);
            let x1 = (x0 + 1).min(img.w - 1);
            let f = if x0 == img.w - 1 {
                0.0
            } else {
                pos - x0 as f64
            };
            for c in 0..img.cn {
                let a = f64::from(img.data[(y * img.w + x0) * img.cn + c]);
                let b = f64::from(img.data[(y * img.w + x1) * img.cn + c]);
                data.push((a * (1.0 - f) + b * f) as f32);
            }
        }
    }
    Image {
        w: dw,
        h: img.h,
        cn: img.cn,
        data,
    }
}

/// The filter's 1-D resize of the rows of `img` to `dw` pixels.
fn resize_rows(img: &Image, dw: usize, filter: ResizeFilter) -> Image {
    match filter {
        ResizeFilter::Nearest => opencv_rows(img, dw, imgproc::INTER_NEAREST),
        ResizeFilter::Area if img.w > dw => opencv_rows(img, dw, imgproc::INTER_AREA),
        // Bilinear, and Area on an enlarged axis.
        _ => bilinear_rows(img, dw),
    }
}

/// Region `x, y, w, h` of a plane with `cn` channels, resized to `dw`×`dh` one axis at a time
/// (rows, then columns as the rows of the transposed image); `dh` rows of `dw * cn` values.
fn reference_plane(
    data: &[u8],
    stride: usize,
    cn: usize,
    (x, y, w, h): (usize, usize, usize, usize),
    (dw, dh): (usize, usize),
    filter: ResizeFilter,
) -> Vec<f32> {
    let mut pixels = Vec::with_capacity(w * h * cn);
    for row in 0..h {
        let start = (y + row) * stride + x * cn;
        pixels.extend(data[start..start + w * cn].iter().map(|&v| f32::from(v)));
    }
    let img = Image {
        w,
        h,
        cn,
        data: pixels,
    };
    let across = resize_rows(&img, dw, filter);
    resize_rows(&across.transposed(), dh, filter)
        .transposed()
        .data
}

/// R'G'B' of a Y'CbCr sample, BT.601 limited range (the frames' colorimetry in this test).
fn bt601_limited(y: f32, u: f32, v: f32) -> [f32; 3] {
    let (kr, kb) = (0.299_f32, 0.114_f32);
    let kg = 1.0 - kr - kb;
    let l = (y - 16.0) * 255.0 / 219.0;
    let pb = (u - 128.0) * 255.0 / 224.0;
    let pr = (v - 128.0) * 255.0 / 224.0;
    let r = l + 2.0 * (1.0 - kr) * pr;
    let b = l + 2.0 * (1.0 - kb) * pb;
    let g = (l - kr * r - kb * b) / kg;
    [r, g, b].map(|c| c.clamp(0.0, 255.0))
}

/// Raw model-channel values (0..255) of every slot pixel, row-major, from the reference.
fn reference(
    frame: &Frame<'_>,
    rect: Rect,
    (dw, dh): (usize, usize),
    channels: ChannelOrder,
    filter: ResizeFilter,
) -> Vec<[f32; 3]> {
    let planes: Vec<Vec<f32>> = planes_of(frame.format)
        .into_iter()
        .map(|(index, cn, sub)| {
            let region = if sub {
                let (cw, ch) = (frame.width.div_ceil(2), frame.height.div_ceil(2));
                let (x0, y0) = ((rect.x / 2).min(cw - 1), (rect.y / 2).min(ch - 1));
                let x1 = (rect.x + rect.width).div_ceil(2).clamp(x0 + 1, cw);
                let y1 = (rect.y + rect.height).div_ceil(2).clamp(y0 + 1, ch);
                (x0, y0, x1 - x0, y1 - y0)
            } else {
                (rect.x, rect.y, rect.width, rect.height)
            };
            reference_plane(
                frame.planes[index],
                frame.strides[index],
                cn,
                region,
                (dw, dh),
                filter,
            )
        })
        .collect();
    (0..dw * dh)
        .map(|p| {
            let rgb = match frame.format {
                PixelFormat::Nv12 => {
                    bt601_limited(planes[0][p], planes[1][2 * p], planes[1][2 * p + 1])
                }
                PixelFormat::I420 => bt601_limited(planes[0][p], planes[1][p], planes[2][p]),
                PixelFormat::Gray8 => [planes[0][p]; 3],
                PixelFormat::Rgb => [0, 1, 2].map(|c| planes[0][3 * p + c]),
                PixelFormat::Bgr => [2, 1, 0].map(|c| planes[0][3 * p + c]),
                PixelFormat::Rgbx => [0, 1, 2].map(|c| planes[0][4 * p + c]),
                PixelFormat::Bgrx => [2, 1, 0].map(|c| planes[0][4 * p + c]),
                PixelFormat::Xrgb => [1, 2, 3].map(|c| planes[0][4 * p + c]),
                other => panic!("no reference for {other:?}"),
            };
            match channels {
                ChannelOrder::Rgb => rgb,
                ChannelOrder::Bgr => [rgb[2], rgb[1], rgb[0]],
                ChannelOrder::Gray if frame.format == PixelFormat::Gray8 => rgb,
                ChannelOrder::Gray
                    if matches!(frame.format, PixelFormat::Nv12 | PixelFormat::I420) =>
                {
                    let l = ((planes[0][p] - 16.0) * 255.0 / 219.0).clamp(0.0, 255.0);
                    [l; 3]
                }
                ChannelOrder::Gray => {
                    let l = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
                    [l; 3]
                }
            }
        })
        .collect()
}

/// Runs the preprocessor on `rect` of the decoded photo and compares with the reference, for a
/// float slot (NCHW, ImageNet normalisation) and a `u8` slot (NHWC).
fn check(decoded: &Decoded, rect: Option<Rect>, channels: ChannelOrder, filter: ResizeFilter) {
    let map = gst_video::VideoFrameRef::from_buffer_ref_readable(&decoded.buffer, &decoded.info)
        .expect("map");
    let format = pixel_format(decoded.info.format().to_str().as_str());
    let n = decoded.info.n_planes() as usize;
    let mut planes: [&[u8]; 3] = [&[], &[], &[]];
    let mut strides = [0; 3];
    for i in 0..n {
        planes[i] = map.plane_data(i as u32).expect("plane");
        strides[i] = decoded.info.stride()[i] as usize;
    }
    let whole = Frame {
        format,
        width: decoded.info.width() as usize,
        height: decoded.info.height() as usize,
        planes,
        strides,
        yuv: YuvColor::default(),
    };
    let full = Rect {
        x: 0,
        y: 0,
        width: whole.width,
        height: whole.height,
    };
    let (frame, rect) = match rect {
        Some(r) => whole.crop(r).expect("crop"),
        None => (whole, full),
    };
    let (dw, dh) = (224, 224);
    let want = reference(&whole, rect, (dw, dh), channels, filter);
    let what = format!(
        "{format:?} {}x{} region {rect:?} {channels:?} {}",
        whole.width,
        whole.height,
        filter.name()
    );
    let cn = if channels == ChannelOrder::Gray { 1 } else { 3 };

    let spec = SlotSpec {
        layout: Layout::Nchw,
        width: dw,
        height: dh,
        channels,
    };
    let mut pre = Preprocessor::new(spec, IMAGENET, ResizeMode::Stretch).with_filter(filter);
    let mut out = vec![0.0_f32; spec.len()];
    pre.run(&frame, SlotMut::F32(&mut out)).expect("run");
    let mut worst = 0.0_f32;
    for (p, raw) in want.iter().enumerate() {
        for c in 0..cn {
            let normal = |v: f32| (v * IMAGENET.scale - IMAGENET.mean[c]) / IMAGENET.std[c];
            let got = out[c * dw * dh + p];
            // Our raw value, back from the normalised one.
            let got_raw = (got * IMAGENET.std[c] + IMAGENET.mean[c]) / IMAGENET.scale;
            worst = worst.max((got_raw - raw[c]).abs());
            // Resampled plane values are rounded to 8 bits before conversion; the reference
            // is exact, so each tensor value must lie within half a step of it (plus the
            // conversion's spread for Y'CbCr and luma), and a value whose plane samples sit on
            // a rounding tie may land one step either way.
            let slack = if rounded_before_conversion(frame.format, channels) {
                2.0
            } else {
                0.5
            };
            assert!(
                (got_raw - raw[c]).abs() <= slack + 1e-3,
                "{what}: f32 pixel {p} channel {c}: {got} (raw {got_raw}) vs reference raw {}",
                raw[c]
            );
            if slack == 0.5 && (raw[c] - raw[c].floor() - 0.5).abs() > 1e-3 {
                let expected = normal((raw[c] + 0.5).floor());
                assert!(
                    (got - expected).abs() <= 1e-5,
                    "{what}: f32 pixel {p} channel {c}: {got} vs reference {expected}"
                );
            }
        }
    }

    let spec = SlotSpec {
        layout: Layout::Nhwc,
        ..spec
    };
    let mut pre = Preprocessor::new(spec, IMAGENET, ResizeMode::Stretch).with_filter(filter);
    let mut out = vec![0_u8; spec.len()];
    pre.run(&frame, SlotMut::U8(&mut out)).expect("run");
    for (p, raw) in want.iter().enumerate() {
        for c in 0..cn {
            let got = f32::from(out[p * cn + c]);
            let slack = if rounded_before_conversion(frame.format, channels) {
                2.5
            } else {
                1.0
            };
            assert!(
                (got - raw[c]).abs() <= slack,
                "{what}: u8 pixel {p} channel {c}: {got} vs reference {}",
                raw[c]
            );
        }
    }
    eprintln!("{what}: largest raw difference {worst}");
}

/// Whether the tensor values are computed from several rounded plane samples (Y'CbCr → RGB,
/// RGB → luma), so the rounding of each sample adds up.
fn rounded_before_conversion(format: PixelFormat, channels: ChannelOrder) -> bool {
    matches!(format, PixelFormat::Nv12 | PixelFormat::I420)
        || (channels == ChannelOrder::Gray && format != PixelFormat::Gray8)
}

const FILTERS: [ResizeFilter; 3] = [
    ResizeFilter::Area,
    ResizeFilter::Bilinear,
    ResizeFilter::Nearest,
];

#[test]
fn full_hd_frames_of_every_format_match_the_reference() {
    for format in ["RGB", "BGRx", "RGBx", "xRGB", "NV12", "I420", "GRAY8"] {
        let decoded = decode("chelsea.png", format, 1920, 1080);
        for filter in FILTERS {
            check(&decoded, None, ChannelOrder::Rgb, filter);
        }
        check(&decoded, None, ChannelOrder::Bgr, ResizeFilter::Area);
        check(&decoded, None, ChannelOrder::Gray, ResizeFilter::Area);
    }
}

#[test]
fn odd_sizes_and_enlarged_axes_match_the_reference() {
    // 641x479: both axes shrink by non-integer factors; 333x199 enlarges the rows; 97x61
    // enlarges both.
    for (w, h) in [(641, 479), (333, 199), (97, 61)] {
        for format in ["RGB", "NV12", "I420", "BGR"] {
            let decoded = decode("coffee.png", format, w, h);
            for filter in FILTERS {
                check(&decoded, None, ChannelOrder::Rgb, filter);
            }
        }
    }
}

#[test]
fn crops_match_the_reference() {
    let rect = Rect {
        x: 174,
        y: 62,
        width: 301,
        height: 97,
    };
    for format in ["RGB", "BGRx", "NV12", "I420"] {
        let decoded = decode("astronaut.png", format, 512, 512);
        for filter in FILTERS {
            check(&decoded, Some(rect), ChannelOrder::Rgb, filter);
        }
    }
}
