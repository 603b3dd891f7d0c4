//! A real test video made from the photos by GStreamer itself, and decoding pictures to RGBx
//! for the reference means.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use gst::prelude::*;

use crate::paths::{Scratch, photo, target_dir};
use crate::pixels::ChannelMeans;

/// The photos of the test video, in order (all from `scripts/setup.sh`).
pub const PHOTOS: [&str; 5] = [
    "chelsea.png",
    "coffee.png",
    "astronaut.png",
    "rocket.jpg",
    "motorcycle_left.png",
];
pub const FRAMES_PER_PHOTO: u64 = 6;
pub const FPS: u64 = 10;
pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 480;

/// How long a helper pipeline may run before it counts as stalled.
const PIPELINE_TIMEOUT: Duration = Duration::from_secs(60);

/// One photo's run of frames in the test video.
#[derive(Debug, Clone)]
pub struct Segment {
    pub name: &'static str,
    pub photo: PathBuf,
    pub first_frame: u64,
    pub frames: u64,
}

impl Segment {
    pub fn contains(&self, frame: u64) -> bool {
        (self.first_frame..self.first_frame + self.frames).contains(&frame)
    }
}

/// The encoded test video: VP8 in WebM, [`WIDTH`]x[`HEIGHT`] at [`FPS`], each photo of
/// [`PHOTOS`] stretched to the frame and shown for [`FRAMES_PER_PHOTO`] frames.
#[derive(Debug)]
pub struct TestVideo {
    pub path: PathBuf,
    pub segments: Vec<Segment>,
}

impl TestVideo {
    pub fn frames(&self) -> u64 {
        self.segments.iter().map(|s| s.frames).sum()
    }

    /// Duration of one frame in nanoseconds.
    pub fn frame_ns(&self) -> u64 {
        1_000_000_000 / FPS
    }

    /// The index in [`Self::segments`] of the photo shown at `frame`.
    pub fn segment_index(&self, frame: u64) -> Option<usize> {
        self.segments.iter().position(|s| s.contains(frame))
    }
}

/// The test video, encoded once per process (the first call takes about a second) into
/// `target/vision-e2e/`.
pub fn test_video() -> Result<&'static TestVideo> {
    static VIDEO: OnceLock<Result<TestVideo, String>> = OnceLock::new();
    VIDEO
        .get_or_init(|| make_test_video().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("cannot make the test video: {e}"))
}

fn make_test_video() -> Result<TestVideo> {
    let photos = PHOTOS
        .iter()
        .map(|name| photo(name))
        .collect::<Result<Vec<_>>>()?;
    let dir = target_dir().join("vision-e2e");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Written under a name of this process, then renamed: concurrent runs never see half a file.
    let path = dir.join("photos.webm");
    let partial = dir.join(format!("photos.webm.{}", std::process::id()));
    encode_photos(&photos, FRAMES_PER_PHOTO, &partial)?;
    std::fs::rename(&partial, &path)
        .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
    let segments = PHOTOS
        .iter()
        .zip(photos)
        .enumerate()
        .map(|(i, (name, photo))| Segment {
            name,
            photo,
            first_frame: i as u64 * FRAMES_PER_PHOTO,
            frames: FRAMES_PER_PHOTO,
        })
        .collect();
    Ok(TestVideo { path, segments })
}

/// Encodes `photos` into a VP8/WebM video at `out`, each shown for `frames_each` frames: one
/// `decodebin ! imagefreeze` branch per photo, joined by `concat`. Every branch is converted
/// to the same I420 caps first, since WebM cannot change caps midway (a JPEG decodes to
/// full-range I420, a PNG to RGB). `add-borders=false` stretches each photo to the frame
/// rather than adding black bars, so a frame's means are the photo's means.
pub fn encode_photos(photos: &[PathBuf], frames_each: u64, out: &Path) -> Result<()> {
    if photos.is_empty() {
        bail!("no photos to encode");
    }
    let mut desc = format!(
        "concat name=c ! vp8enc deadline=1 ! webmmux ! filesink location={}",
        quoted(out)
    );
    for p in photos {
        desc.push_str(&format!(
            " filesrc location={} ! decodebin ! videoconvert ! videoscale add-borders=false \
             ! video/x-raw,format=I420,width={WIDTH},height={HEIGHT},pixel-aspect-ratio=1/1,\
             colorimetry=bt601,chroma-site=mpeg2 ! imagefreeze num-buffers={frames_each} \
             ! video/x-raw,framerate={FPS}/1 ! c.",
            quoted(p)
        ));
    }
    run_to_eos(&desc).with_context(|| format!("encoding {}", out.display()))
}

