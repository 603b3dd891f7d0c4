#!/usr/bin/env python3
"""Tests of vision-gateway.py's security promises: what it prints carries no credentials, and
tls-insecure=true is announced on stderr at start.

    python3 docker/gateway/test_vision_gateway.py          # from a clone (GStreamer's Python
                                                             bindings stubbed out when missing)
    docker/test-image.sh                                    # in the image, on its own entrypoint

GATEWAY_SCRIPT names the entrypoint to test [vision-gateway.py next to this file].
"""

import contextlib
import importlib.util
import io
import os
import sys
import types
import unittest

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.environ.get("GATEWAY_SCRIPT") or os.path.join(HERE, "vision-gateway.py")

try:
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import Gst  # noqa: F401
except (ImportError, ValueError):
    # Only the functions that build the description are run here, not a pipeline.
    gi = types.ModuleType("gi")
    gi.require_version = lambda *_: None
    repository = types.ModuleType("gi.repository")
    repository.Gst = types.SimpleNamespace(init=lambda _argv: None)
    repository.GLib = types.SimpleNamespace(Error=type("Error", (Exception,), {}))
    gi.repository = repository
    sys.modules["gi"] = gi
    sys.modules["gi.repository"] = repository

spec = importlib.util.spec_from_file_location("vision_gateway", SCRIPT)
gateway = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gateway)

PASSWORD = "hunter2"


class FakeGateway:
    """Stands in for the pipeline: main() only builds and prints the description here."""

    def __init__(self, description, *_args):
        self.description = description

    def run(self):
        return 0


def run_main(environment):
    """main() under `environment` (MODEL defaults to a readable file, SOURCE_URI to
    videotestsrc): (status, stdout, stderr)."""
    saved = dict(os.environ)
    out, err = io.StringIO(), io.StringIO()
    real = gateway.Gateway
    try:
        os.environ.clear()
        os.environ.update({"MODEL": os.path.abspath(__file__), "SOURCE_URI": "videotestsrc", **environment})
        gateway.Gateway = FakeGateway
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = gateway.main()
    finally:
        gateway.Gateway = real
        os.environ.clear()
        os.environ.update(saved)
    return status, out.getvalue(), err.getvalue()


class Redact(unittest.TestCase):
    def test_uri_credentials(self):
        for text, want in [
            ("rtsp://user:pass@10.0.0.7/stream", "rtsp://***@10.0.0.7/stream"),
            ('uri="rtsp://a:b@h/1" x uri=rtsp://c:d@h/2', 'uri="rtsp://***@h/1" x uri=rtsp://***@h/2'),
            ("rtsp://admin:p@ss@cam/s?x=1", "rtsp://***@cam/s?x=1"),
            ("mqtts://cam:hunter2@[::1]:8883", "mqtts://***@[::1]:8883"),
            ("could not open rtsp://a:b@cam: refused", "could not open rtsp://***@cam: refused"),
            ("mqtt//://user:hunter2@broker/", "mqtt//://***@broker/"),
        ]:
            self.assertEqual(gateway.redact(text), want)

    def test_password_property(self):
        for text, want in [
            ("visionpublish password=hunter2 qos=1", "visionpublish password=*** qos=1"),
            ('visionpublish password="a b\\" c" x=1', "visionpublish password=*** x=1"),
            ("visionpublish password='a b' x=1", "visionpublish password=*** x=1"),
        ]:
            self.assertEqual(gateway.redact(text), want)

    def test_the_rest_is_left_alone(self):
        for text in [
            "rtsp://cam/stream@2",
            "file:///srv/video@night.webm",
            "password-file=/run/secrets/mqtt password-env=MQTT_PASSWORD",
            "mqtt://mosquitto:1883 user@example.com",
            "://@",
        ]:
            self.assertEqual(gateway.redact(text), text)


class PrintedPipeline(unittest.TestCase):
    def assert_clean(self, *texts):
        for text in texts:
            self.assertNotIn(PASSWORD, text)
            self.assertNotIn("user:pass", text)

    def test_one_camera(self):
        status, out, err = run_main({
            "SOURCE_URI": "rtsp://user:pass@10.0.0.7/stream",
            "BROKER": f"mqtt://cam:{PASSWORD}@mosquitto:1883",
            "MQTT_USERNAME": "cam", "MQTT_PASSWORD": PASSWORD,
            "PUBLISH_PROPERTIES": f"password={PASSWORD}",
        })
        self.assertEqual(status, 0, err)
        self.assertIn('uri="rtsp://***@10.0.0.7/stream"', out)
        self.assertIn('broker="mqtt://***@mosquitto:1883"', out)
        self.assertIn("password-env=MQTT_PASSWORD", out)
        self.assertIn("password=***", out)
        self.assertNotIn("WARNING", err)
        self.assert_clean(out, err)

    def test_several_cameras(self):
        status, out, err = run_main({
            "SOURCE_URIS": "rtsp://a:pass1@cam1/s rtsp://b:pass2@cam2/s",
            "SENSOR_IDS": "c1 c2",
        })
        self.assertEqual(status, 0, err)
        self.assertIn('uri="rtsp://***@cam1/s"', out)
        self.assertIn('uri="rtsp://***@cam2/s"', out)
        self.assertNotIn("pass1", out)
        self.assertNotIn("pass2", out)

    def test_every_printed_line_is_redacted(self):
        # Errors and warnings from the pipeline (rtspsrc may quote its URI) go through say().
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            gateway.say(f"error from src: could not open rtsp://u:{PASSWORD}@cam/s", err=True)
            gateway.say(f"gst-launch-1.0 x uri=rtsp://u:{PASSWORD}@cam/s")
        self.assertEqual(err.getvalue(), "[gateway] error from src: could not open rtsp://***@cam/s\n")
        self.assertEqual(out.getvalue(), "[gateway] gst-launch-1.0 x uri=rtsp://***@cam/s\n")

    def test_tls_insecure_is_announced_on_stderr(self):
        for props in ("tls-insecure=true", "tls-insecure=1", 'ca-file=/x tls-insecure="TRUE"'):
            status, out, err = run_main({"BROKER": "mqtts://broker:8883", "PUBLISH_PROPERTIES": props})
            self.assertEqual(status, 0, err)
            self.assertIn("[gateway] WARNING: tls-insecure=true", err, props)
            self.assertIn("NOT verified", err)
        for props in ("tls-insecure=false", "tls-insecure=0", ""):
            status, out, err = run_main({"BROKER": "mqtts://broker:8883", "PUBLISH_PROPERTIES": props})
            self.assertEqual(status, 0, err)
            self.assertNotIn("WARNING", err, props)

    def test_help_shows_no_secret(self):
        saved = sys.argv
        out = io.StringIO()
        try:
            sys.argv = ["vision-gateway.py", "--help"]
            with contextlib.redirect_stdout(out):
                self.assertEqual(gateway.main(), 0)
        finally:
            sys.argv = saved
        self.assertIn("tls-insecure=true", out.getvalue())
        self.assertNotIn("user:pass", out.getvalue())


if __name__ == "__main__":
    unittest.main(verbosity=2)
