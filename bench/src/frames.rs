//! The benchmark's input video: a small pool of frames made once by `videotestsrc`, before
//! anything is timed, and pushed again and again so that the source costs next to nothing.

use anyhow::{Context, Result, bail};
use gst::prelude::*;
use gstvision::classify::video;
use gstvision::preprocess::{Frame, PixelFormat, YuvColor};

/// Distinct frames in the pool (a moving pattern, so consecutive frames differ).
const POOL: usize = 8;

/// Pre-made frames and their caps.
pub struct Frames {
    pub caps: gst::Caps,
    pub info: gst_video::VideoInfo,
    pub buffers: Vec<gst::Buffer>,
}

impl Frames {
    /// Renders [`POOL`] frames of `width`×`height` in `format` (a GStreamer format name such
    /// as `RGB`, `I420`, `NV12`).
    pub fn make(format: &str, width: u32, height: u32) -> Result<Self> {
        let description = format!(
            "videotestsrc num-buffers={POOL} pattern=smpte horizontal-speed=16 \
             ! video/x-raw,format={format},width={width},height={height},framerate=30/1 \
             ! appsink name=sink sync=false"
        );
        let pipeline = gst::parse::launch(&description)
            .context("cannot build the frame generator")?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow::anyhow!("the frame generator is not a pipeline"))?;
        let sink = pipeline
            .by_name("sink")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .context("the frame generator has no appsink")?;
        pipeline
            .set_state(gst::State::Playing)
            .with_context(|| format!("cannot render {width}x{height} {format} test frames"))?;
        let mut caps = None;
        let mut buffers = Vec::with_capacity(POOL);
        while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
            if caps.is_none() {
                caps = sample.caps_owned();
            }
            if let Some(buffer) = sample.buffer_owned() {
                buffers.push(buffer);
            }
        }
        pipeline
            .set_state(gst::State::Null)
            .context("cannot stop the frame generator")?;
        let Some(caps) = caps else {
            bail!("videotestsrc gave no {width}x{height} {format} frames");
        };
        let info = gst_video::VideoInfo::from_caps(&caps)
            .with_context(|| format!("caps {caps} are not raw video"))?;
        Ok(Self {
            caps,
            info,
            buffers,
        })
    }

    /// Frame `i` of a stream, with timestamps at 30 frames/s. A shallow copy: the pixels
    /// stay shared with the pool.
    pub fn buffer(&self, i: usize) -> gst::Buffer {
        let mut buffer = self.buffers[i % self.buffers.len()].copy();
        let duration = gst::ClockTime::SECOND / 30;
        if let Some(b) = buffer.get_mut() {
            b.set_pts(duration * i as u64);
            b.set_duration(duration);
        }
        buffer
    }

    /// Bytes of one frame.
    pub fn frame_size(&self) -> usize {
        self.info.size()
    }

    /// The preprocessing module's description of the pool's pixel format and colorimetry,
    /// mapped exactly as the element maps its caps.
    pub fn pixel_format(&self) -> Result<(PixelFormat, YuvColor)> {
        let format = video::pixel_format(self.info.format()).with_context(|| {
            format!(
                "format {} is not one visionclassify takes",
                self.info.format().to_str()
            )
        })?;
        Ok((format, video::yuv_color(&self.info)))
    }
}

/// A mapped frame seen the way the element's streaming thread sees it.
pub fn view<'a>(
    frame: &'a gst_video::VideoFrameRef<&'a gst::BufferRef>,
    format: PixelFormat,
    yuv: YuvColor,
) -> Frame<'a> {
    video::frame_view(frame, format, yuv)
}
