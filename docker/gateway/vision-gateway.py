#!/usr/bin/env python3
"""The gateway's entrypoint: builds a gst-launch pipeline from environment variables and runs it.

    source ! videoconvert ! visionclassify ... ! visionpublish ... ! fakesink

With SOURCE_URIS, one such branch per camera in one pipeline, every visionclassify on one shared
inference engine (model-instance-id=MODEL_INSTANCE_ID: one ONNX Runtime session, batches that take
frames of every camera), each branch with its own visionpublish and sensor id.

The pipeline is printed in gst-launch-1.0 syntax at start, with credentials replaced by ***
(rtsp://***@camera/..., password=***); so is every line the gateway prints. tls-insecure=true
in PUBLISH_PROPERTIES (the only way to turn off the broker's certificate check) is announced by
a WARNING line on stderr at start, and visionpublish posts a warning of its own. File sources loop (LOOP=1), like a
camera that never ends; with SOURCE_URIS each file camera loops on its own (a segment seek into
its branch when its segment ends), so files of different lengths do not wait for each other. A
probe on the sink's pad rewrites HEARTBEAT_FILE at most once a second while frames get through
(with SOURCE_URIS: only once every camera has passed a frame since the last rewrite, so one
stalled camera makes the gateway unhealthy); docker/gateway/healthcheck.sh fails when it is
older than HEALTH_MAX_AGE seconds. SIGTERM/SIGINT send end-of-stream (into every camera's
visionclassify), so visionpublish sends what it holds and its `offline` status before the
process exits. Exit status: 0 after end of stream, 1 on a pipeline error, 2 on a bad setting.

Environment (defaults in brackets):
  SOURCE_URI          file:///x.webm, /x.webm, rtsp://..., http(s)://..., videotestsrc[:PATTERN]
                      [file:///opt/vision/media/photos.webm]
  SOURCE_PIPELINE     a gst-launch source fragment instead (e.g. "v4l2src ! video/x-raw,width=640")
  SOURCE_URIS         several cameras in this one container: URIs or absolute paths as for
                      SOURCE_URI, separated by spaces or commas (overrides SOURCE_URI)
  SENSOR_IDS          with SOURCE_URIS: one sensor id per camera, same separators
                      [SENSOR_ID-1, SENSOR_ID-2, ...]; each camera's spool is SPOOL_DIR/<sensor id>
  MODEL_INSTANCE_ID   with SOURCE_URIS: the shared engine's id [gateway]; BATCH_SIZE then batches
                      across cameras (e.g. the number of cameras)
  LOOP                1: restart file sources at their end [1 for files, else 0; with
                      SOURCE_URIS: 1 when every camera is a file, and only then allowed]
  SYNC                1: play at the stream's own rate [1 for files, 0 for live sources]
  RTSP_LATENCY        rtspsrc jitter buffer, ms [200]
  RTSP_PROTOCOLS      rtspsrc lower transports, e.g. tcp, udp, udp+tcp [tcp]
  TEST_FRAMERATE      videotestsrc frames per second [10]
  MODEL               ONNX classifier [/opt/vision/models/efficientnet-lite0.onnx]
  LABELS              label file, one per line (overrides the model's labels)
  WATCH_MODEL         1: reload MODEL when its file is replaced (mount the model's folder and
                      rename a new model over it; a model that fails the checks is refused
                      with a warning and the running one stays) [0]
  CAPTURE_DIR         keep doubtful frames here for retraining (mount a volume):
                      CAPTURE_DIR/<label>/<camera>-<pts>.png + .json sidecar
  CAPTURE_BELOW, CAPTURE_EVERY, CAPTURE_MAX_BYTES, CAPTURE_MAX_RATE
                      visionclassify capture-below (confidence), capture-every (1 in N),
                      capture-max-bytes (disk budget), capture-max-rate (per second)
  BATCH_SIZE, BATCH_TIMEOUT, INFERENCE_INTERVAL, TOP_K, THRESHOLD, THREADS
                      visionclassify batch-size, batch-timeout (ms), inference-interval, top-k,
                      threshold, threads
  PROVIDER            cpu | cuda | tensorrt | auto [cpu]; unusable ones fall back to the CPU
                      with a warning, unless STRICT_PROVIDER=1
  STRICT_PROVIDER, DEVICE_ID, TRT_FP16, TRT_CACHE_DIR
  BROKER              mqtt://host[:port] or mqtts://host[:port] [mqtt://mosquitto:1883]
  SENSOR_ID           sensorId of the events and {sensor} in topics [the container's host name]
  TOPIC, STATUS_TOPIC, HEALTH_TOPIC, HEALTH_INTERVAL, MQTT_QOS, MODE, MIN_CONFIDENCE,
  SUMMARY_INTERVAL, TAGS (JSON object), CLIENT_ID
  MQTT_USERNAME, MQTT_PASSWORD_FILE, MQTT_PASSWORD (read through visionpublish password-env;
  prefer MQTT_PASSWORD_FILE on a secret mount: `docker inspect` shows the environment),
  CA_FILE, CLIENT_CERT, CLIENT_KEY
  SPOOL_DIR           visionpublish spool (mount a volume here) [/var/lib/vision/spool]
  CLASSIFY_PROPERTIES, PUBLISH_PROPERTIES
                      more element properties, "name=value name2=value2"
  HEARTBEAT_FILE      [/tmp/vision-heartbeat];  STATS_INTERVAL  seconds between log lines [30]
"""

