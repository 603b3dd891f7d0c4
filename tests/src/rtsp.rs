//! A local RTSP camera for the tests: an in-process `gst-rtsp-server` on a free loopback port
//! that serves a video file as H.264 (`x264enc ! rtph264pay`), the way an IP camera does.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let video = vision_e2e::test_video()?;
//! let camera = vision_e2e::rtsp::RtspCamera::start(&video.path)?;
//! println!("{}", camera.url()); // rtsp://127.0.0.1:<port>/camera
//! # Ok(())
//! # }
//! ```
//!
//! Every client gets its own session from the first frame (`shared=false`); when the file
//! ends, the server sends an RTCP BYE, and `rtspsrc` ends the stream with EOS. Needs
//! `libgstrtspserver-1.0`, `x264enc` (gstreamer1.0-plugins-ugly) and, on the client side,
//! an H.264 decoder (`avdec_h264`, gstreamer1.0-libav); `scripts/setup.sh` installs them.

use std::path::Path;
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};
use gst::glib;
use gst_rtsp_server::prelude::*;

use crate::video::quoted;

/// The mount point the camera serves.
pub const MOUNT: &str = "/camera";

/// A running RTSP server; dropping it stops the server's main loop.
pub struct RtspCamera {
    url: String,
    main_loop: glib::MainLoop,
    context: glib::MainContext,
    source: Option<glib::SourceId>,
    thread: Option<JoinHandle<()>>,
}

impl RtspCamera {
    /// Serves `video` (anything `decodebin` reads) as H.264 at `rtsp://127.0.0.1:<port>/camera`.
    pub fn start(video: &Path) -> Result<Self> {
        gst::init().context("initialising GStreamer")?;
        for element in ["x264enc", "rtph264pay"] {
            if gst::ElementFactory::find(element).is_none() {
                anyhow::bail!(
                    "the RTSP test camera needs the GStreamer element {element} \
                     (gstreamer1.0-plugins-ugly / -good; scripts/setup.sh installs them)"
                );
            }
        }
        let server = gst_rtsp_server::RTSPServer::new();
        server.set_address("127.0.0.1");
        // Port 0: the system picks a free one, read back after attach().
        server.set_service("0");
        let mounts = server
            .mount_points()
            .context("the RTSP server has no mount points")?;
        let factory = gst_rtsp_server::RTSPMediaFactory::new();
        // Key frames every second and no B-frames, as cameras stream; zerolatency so that no
        // frame waits in the encoder's look-ahead.
        factory.set_launch(&format!(
            "( filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=I420 \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bframes=0 \
             ! video/x-h264,profile=constrained-baseline \
             ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
            quoted(video)
        ));
        factory.set_shared(false);
        mounts.add_factory(MOUNT, factory);

        let context = glib::MainContext::new();
        let source = server
            .attach(Some(&context))
            .map_err(|e| anyhow!("cannot start the RTSP server: {e}"))?;
        let port = server.bound_port();
        if port <= 0 {
            anyhow::bail!("the RTSP server did not bind a port");
        }
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let thread = std::thread::Builder::new()
            .name("rtsp-camera".into())
            .spawn({
                let main_loop = main_loop.clone();
                // The server lives as long as its loop runs.
                move || {
                    let _server = server;
                    main_loop.run();
                }
            })
            .context("cannot start the RTSP server thread")?;
        Ok(Self {
            url: format!("rtsp://127.0.0.1:{port}{MOUNT}"),
            main_loop,
            context,
            source: Some(source),
            thread: Some(thread),
        })
    }

    /// `rtsp://127.0.0.1:<port>/camera`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for RtspCamera {
    fn drop(&mut self) {
        self.main_loop.quit();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // The listening socket's source belongs to our own context, not the default one.
        if let Some(id) = self.source.take()
            && let Some(source) = self.context.find_source_by_id(&id)
        {
            source.destroy();
        }
    }
}
