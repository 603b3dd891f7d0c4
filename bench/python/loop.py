#!/usr/bin/env python3
"""The baseline users write without visionclassify: a Python loop that resizes each frame
with OpenCV, normalises it with NumPy and runs ONNX Runtime on it.

    python loop.py --model M.onnx --frames-file pool.raw --width 1920 --height 1080 \
        --batches 1,4,8 --frames 300 --threads 1 --rounds 3 --latency 200 --json out.json

Reads the very frames vision-bench times (its --dump-frames pool, packed RGB), takes the
preprocessing from the model's vision.preprocess metadata (center-crop or stretch, scale, mean,
std; NCHW RGB), and times `frames` frames per batch size: at batch B it preprocesses B frames,
stacks them, and runs the session once. ONNX Runtime gets the same intra-op threads as the
element; OpenCV keeps its default threads, as user code does.
"""
import argparse
import json
import resource
import statistics
import time

import cv2
import numpy as np
import onnxruntime as ort


def contract(session):
    meta = session.get_modelmeta().custom_metadata_map
    pre = json.loads(meta.get("vision.preprocess", "{}"))
    h, w = pre.get("size", session.get_inputs()[0].shape[2:4])
    return {
        "size": (int(h), int(w)),
        "resize": pre.get("resize", "stretch"),
        "scale": float(pre.get("scale", 1 / 255)),
        "mean": np.array(pre.get("mean", [0, 0, 0]), np.float32),
        "std": np.array(pre.get("std", [1, 1, 1]), np.float32),
    }


def preprocess(frame, c):
    """One RGB frame (H, W, 3) uint8 -> (3, h, w) float32, as the model wants it."""
    h, w = c["size"]
    if c["resize"] == "center-crop":
        fh, fw = frame.shape[:2]
        s = min(fh / h, fw / w)
        ch, cw = round(h * s), round(w * s)
        y, x = (fh - ch) // 2, (fw - cw) // 2
        frame = frame[y : y + ch, x : x + cw]
    img = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    x = (img.astype(np.float32) * c["scale"] - c["mean"]) / c["std"]
    return x.transpose(2, 0, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--frames-file", required=True)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args()

    raw = np.fromfile(a.frames_file, dtype=np.uint8)
    frame_bytes = a.width * a.height * 3
    if raw.size == 0 or raw.size % frame_bytes:
        raise SystemExit(f"{a.frames_file}: not whole {a.width}x{a.height} RGB frames")
    pool = raw.reshape(-1, a.height, a.width, 3)

    options = ort.SessionOptions()
    options.intra_op_num_threads = a.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(a.model, options, providers=["CPUExecutionProvider"])
    c = contract(session)
    name = session.get_inputs()[0].name

    def run_batch(start, n):
        x = np.stack([preprocess(pool[(start + i) % len(pool)], c) for i in range(n)])
        return session.run(None, {name: x})

    rows = []
    for batch in [int(b) for b in a.batches.split(",")]:
        fps = []
        for _ in range(a.rounds):
            for i in range(2):
                run_batch(i * batch, batch)  # warm-up
            started = time.perf_counter()
            done = 0
            while done < a.frames:
                n = min(batch, a.frames - done)
                run_batch(done, n)
                done += n
            fps.append(a.frames / (time.perf_counter() - started))
        rows.append({"threads": a.threads, "batch": batch, "fps": statistics.median(fps), "fps_rounds": fps})
        print(f"python loop  threads {a.threads} batch {batch}: {statistics.median(fps):.1f} fps")

    latency = None
    if a.latency:
        times = []
        for i in range(10 + a.latency):
            started = time.perf_counter()
            run_batch(i, 1)
            if i >= 10:
                times.append((time.perf_counter() - started) * 1000)
        times.sort()
        latency = {"median_ms": statistics.median(times), "p95_ms": times[max(0, -(-len(times) * 95 // 100) - 1)]}
        print(f"python loop  latency at batch 1: {latency['median_ms']:.2f} ms median, {latency['p95_ms']:.2f} ms p95")

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"python loop  peak RSS {peak:.0f} MiB (onnxruntime {ort.__version__}, opencv {cv2.__version__})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "latency": latency, "peak_rss_mib": peak,
                       "onnxruntime": ort.__version__, "opencv": cv2.__version__,
                       "numpy": np.__version__, "opencv_threads": cv2.getNumThreads()}, f, indent=2)


if __name__ == "__main__":
    main()