import json
import os
import re
import shlex
import signal
import socket
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


class SettingError(Exception):
    pass


# scheme://user:password@host -> scheme://***@host (the authority ends at / ? # space or quote;
# the user information at its last @), as gstvision::redact::uri_credentials does.
# Whatever stands before "://" (a mistyped scheme hides its password too), as gstvision::redact.
URI_CREDENTIALS = re.compile(r"""(://)[^/?#\s"']+@""")
# password=... in a gst-launch description (password-file= and password-env= are names, not secrets).
PASSWORD_PROPERTY = re.compile(r"""(?<![\w-])(password=)("(?:[^"\\]|\\.)*"|'[^']*'|\S+)""")
# visionpublish's tls-insecure with a value that gst-launch reads as true.
TLS_INSECURE = re.compile(r"""(?<![\w-])tls-insecure=(["']?)(true|yes|t|1)\1(?![\w-])""", re.IGNORECASE)


def redact(text):
    """`text` without credentials: every line the gateway prints goes through here."""
    return PASSWORD_PROPERTY.sub(r"\1***", URI_CREDENTIALS.sub(r"\1***@", str(text)))


def say(message, err=False):
    print(f"[gateway] {redact(message)}", file=sys.stderr if err else sys.stdout, flush=True)


def insecure_tls_warning(description):
    """The warning to print at start when the pipeline turns the broker's certificate check off."""
    if not TLS_INSECURE.search(description):
        return None
    return ("WARNING: tls-insecure=true (from PUBLISH_PROPERTIES): the MQTT broker's certificate is NOT "
            "verified; anyone on the network path can read and change the events and take the "
            "credentials. Only for tests: use CA_FILE with the broker's CA instead")


def env(name, default=None):
    value = os.environ.get(name, "")
    return value if value != "" else default


