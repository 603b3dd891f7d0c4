#!/usr/bin/env python3
"""Reads visionclassify's results back as GStreamer analytics metadata (GstAnalyticsClsMtd in a
GstAnalyticsRelationMeta), as any GStreamer 1.24+ analytics consumer would, and checks them.

    test-analytics-meta.py [VIDEO [MODEL]]

Default: the image's sample video (5 photos x 20 frames: chelsea the cat, coffee, astronaut,
rocket, motorcycle) and the ImageNet EfficientNet-Lite0. A probe after visionclassify reads
every buffer's classification meta through the GstAnalytics Python bindings and compares it
with the element's own VisionClassificationMeta on the same buffer. Exit status 0 when every
frame carries exactly one classification whose labels and confidences match, and each photo's
most frequent label is one of the ImageNet classes that photo shows.
"""

import collections
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstAnalytics", "1.0")
from gi.repository import GLib, Gst, GstAnalytics  # noqa: E402

VIDEO = "/opt/vision/media/photos.webm"
MODEL = "/opt/vision/models/efficientnet-lite0.onnx"
FRAMES_EACH = 20
# Per photo of the sample video, in order: the ImageNet classes its most frequent label must be
# one of (None: not checked; ImageNet has no class for an astronaut).
EXPECTED = [
    ("chelsea", {"Egyptian cat", "tabby", "tiger cat"}),
    ("coffee", {"espresso", "cup", "coffee mug"}),
    ("astronaut", None),
    ("rocket", {"projectile", "missile", "space shuttle"}),
    ("motorcycle", {"moped", "motor scooter"}),
]


def main():
    video = sys.argv[1] if len(sys.argv) > 1 else VIDEO
    model = sys.argv[2] if len(sys.argv) > 2 else MODEL
    Gst.init(None)
    pipeline = Gst.parse_launch(
        f'filesrc location="{video}" ! decodebin ! videoconvert '
        f'! visionclassify model="{model}" top-k=3 batch-size=4 threads=1 ! fakesink name=sink sync=false')
    frames = []  # per buffer: [(label, confidence)] from GstAnalytics
    problems = []

    def probe(_pad, info):
        buf = info.get_buffer()
        n = len(frames)
        rmeta = GstAnalytics.buffer_get_analytics_relation_meta(buf)
        if rmeta is None:
            problems.append(f"frame {n}: no GstAnalyticsRelationMeta")
            frames.append([])
            return Gst.PadProbeReturn.OK
        cls = [m for m in rmeta if isinstance(m, GstAnalytics.ClsMtd)]
        if len(cls) != 1:
            problems.append(f"frame {n}: {len(cls)} GstAnalyticsClsMtd instead of 1")
        results = []
        for mtd in cls[:1]:
            for i in range(mtd.get_length()):
                results.append((GLib.quark_to_string(mtd.get_quark(i)), mtd.get_level(i)))
        frames.append(results)
        # The same result as the element's own meta carries.
        custom = buf.get_custom_meta("VisionClassificationMeta")
        if custom is None:
            problems.append(f"frame {n}: no VisionClassificationMeta")
        else:
            s = custom.get_structure()
            labels = list(s.get_value("labels"))
            confs = list(s.get_value("confidences"))
            if [r[0] for r in results] != labels:
                problems.append(f"frame {n}: analytics labels {[r[0] for r in results]} != meta labels {labels}")
            if any(abs(a - b) > 1e-4 for a, b in zip((r[1] for r in results), confs)):
                problems.append(f"frame {n}: analytics confidences differ from the meta's {confs}")
        levels = [c for _, c in results]
        if not results or levels != sorted(levels, reverse=True) or not all(0.0 <= c <= 1.0 for c in levels):
            problems.append(f"frame {n}: bad classifications {results}")
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    pipeline.set_state(Gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(120 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if msg is None:
        print("FAIL: the pipeline did not finish within 120 s")
        return 1
    if msg.type == Gst.MessageType.ERROR:
        err, debug = msg.parse_error()
        print(f"FAIL: pipeline error: {err.message}\n{debug}")
        return 1

    if len(frames) != FRAMES_EACH * len(EXPECTED):
        problems.append(f"{len(frames)} frames, expected {FRAMES_EACH * len(EXPECTED)}")
    for k, (photo, expected) in enumerate(EXPECTED):
        seg = [f for f in frames[k * FRAMES_EACH:(k + 1) * FRAMES_EACH] if f]
        best = collections.Counter(f[0][0] for f in seg)
        if not best:
            problems.append(f"{photo}: no classification")
            continue
        label, count = best.most_common(1)[0]
        mean = sum(f[0][1] for f in seg if f[0][0] == label) / count
        top3 = ", ".join(f"{lab} {c:.3f}" for lab, c in seg[0])
        print(f"{photo:<11} frames {k * FRAMES_EACH:>3}-{(k + 1) * FRAMES_EACH - 1:<3} "
              f"GstAnalyticsClsMtd best: {label} x{count} (mean {mean:.3f}); first frame: {top3}")
        if expected is not None and label not in expected:
            problems.append(f"{photo}: most frequent label {label!r}, expected one of {sorted(expected)}")
    if problems:
        print("FAIL:\n  " + "\n  ".join(problems[:20]))
        return 1
    print(f"PASS: {len(frames)} frames, each with one GstAnalyticsClsMtd equal to its VisionClassificationMeta")
    return 0


if __name__ == "__main__":
    sys.exit(main())
