#!/usr/bin/env python3
"""Tables and plot of one bench/run.sh run: reads DIR/fp32.json (vision-bench), DIR/python.json
(loop.py), DIR/rss-*.json and, when present, DIR/int8.json; writes DIR/summary.md and DIR/fps.png.

    python plot.py DIR
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def main():
    out = sys.argv[1]
    fp32 = load(os.path.join(out, "fp32.json"))
    py = load(os.path.join(out, "python.json"))
    int8 = load(os.path.join(out, "int8.json"))
    rss = {side: load(os.path.join(out, f"rss-{side}.json")) for side in ("element", "bare")}
    machine = load(os.path.join(out, "machine.json")) or {}

    py_fps = {r["batch"]: r["fps"] for r in py["rows"]}
    int8_rows = {r["batch"]: r for r in int8["rows"]} if int8 else {}
    batches = [r["batch"] for r in fp32["rows"]]
    lines = []
    head = "| batch | element fps | bare ORT fps | Python loop fps | element / bare | element / Python |"
    sep = "|---|---|---|---|---|---|"
    if int8:
        head += " int8 element fps | int8 bare ORT fps | int8 / fp32 element |"
        sep += "---|---|---|"
    lines += [head, sep]
    for r in fp32["rows"]:
        b = r["batch"]
        e, bare, p = r["element_fps"], r["bare_fps"], py_fps.get(b, float("nan"))
        row = f"| {b} | {e:.1f} | {bare:.1f} | {p:.1f} | {e / bare:.3f} | {e / p:.2f} |"
        if int8:
            i = int8_rows.get(b)
            row += f" {i['element_fps']:.1f} | {i['bare_fps']:.1f} | {i['element_fps'] / e:.2f} |" if i else " – | – | – |"
        lines.append(row)
    lines.append("")
    lat = fp32["latency"][0] if fp32.get("latency") else None
    if lat:
        lines += [
            "| latency at batch 1, ms per frame | median | p95 |",
            "|---|---|---|",
            f"| element, push to sink | {lat['element']['median_ms']:.2f} | {lat['element']['p95_ms']:.2f} |",
            f"| bare ORT `session.run` only | {lat['bare_run']['median_ms']:.2f} | {lat['bare_run']['p95_ms']:.2f} |",
            f"| bare ORT, element's preprocessing + run inline | {lat['bare_preprocess_and_run']['median_ms']:.2f} | {lat['bare_preprocess_and_run']['p95_ms']:.2f} |",
        ]
        if py.get("latency"):
            lines.append(f"| Python loop, OpenCV + ORT | {py['latency']['median_ms']:.2f} | {py['latency']['p95_ms']:.2f} |")
        lines.append(
            f"| **added by the element** vs run only / vs preprocessing + run | "
            f"{lat['element']['median_ms'] - lat['bare_run']['median_ms']:+.2f} / "
            f"{lat['element']['median_ms'] - lat['bare_preprocess_and_run']['median_ms']:+.2f} | |"
        )
        lines.append("")
    lines += ["| peak RSS (VmHWM), MiB | |", "|---|---|"]
    for side, label in (("element", "element process (pipeline + session)"), ("bare", "bare ORT session process")):
        if rss[side] and rss[side].get("peak_rss_mib"):
            lines.append(f"| {label} | {rss[side]['peak_rss_mib']:.0f} |")
    lines.append(f"| Python loop process | {py['peak_rss_mib']:.0f} |")
    lines.append("")
    f = fp32["frames"]
    lines.append(
        f"Model `{os.path.basename(fp32['model'])}` ({fp32['model_name']}, input {fp32['input'][0]}x{fp32['input'][1]}); "
        f"{f['count']} timed {f['width']}x{f['height']} {f['format']} frames per run, median of {f['rounds']} rounds; "
        f"ORT intra-op threads {fp32['rows'][0]['threads']} for every side; {fp32['cpus']} CPUs; "
        f"load average {fp32['load']['start']} -> {fp32['load']['end']}; "
        f"Python: onnxruntime {py['onnxruntime']}, opencv {py['opencv']} ({py['opencv_threads']} threads), numpy {py['numpy']}."
    )
    if machine:
        lines.append(f"Machine: {machine.get('cpu', '?')}; {machine.get('date', '')}.")
    summary = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.md"), "w") as fh:
        fh.write(summary)
    print(summary)

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    series = [
        ("visionclassify element", [r["element_fps"] for r in fp32["rows"]], "#1f77b4"),
        ("bare ONNX Runtime session", [r["bare_fps"] for r in fp32["rows"]], "#aec7e8"),
        ("Python loop (OpenCV + ORT)", [py_fps.get(b, 0) for b in batches], "#ff7f0e"),
    ]
    if int8:
        series.append(("element, int8 model", [int8_rows[b]["element_fps"] if b in int8_rows else 0 for b in batches], "#2ca02c"))
    width = 0.8 / len(series)
    for k, (label, values, color) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(batches))]
        bars = ax.bar(xs, values, width, label=label, color=color)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    ax.set_ylabel("frames per second (1080p RGB in)")
    ax.set_title(f"{fp32['model_name']}: throughput, {fp32['rows'][0]['threads']} ORT thread(s)")
    # Below the axes, so it never covers a bar.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    if lat:
        names = ["element\npush→sink", "bare ORT\nrun only", "bare ORT\nprep+run", "Python\nloop"]
        values = [lat["element"]["median_ms"], lat["bare_run"]["median_ms"], lat["bare_preprocess_and_run"]["median_ms"],
                  py["latency"]["median_ms"] if py.get("latency") else 0]
        bars = ax2.bar(names, values, color=["#1f77b4", "#aec7e8", "#c5d9ee", "#ff7f0e"])
        ax2.bar_label(bars, fmt="%.1f", fontsize=8)
        ax2.set_ylabel("ms per frame, median")
        ax2.set_title("latency at batch 1")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fps.png"), dpi=110)


if __name__ == "__main__":
    main()