def env_bool(name, default):
    value = env(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingError(f"{name}={value!r}: expected 1/0, true/false, yes/no or on/off")


def env_number(name, kind=int):
    value = env(name)
    if value is None:
        return None
    try:
        kind(value)
    except ValueError:
        raise SettingError(f"{name}={value!r}: expected a {'whole ' if kind is int else ''}number") from None
    return value


def q(value):
    """A property value quoted for gst-launch syntax."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_list(value):
    return [v for v in value.replace(",", " ").split() if v]


def source_fragment(uri=None, name="src", var="SOURCE_URI"):
    """The source part of the pipeline and whether it is a live source."""
    custom = env("SOURCE_PIPELINE") if uri is None else None
    if custom:
        return custom, True, False
    if uri is None:
        uri = env("SOURCE_URI", "file:///opt/vision/media/photos.webm")
    if uri == "videotestsrc" or uri.startswith("videotestsrc:"):
        pattern = uri.partition(":")[2] or "smpte"
        rate = env_number("TEST_FRAMERATE") or "10"
        return (f"videotestsrc is-live=true pattern={pattern} "
                f"! video/x-raw,width=640,height=480,framerate={rate}/1"), True, False
    if "://" not in uri:
        if not os.path.isabs(uri):
            raise SettingError(f"{var}={uri!r}: expected a URI or an absolute path")
        uri = Gst.filename_to_uri(uri)
    scheme = uri.split("://", 1)[0].lower()
    if scheme == "file":
        path = Gst.uri_get_location(uri)
        if not os.access(path, os.R_OK):
            raise SettingError(f"{var}={uri!r}: {path} is not a readable file")
    # The video stream is linked on; other streams (audio) are left unlinked, which demuxers
    # and rtspsrc tolerate. (expose-all-streams=false would be neater, but then decodebin
    # 1.26 gives up on RTSP H.264 before trying a decoder: "no suitable plugins found".)
    fragment = f"uridecodebin name={name} uri={q(uri)} caps=video/x-raw"
    live = scheme in ("rtsp", "rtsps", "rtspt", "rtmp", "udp", "srt")
    return fragment, live, scheme == "file"


def classify_fragment(name="classify", instance_id=None):
    model = env("MODEL", "/opt/vision/models/efficientnet-lite0.onnx")
    if not os.access(model, os.R_OK):
        raise SettingError(f"MODEL={model!r} is not a readable file")
    props = [f"model={q(model)}"]
    labels = env("LABELS")
    if labels:
        if not os.access(labels, os.R_OK):
            raise SettingError(f"LABELS={labels!r} is not a readable file")
        props.append(f"labels-file={q(labels)}")
    for var, prop, kind in (("BATCH_SIZE", "batch-size", int), ("BATCH_TIMEOUT", "batch-timeout", int),
                            ("INFERENCE_INTERVAL", "inference-interval", int), ("TOP_K", "top-k", int),
                            ("THRESHOLD", "threshold", float), ("THREADS", "threads", int),
                            ("DEVICE_ID", "device-id", int)):
        value = env_number(var, kind)
        if value is not None:
            props.append(f"{prop}={value}")
    provider = env("PROVIDER", "cpu").lower()
    if provider not in ("cpu", "cuda", "tensorrt", "auto"):
        raise SettingError(f"PROVIDER={provider!r}: expected cpu, cuda, tensorrt or auto")
    props.append(f"execution-provider={provider}")
    if env_bool("STRICT_PROVIDER", False):
        props.append("strict-provider=true")
    if env_bool("TRT_FP16", False):
        props.append("trt-fp16=true")
    if env("TRT_CACHE_DIR"):
        props.append(f"trt-cache-dir={q(env('TRT_CACHE_DIR'))}")
    if instance_id:
        props.append(f"model-instance-id={q(instance_id)}")
    if env_bool("WATCH_MODEL", False):
        props.append("watch-model=true")
    capture = env("CAPTURE_DIR")
    if capture:
        # One folder for all cameras: file names start with the element's name (classifyN).
        props.append(f"capture-dir={q(capture)}")
        for var, prop, kind in (("CAPTURE_BELOW", "capture-below", float),
                                ("CAPTURE_EVERY", "capture-every", int),
                                ("CAPTURE_MAX_BYTES", "capture-max-bytes", int),
                                ("CAPTURE_MAX_RATE", "capture-max-rate", float)):
            value = env_number(var, kind)
            if value is not None:
                props.append(f"{prop}={value}")
        if env_number("CAPTURE_BELOW", float) is None and env_number("CAPTURE_EVERY", int) is None:
            raise SettingError("CAPTURE_DIR needs CAPTURE_BELOW and/or CAPTURE_EVERY")
    props += shlex.split(env("CLASSIFY_PROPERTIES", ""))
    return f"visionclassify name={name} " + " ".join(props)


def publish_fragment(name="publish", sensor=None, per_camera=False):
    """visionpublish; with `per_camera`, the camera's own spool folder and client id."""
    if sensor is None:
        sensor = env("SENSOR_ID", socket.gethostname())
    props = [f"broker={q(env('BROKER', 'mqtt://mosquitto:1883'))}", f"sensor-id={q(sensor)}"]
    for var, prop in (("TOPIC", "topic"), ("STATUS_TOPIC", "status-topic"), ("HEALTH_TOPIC", "health-topic"),
                      ("MODE", "mode"), ("TAGS", "tags"), ("CLIENT_ID", "client-id"),
                      ("MQTT_USERNAME", "username"), ("MQTT_PASSWORD_FILE", "password-file"),
                      ("CA_FILE", "ca-file"), ("CLIENT_CERT", "client-cert"), ("CLIENT_KEY", "client-key"),
                      ("SPOOL_DIR", "spool-dir")):
        value = env(var)
        if value is not None and per_camera and var == "SPOOL_DIR":
            value = os.path.join(value, sensor.replace("/", "_"))
        if value is not None and per_camera and var == "CLIENT_ID":
            value = f"{value}-{sensor}"
        if value is not None:
            props.append(f"{prop}={q(value)}")
    for var, prop, kind in (("MQTT_QOS", "mqtt-qos", int), ("HEALTH_INTERVAL", "health-interval", int),
                            ("MIN_CONFIDENCE", "min-confidence", float),
                            ("SUMMARY_INTERVAL", "summary-interval", int)):
        value = env_number(var, kind)
        if value is not None:
            props.append(f"{prop}={value}")
    if env("MQTT_PASSWORD"):
        props.append("password-env=MQTT_PASSWORD")
    props += shlex.split(env("PUBLISH_PROPERTIES", ""))
    return f"visionpublish name={name} " + " ".join(props)


def cameras_description(sync):
    """One branch per SOURCE_URIS entry; returns (description, whether all are files, cameras)."""
    uris = split_list(env("SOURCE_URIS", ""))
    if not uris:
        raise SettingError(f"SOURCE_URIS={env('SOURCE_URIS')!r}: no camera in it")
    base = env("SENSOR_ID", socket.gethostname())
    sensors = split_list(env("SENSOR_IDS", "")) or [f"{base}-{i + 1}" for i in range(len(uris))]
    if len(sensors) != len(uris):
        raise SettingError(f"SENSOR_IDS has {len(sensors)} ids for {len(uris)} SOURCE_URIS")
    if len(set(sensors)) != len(sensors):
        raise SettingError(f"SENSOR_IDS={env('SENSOR_IDS')!r}: the ids must differ")
    instance = env("MODEL_INSTANCE_ID", "gateway")
    branches, lives, files = [], [], []
    for i, (uri, sensor) in enumerate(zip(uris, sensors)):
        source, live, is_file = source_fragment(uri, f"src{i}", "SOURCE_URIS")
        lives.append(live)
        files.append(is_file)
        camera_sync = env_bool("SYNC", not live) if sync is None else sync
        branches.append(f"{source} ! videoconvert ! {classify_fragment(f'classify{i}', instance)} "
                        f"! {publish_fragment(f'publish{i}', sensor, per_camera=True)} "
                        f"! fakesink name=sink{i} sync={'true' if camera_sync else 'false'}")
    return "  ".join(branches), all(files), len(uris)


class Gateway:
    def __init__(self, description, loop_source, heartbeat, stats_interval, cameras=0):
        self.pipeline = Gst.parse_launch(description)
        self.loop_source = loop_source
        self.heartbeat = heartbeat
        self.cameras = cameras
        self.lock = threading.Lock()  # the sink probes of several cameras run in their own threads
        self.main = GLib.MainLoop()
        self.status = 0
        self.stopping = False
        self.frames = 0
        self.loops = 0
        self.last_beat = 0.0
        self.started = time.monotonic()
        # One camera: elements named src, classify, publish, sink; with SOURCE_URIS, src0, ...
        suffixes = [str(i) for i in range(cameras)] if cameras else [""]
        by = self.pipeline.get_by_name
        self.publishers = [e for e in (by(f"publish{x}") for x in suffixes) if e is not None]
        self.classifiers = [e for e in (by(f"classify{x}") for x in suffixes) if e is not None]
        self.sinks = [by(f"sink{x}") for x in suffixes]
        self.camera_frames = [0] * len(suffixes)
        self.camera_loops = [0] * len(suffixes)
        self.unseen = set(range(len(suffixes)))  # cameras without a frame since the last heartbeat
        for x in suffixes:
            src = by(f"src{x}")
            if src is not None:
                src.connect("source-setup", self.on_source_setup)
        for i, sink in enumerate(self.sinks):
            sink.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self.on_buffer, i)
        if cameras and loop_source:
            # Each camera loops on its own: its segment's end reaches its visionclassify as a
            # SEGMENT_DONE event (the pipeline's SEGMENT_DONE message waits for every camera).
            for i, classify in enumerate(self.classifiers):
                classify.get_static_pad("sink").add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM,
                                                          self.on_camera_event, i)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self.on_message)
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, self.on_signal)
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, self.on_signal)
        if stats_interval > 0:
            GLib.timeout_add_seconds(stats_interval, self.log_stats)

    def on_source_setup(self, _bin, source):
        props = {p.name for p in source.list_properties()}
        if "latency" in props and "protocols" in props:  # rtspsrc
            source.set_property("latency", int(env("RTSP_LATENCY", "200")))
            Gst.util_set_object_arg(source, "protocols", env("RTSP_PROTOCOLS", "tcp"))

    def on_buffer(self, _pad, _info, camera):
        with self.lock:
            self.frames += 1
            self.camera_frames[camera] += 1
            self.unseen.discard(camera)
            now = time.time()
            if self.unseen or now - self.last_beat < 1.0:
                return Gst.PadProbeReturn.OK
            self.last_beat = now
            self.unseen = set(range(len(self.camera_frames)))
            beat = {"time": now, "frames": self.frames, "loops": self.loops}
            if self.cameras:
                beat["camera_frames"] = list(self.camera_frames)
                beat["camera_loops"] = list(self.camera_loops)
        # Outside the lock: reading an element's stats must not wait on another camera's thread.
        self.write_heartbeat(beat)
        return Gst.PadProbeReturn.OK

    def write_heartbeat(self, beat):
        stats = [p.get_property("stats").to_string() for p in self.publishers]
        beat["publish"] = stats[0] if len(stats) == 1 else stats
        partial = f"{self.heartbeat}.{os.getpid()}.{threading.get_ident()}"
        try:
            with open(partial, "w") as f:
                json.dump(beat, f)
            os.replace(partial, self.heartbeat)
        except OSError as e:
            say(f"cannot write the heartbeat {self.heartbeat}: {e}", err=True)

    def log_stats(self):
        up = time.monotonic() - self.started
        classify = "; ".join(c.get_property("stats").to_string() for c in self.classifiers)
        publish = "; ".join(p.get_property("stats").to_string() for p in self.publishers)
        say(f"{up:.0f} s, {self.frames} frames, {self.loops} loops; {classify}; {publish}")
        return True

    def on_camera_event(self, _pad, info, camera):
        if info.get_event().type == Gst.EventType.SEGMENT_DONE and not self.stopping:
            GLib.idle_add(self.loop_camera, camera)  # seek from the main loop, not the streaming thread
        return Gst.PadProbeReturn.OK

    def loop_camera(self, camera):
        """Starts one camera's file again: a segment seek into its branch only, without flushing."""
        if self.stopping:
            return False
        seek = Gst.Event.new_seek(1.0, Gst.Format.TIME, Gst.SeekFlags.SEGMENT, Gst.SeekType.SET, 0,
                                  Gst.SeekType.NONE, -1)
        if self.sinks[camera].send_event(seek):
            with self.lock:
                self.loops += 1
                self.camera_loops[camera] += 1
        else:
            say(f"camera {camera} cannot seek back to its start; it ends here", err=True)
            self.classifiers[camera].get_static_pad("sink").send_event(Gst.Event.new_eos())
        return False

    def seek_start(self, flags):
        ok = self.pipeline.seek(1.0, Gst.Format.TIME, flags, Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1)
        if not ok:
            say("the source cannot seek back to its start; it will not loop", err=True)
            self.loop_source = False
        return ok

    def on_message(self, _bus, msg):
        t = msg.type
        if t == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            say(f"error from {msg.src.get_name()}: {err.message}\n  {debug}", err=True)
            self.status = 1
            self.main.quit()
        elif t == Gst.MessageType.ELEMENT and msg.get_structure() is not None \
                and msg.get_structure().get_name() == "visionclassify-model":
            s = msg.get_structure()
            say(f"{msg.src.get_name()}: model {s.get_value('state')}: {s.get_value('model')} "
                f"(version {s.get_value('version') or '-'}, generation {s.get_value('generation')})")
        elif t == Gst.MessageType.WARNING:
            warn, _debug = msg.parse_warning()
            say(f"warning from {msg.src.get_name()}: {warn.message}", err=True)
        elif t == Gst.MessageType.SEGMENT_DONE and self.loop_source and not self.stopping and not self.cameras:
            # A segment seek without flushing: the next pass follows on with no gap and no EOS.
            self.loops += 1
            self.seek_start(Gst.SeekFlags.SEGMENT)
        elif t == Gst.MessageType.EOS:
            if self.loop_source and not self.stopping:
                # Sources that ignore segment seeks end with EOS instead; start them again (with
                # SOURCE_URIS, all cameras together, once every one has ended).
                self.loops += 1
                if self.seek_start(Gst.SeekFlags.FLUSH):
                    return
            say(f"end of stream after {self.frames} frames")
            self.main.quit()

    def on_signal(self):
        if self.stopping:
            self.main.quit()
            return False
        say("stopping: sending end-of-stream")
        self.stopping = True
        # Into visionclassify's sink pad rather than to the source: a demuxer that pulls from
        # a file source (and loops by segment seeks) would never pass an EOS sent upstream of
        # it on. From there the last partial batch is classified and published, then the sink
        # posts EOS; upstream sees EOS as the flow return of its next push and stops.
        for classify in self.classifiers:
            classify.get_static_pad("sink").send_event(Gst.Event.new_eos())
        GLib.timeout_add_seconds(10, self.main.quit)  # a stuck source must not block the stop
        return True

    def run(self):
        if self.pipeline.set_state(Gst.State.PAUSED) == Gst.StateChangeReturn.FAILURE:
            self.pipeline.set_state(Gst.State.NULL)
            self.drain_errors()
            return 1
        if self.loop_source:
            state = self.pipeline.get_state(60 * Gst.SECOND)
            if state[0] != Gst.StateChangeReturn.SUCCESS:
                self.pipeline.set_state(Gst.State.NULL)
                self.drain_errors()
                return 1
            self.seek_start(Gst.SeekFlags.FLUSH | Gst.SeekFlags.SEGMENT)
        self.pipeline.set_state(Gst.State.PLAYING)
        self.main.run()
        self.pipeline.set_state(Gst.State.NULL)
        self.log_stats()
        return self.status

    def drain_errors(self):
        bus = self.pipeline.get_bus()
        while True:
            msg = bus.pop_filtered(Gst.MessageType.ERROR)
            if msg is None:
                break
            err, debug = msg.parse_error()
            say(f"error from {msg.src.get_name()}: {err.message}\n  {debug}", err=True)


