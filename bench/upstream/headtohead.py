#!/usr/bin/env python3
"""Head-to-head: GStreamer's upstream `onnxinference` against `visionclassify`, N streams.

Both sides get the same pre-made 1920x1080 RGB frames (8 frames of a moving videotestsrc SMPTE
pattern, rendered once; every pushed buffer is a shallow copy sharing their pixels) through
one `appsrc` per stream, all streams in one pipeline:

  upstream:  appsrc ! videoscale ! videoconvert ! video/x-raw,width=224,height=224,format=RGB
             ! onnxinference model-file=UPSTREAM_MODEL input-image-format=chw
               input-tensor-offset=-127 input-tensor-scale=128 optimization-level=enable-all
             ! fakesink sync=false                                   (x N, one session each)
  ours:      appsrc ! visionclassify model=MODEL model-instance-id=bench batch-size=N
               batch-timeout=50 threads=T ort-library=ORT ! fakesink sync=false
                                                                     (x N, one shared engine)

Every measurement (side, N, round) runs in a child process of its own, so the two ONNX Runtime
libraries (Debian's for onnxinference, .deps/onnxruntime for visionclassify) never meet in one
process. All frames of all streams are queued in the appsrcs up front (they share the pool's
memory), then the child waits for EOS. Timed: from the moment WARMUP x N frames have reached
the sinks (the sessions' first runs and the start are not timed) to EOS; fps = frames after
that point / time. Rounds are interleaved (each round runs every N, both sides, alternating
which side goes first) and medians are reported.

  headtohead.py [--streams 1,2,4,8] [--frames 200] [--warmup 10] [--rounds 3] [--threads 0]
                [--workers 0]
                [--model M] [--upstream-model M2] [--ort-library L] [--json OUT.json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WIDTH, HEIGHT, POOL = 1920, 1080, 8
# Our model's own preprocessing (vision.preprocess): (pixel * 1.0 - 127) / 128 on every
# channel, which onnxinference's scalar (pixel + offset) / scale can express exactly.
UPSTREAM_OFFSET, UPSTREAM_SCALE = -127.0, 128.0


# ---------------------------------------------------------------- child: one measurement


def child(args) -> int:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstApp", "1.0")
    from gi.repository import Gst, GstApp  # noqa: F401  (GstApp: appsrc push_buffer)

    Gst.init(None)

    # The frame pool: rendered before anything is timed.
    width, height = (224, 224) if args.prescaled else (WIDTH, HEIGHT)
    gen = Gst.parse_launch(
        f"videotestsrc num-buffers={POOL} pattern=smpte horizontal-speed=16 "
        f"! video/x-raw,format=RGB,width={width},height={height},framerate=30/1 "
        "! appsink name=sink sync=false"
    )
    gen.set_state(Gst.State.PLAYING)
    appsink = gen.get_by_name("sink")
    pool, caps = [], None
    while True:
        sample = appsink.try_pull_sample(10 * Gst.SECOND)
        if sample is None:
            break
        caps = caps or sample.get_caps()
        pool.append(sample.get_buffer())
    gen.set_state(Gst.State.NULL)
    if len(pool) != POOL:
        raise SystemExit(f"frame generator gave {len(pool)} of {POOL} frames")

    n = args.n
    if args.side == "upstream":
        scale = "" if args.prescaled else (
            "videoscale ! videoconvert ! video/x-raw,width=224,height=224,format=RGB ! ")
        middle = (
            f"{scale}onnxinference model-file={args.upstream_model} input-image-format=chw "
            f"input-tensor-offset={UPSTREAM_OFFSET} input-tensor-scale={UPSTREAM_SCALE} "
            f"optimization-level={args.upstream_optimization}"
        )
    else:
        middle = (
            f"visionclassify model={args.model} model-instance-id=bench batch-size={n} "
            f"batch-timeout=50 threads={args.threads} inference-workers={args.workers} "
            f"ort-library={args.ort_library}"
        )
    desc = " ".join(
        f"appsrc name=src{i} format=time is-live=false max-bytes=0 block=false "
        f"! {middle} ! fakesink name=sink{i} sync=false"
        for i in range(n)
    )
    pipeline = Gst.parse_launch(desc)

    total = n * args.frames
    warm = n * args.warmup
    state = {"count": 0, "t0": None, "cpu0": None}
    lock = threading.Lock()  # the probes run on every stream's streaming thread

    def on_buffer(_pad, _info):
        with lock:
            state["count"] += 1
            if state["count"] == warm:
                state["t0"] = time.monotonic()
                state["cpu0"] = os.times()
        return Gst.PadProbeReturn.OK

    for i in range(n):
        pipeline.get_by_name(f"sink{i}").get_static_pad("sink").add_probe(
            Gst.PadProbeType.BUFFER, on_buffer
        )

    srcs = [pipeline.get_by_name(f"src{i}") for i in range(n)]
    for src in srcs:
        src.set_property("caps", caps)
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        raise SystemExit(f"{args.side}: the pipeline does not start: {bus_error(pipeline)}")

    frame_ns = Gst.SECOND // 30
    for k in range(args.frames):
        for src in srcs:
            buf = pool[k % POOL].copy()  # shallow: the pixels stay shared with the pool
            buf.pts = k * frame_ns
            buf.duration = frame_ns
            ret = src.push_buffer(buf)
            if ret != Gst.FlowReturn.OK:
                raise SystemExit(f"{args.side}: push failed ({ret}): {bus_error(pipeline)}")
    for src in srcs:
        src.end_of_stream()

    bus = pipeline.get_bus()
    msg = bus.timed_pop_filtered(
        args.timeout * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    t1, cpu1 = time.monotonic(), os.times()
    if msg is None:
        raise SystemExit(f"{args.side} N={n}: no EOS within {args.timeout} s ({state['count']} frames)")
    if msg.type == Gst.MessageType.ERROR:
        err, dbg = msg.parse_error()
        raise SystemExit(f"{args.side} N={n}: pipeline error: {err.message} ({dbg})")
    stats = None
    if args.side == "ours":
        el = pipeline.get_by_name("sink0").get_static_pad("sink").get_peer().get_parent_element()
        s = el.get_property("stats")
        if s is not None:
            stats = {k: s.get_value(k) for k in ("engine-batches", "engine-frames", "engine-mean-fill")
                     if s.has_field(k)}
    pipeline.set_state(Gst.State.NULL)

    if state["count"] != total:
        raise SystemExit(f"{args.side} N={n}: {state['count']} of {total} frames reached the sinks")
    timed = total - warm
    secs = t1 - state["t0"]
    cpu = (cpu1.user + cpu1.system) - (state["cpu0"].user + state["cpu0"].system)
    with open("/proc/loadavg") as f:
        load1 = float(f.read().split()[0])
    hwm = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) // 1024
    print(json.dumps({
        "side": args.side, "n": n, "fps": timed / secs, "timed_frames": timed, "seconds": secs,
        "cpu_ms_per_frame": 1000.0 * cpu / timed, "peak_rss_mib": hwm, "load1": load1, "engine": stats,
    }))
    return 0


def bus_error(pipeline):
    from gi.repository import Gst

    msg = pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
    if msg is None:
        return "no error on the bus"
    err, dbg = msg.parse_error()
    return f"{err.message} ({dbg})"


# ---------------------------------------------------------------- parent: rounds and table


def ort_version(library: str) -> str:
    """ONNX Runtime's own version string, read in a child so that no library stays loaded here."""
    code = (
        "import ctypes,sys\n"
        "lib=ctypes.CDLL(sys.argv[1])\n"
        "class Base(ctypes.Structure):\n"
        "    _fields_=[('GetApi',ctypes.c_void_p),('GetVersionString',ctypes.CFUNCTYPE(ctypes.c_char_p))]\n"
        "lib.OrtGetApiBase.restype=ctypes.POINTER(Base)\n"
        "print(lib.OrtGetApiBase().contents.GetVersionString().decode())\n"
    )
    try:
        return subprocess.run([sys.executable, "-c", code, library], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (subprocess.CalledProcessError, OSError) as e:
        return f"unknown ({e})"


def upstream_ort_library() -> str:
    """The libonnxruntime.so.* that libgstonnx.so links against."""
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"):
        plugin = os.path.join(d, "gstreamer-1.0", "libgstonnx.so")
        if os.path.exists(plugin):
            ldd = subprocess.run(["ldd", plugin], capture_output=True, text=True).stdout
            for line in ldd.splitlines():
                if "libonnxruntime" in line and "=>" in line:
                    return line.split("=>")[1].split()[0]
    return ""


def measure(args, side, n):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", side, "--n", str(n),
           "--frames", str(args.frames), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--workers", str(args.workers),
           "--model", args.model, "--upstream-model", args.upstream_model,
           "--ort-library", args.ort_library, "--timeout", str(args.timeout),
           "--upstream-optimization", args.upstream_optimization]
    if args.prescaled:
        cmd.append("--prescaled")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"headtohead: {side} N={n} failed (exit {p.returncode})")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--frames", type=int, default=200, help="frames per stream and run")
    ap.add_argument("--warmup", type=int, default=10, help="frames per stream not timed")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0,
                    help="visionclassify inference-workers (sessions running batches side by side; 0 = automatic, the element default)")
    ap.add_argument("--threads", type=int, default=0,
                    help="visionclassify threads (onnxinference has no such property: ORT default)")
    ap.add_argument("--model", default=os.path.join(ROOT, "models/efficientnet-lite0.onnx"))
    ap.add_argument("--upstream-model",
                    default=os.path.join(ROOT, ".deps/upstream/efficientnet-lite0.upstream.onnx"))
    ap.add_argument("--ort-library",
                    default=os.path.join(ROOT, ".deps/onnxruntime/lib/libonnxruntime.so"))
    ap.add_argument("--upstream-optimization", default="enable-all")
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--json", default="")
    ap.add_argument("--prescaled", action="store_true",
                    help="diagnostic: 224x224 frames for both sides, upstream without videoscale "
                         "(inference + tensor copy only; not the head-to-head)")
    ap.add_argument("--child", choices=["upstream", "ours"])
    ap.add_argument("--n", type=int, default=1)
    args = ap.parse_args()
    if args.child:
        args.side = args.child
        return child(args)

    streams = [int(s) for s in args.streams.split(",") if s]
    up_lib = upstream_ort_library()
    info = {
        "upstream_ort": f"{ort_version(up_lib)} ({up_lib})" if up_lib else "unknown",
        "ours_ort": f"{ort_version(args.ort_library)} ({args.ort_library})",
        "gstreamer": subprocess.run(["gst-inspect-1.0", "--version"], capture_output=True,
                                    text=True).stdout.splitlines()[1].strip(),
        "cpus": os.cpu_count(),
        "frames_per_stream": args.frames, "warmup_per_stream": args.warmup,
        "rounds": args.rounds, "threads_ours": args.threads,
        "upstream_optimization": args.upstream_optimization,
        "prescaled": args.prescaled,
    }
    print("[headtohead] " + json.dumps(info), flush=True)
    runs = {(s, n): [] for s in ("upstream", "ours") for n in streams}
    for r in range(args.rounds):
        for n in streams:
            order = ("upstream", "ours") if (r + n) % 2 == 0 else ("ours", "upstream")
            for side in order:
                res = measure(args, side, n)
                runs[(side, n)].append(res)
                print(f"[headtohead] round {r + 1} N={n} {side:8s} {res['fps']:7.1f} fps "
                      f"cpu {res['cpu_ms_per_frame']:.1f} ms/frame rss {res['peak_rss_mib']} MiB"
                      + (f" engine {res['engine']}" if res.get("engine") else ""), flush=True)

    med = lambda side, n, k: statistics.median(x[k] for x in runs[(side, n)])  # noqa: E731
    lines = [
        f"ONNX Runtime: upstream {info['upstream_ort']}; ours {info['ours_ort']}. "
        f"{info['gstreamer']}. {info['cpus']} CPUs. {args.frames} frames per stream "
        f"({args.warmup} untimed), medians of {args.rounds} interleaved rounds. "
        f"visionclassify threads={args.threads} inference-workers={args.workers}; onnxinference: ORT default threads per session "
        f"(no property), optimization-level={args.upstream_optimization}. "
        f"1-min load average at the end of each run (counts the benchmark's own threads too): median "
        f"{statistics.median(x['load1'] for v in runs.values() for x in v):.1f}, max "
        f"{max(x['load1'] for v in runs.values() for x in v):.1f}."
        + (" DIAGNOSTIC: 224x224 input frames, upstream without videoscale." if args.prescaled else ""),
        "",
        "| streams | upstream fps (per stream) | ours fps (per stream) | ours / upstream "
        "| CPU ms/frame upstream / ours | peak RSS MiB upstream / ours |",
        "|---|---|---|---|---|---|",
    ]
    summary = []
    for n in streams:
        up, us = med("upstream", n, "fps"), med("ours", n, "fps")
        lines.append(
            f"| {n} | {up:.1f} ({up / n:.1f}) | {us:.1f} ({us / n:.1f}) | {us / up:.2f} "
            f"| {med('upstream', n, 'cpu_ms_per_frame'):.1f} / {med('ours', n, 'cpu_ms_per_frame'):.1f} "
            f"| {med('upstream', n, 'peak_rss_mib'):.0f} / {med('ours', n, 'peak_rss_mib'):.0f} |")
        summary.append({"n": n, "upstream_fps": up, "ours_fps": us, "ratio": us / up})
    table = "\n".join(lines)
    print()
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "summary": summary,
                       "runs": {f"{s}-{n}": v for (s, n), v in runs.items()}}, f, indent=1)
        with open(os.path.splitext(args.json)[0] + ".md", "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
