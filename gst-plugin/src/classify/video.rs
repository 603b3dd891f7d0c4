//! Glue between GStreamer's video description and the plain preprocessing module.

use gst_video::prelude::*;
use gst_video::{VideoColorMatrix, VideoColorRange, VideoFormat, VideoInfo};

use crate::preprocess::{Frame, PixelFormat, YuvColor, YuvMatrix};

/// The formats the sink pad accepts, in caps order.
pub const FORMATS: &[VideoFormat] = &[
    VideoFormat::Rgb,
    VideoFormat::Bgr,
    VideoFormat::Rgba,
    VideoFormat::Bgra,
    VideoFormat::Rgbx,
    VideoFormat::Bgrx,
    VideoFormat::Xrgb,
    VideoFormat::Xbgr,
    VideoFormat::Nv12,
    VideoFormat::I420,
    VideoFormat::Gray8,
];

pub fn pixel_format(format: VideoFormat) -> Option<PixelFormat> {
    Some(match format {
        VideoFormat::Rgb => PixelFormat::Rgb,
        VideoFormat::Bgr => PixelFormat::Bgr,
        VideoFormat::Rgba => PixelFormat::Rgba,
        VideoFormat::Bgra => PixelFormat::Bgra,
        VideoFormat::Rgbx => PixelFormat::Rgbx,
        VideoFormat::Bgrx => PixelFormat::Bgrx,
        VideoFormat::Xrgb => PixelFormat::Xrgb,
        VideoFormat::Xbgr => PixelFormat::Xbgr,
        VideoFormat::Nv12 => PixelFormat::Nv12,
        VideoFormat::I420 => PixelFormat::I420,
        VideoFormat::Gray8 => PixelFormat::Gray8,
        _ => return None,
    })
}

/// Y'CbCr → RGB parameters from the caps' colorimetry (BT.601 limited range when unknown).
pub fn yuv_color(info: &VideoInfo) -> YuvColor {
    let c = info.colorimetry();
    YuvColor {
        matrix: match c.matrix() {
            VideoColorMatrix::Bt709 => YuvMatrix::Bt709,
            _ => YuvMatrix::Bt601,
        },
        full_range: c.range() == VideoColorRange::Range0_255,
    }
}

/// A borrowed view of a mapped frame for the preprocessor.
pub fn frame_view<'a>(
    frame: &'a gst_video::VideoFrameRef<&'a gst::BufferRef>,
    format: PixelFormat,
    yuv: YuvColor,
) -> Frame<'a> {
    let plane = |i: u32| frame.plane_data(i).unwrap_or(&[]);
    let strides = frame.plane_stride();
    let stride = |i: usize| strides.get(i).map_or(0, |s| (*s).max(0) as usize);
    Frame {
        format,
        width: frame.width() as usize,
        height: frame.height() as usize,
        planes: [plane(0), plane(1), plane(2)],
        strides: [stride(0), stride(1), stride(2)],
        yuv,
    }
}