def main():
    Gst.init(None)
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        cameras = 0
        if env("SOURCE_URIS"):
            # Files loop: one pipeline-wide seek at the start, then each camera on its own
            # (Gateway.loop_camera); a loop over live cameras has nothing to seek.
            description, all_files, cameras = cameras_description(None)
            loop_source = env_bool("LOOP", all_files)
            if loop_source and not all_files:
                raise SettingError("LOOP=1 with SOURCE_URIS: every camera must be a file to loop")
        else:
            source, live, is_file = source_fragment()
            loop_source = env_bool("LOOP", is_file)
            sync = env_bool("SYNC", not live)
            description = (f"{source} ! videoconvert ! {classify_fragment()} ! {publish_fragment()} "
                           f"! fakesink name=sink sync={'true' if sync else 'false'}")
        stats_interval = int(env_number("STATS_INTERVAL") or "30")
    except SettingError as e:
        say(f"bad setting: {e}", err=True)
        return 2
    say(f"gst-launch-1.0 {description}")
    warning = insecure_tls_warning(description)
    if warning:
        say(warning, err=True)
    try:
        gateway = Gateway(description, loop_source, env("HEARTBEAT_FILE", "/tmp/vision-heartbeat"), stats_interval,
                          cameras)
    except GLib.Error as e:
        say(f"cannot build the pipeline: {e.message}", err=True)
        return 2
    return gateway.run()


if __name__ == "__main__":
    sys.exit(main())