/// Decodes a picture or video file with GStreamer (`decodebin ! videoconvert`) to raw video
/// of `format` (e.g. `RGBx`, `GRAY8`) and returns the bytes of all its frames, one after the
/// other, as `filesink` writes them (rows padded to 4 bytes).
pub fn decode_raw(input: &Path, format: &str) -> Result<Vec<u8>> {
    let scratch = Scratch::new("decode")?;
    let out = scratch.join("frames.raw");
    run_to_eos(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format={format} \
         ! filesink location={}",
        quoted(input),
        quoted(&out)
    ))
    .with_context(|| format!("decoding {} to {format}", input.display()))?;
    std::fs::read(&out).with_context(|| format!("reading {}", out.display()))
}

/// The channel means of a picture file (its first frame if it has several).
pub fn picture_means(input: &Path) -> Result<ChannelMeans> {
    ChannelMeans::of_rgbx(&decode_raw(input, "RGBx")?)
        .with_context(|| format!("decoded {}", input.display()))
}

/// The channel means of every frame of a [`WIDTH`]x[`HEIGHT`] video.
pub fn frame_means(video: &Path) -> Result<Vec<ChannelMeans>> {
    per_frame(video, "RGBx", 4, ChannelMeans::of_rgbx)?
        .into_iter()
        .collect()
}

/// The mean of every frame of a [`WIDTH`]x[`HEIGHT`] video converted to `GRAY8` by
/// `videoconvert` (0..1): exactly the bytes a `GRAY8` consumer gets.
pub fn gray_frame_means(video: &Path) -> Result<Vec<f64>> {
    per_frame(video, "GRAY8", 1, |f| {
        f.iter().map(|&b| u64::from(b)).sum::<u64>() as f64 / f.len() as f64 / 255.0
    })
}

/// `f` of each frame of a video decoded to a packed format of `bytes_per_pixel` ([`WIDTH`]
/// is a multiple of 4, so rows carry no padding).
fn per_frame<T>(
    video: &Path,
    format: &str,
    bytes_per_pixel: usize,
    f: impl FnMut(&[u8]) -> T,
) -> Result<Vec<T>> {
    let bytes = decode_raw(video, format)?;
    let frame_bytes = WIDTH as usize * HEIGHT as usize * bytes_per_pixel;
    if bytes.is_empty() || !bytes.len().is_multiple_of(frame_bytes) {
        bail!(
            "{} decoded to {} bytes, not whole {WIDTH}x{HEIGHT} {format} frames",
            video.display(),
            bytes.len()
        );
    }
    Ok(bytes.chunks_exact(frame_bytes).map(f).collect())
}

/// A path as a quoted `gst::parse::launch` property value.
pub fn quoted(p: &Path) -> String {
    let s = p
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!("\"{s}\"")
}

/// Runs a pipeline description in this process until EOS; an error message or a stall is an
/// error.
pub fn run_to_eos(description: &str) -> Result<()> {
    gst::init().context("initialising GStreamer")?;
    let pipeline = gst::parse::launch(description)
        .with_context(|| format!("parsing pipeline: {description}"))?;
    run_pipeline(&pipeline).with_context(|| format!("pipeline: {description}"))
}

/// Plays a pipeline until EOS, then stops it; an error message or a stall is an error.
pub fn run_pipeline(pipeline: &gst::Element) -> Result<()> {
    let result = wait_for_eos(pipeline);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn wait_for_eos(pipeline: &gst::Element) -> Result<()> {
    let bus = pipeline.bus().context("pipeline has no bus")?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| first_error(&bus).unwrap_or_else(|| anyhow!("cannot start the pipeline")))?;
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_nseconds(PIPELINE_TIMEOUT.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .ok_or_else(|| anyhow!("no EOS after {PIPELINE_TIMEOUT:?}"))?;
    match msg.view() {
        gst::MessageView::Error(e) => Err(error_of(e)),
        _ => Ok(()),
    }
}

fn first_error(bus: &gst::Bus) -> Option<anyhow::Error> {
    let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(e) => Some(error_of(e)),
        _ => None,
    }
}

fn error_of(e: &gst::message::Error) -> anyhow::Error {
    anyhow!(
        "{}: {} ({})",
        e.src()
            .map(|s| s.path_string().to_string())
            .unwrap_or_default(),
        e.error(),
        e.debug().map(|d| d.to_string()).unwrap_or_default()
    )
}
