#!/usr/bin/env python3
"""Turn `gst-launch-1.0 -m` output with visionclassify messages into JSON lines.

    gst-launch-1.0 -m ... visionclassify post-messages=true ... | \
        messages_to_jsonl.py --names NAMES_FILE --out OUT.jsonl

One line per classified frame, in frame order:
    {"file": "cat.png", "frame": 0, "label": "Egyptian cat", "class_id": 285,
     "confidence": 0.74, "labels": [...], "confidences": [...], "batch_size": 8}
`file` is line `frame` of NAMES_FILE (the images in the order the source read them).
Prints "frames N seconds S" on stdout at the end: the classified frames and gst-launch's
"Execution ended after" time (PLAYING to EOS). Only the Python standard library.
"""
import argparse
import json
import re
import sys

MESSAGE = re.compile(r'^Got message #\d+ from element "([^"]*)" \(element\): (visionclassify[,;].*)$')
ENDED = re.compile(r"^Execution ended after (\d+):(\d+):(\d+)\.(\d+)")


def parse_value(s, i):
    """A serialized GstStructure value at s[i:] (after the `(type)`): returns (value, next i)."""
    if s[i] == "<":
        items, i = [], i + 1
        while True:
            while s[i] == " ":
                i += 1
            if s[i] == ">":
                return items, i + 1
            value, i = parse_value(s, i)
            items.append(value)
            while s[i] == " ":
                i += 1
            if s[i] == ",":
                i += 1
    if s[i] == '"':
        out, i = bytearray(), i + 1
        while s[i] != '"':
            if s[i] == "\\":
                if s[i + 1 : i + 4].isdigit():  # \ooo: one byte in octal
                    out.append(int(s[i + 1 : i + 4], 8))
                    i += 4
                    continue
                i += 1
            out.extend(s[i].encode())
            i += 1
        return out.decode("utf-8", "replace"), i + 1
    j = i
    while s[j] not in ",;>" and not (s[j] == " " and s[j + 1] in ">,"):
        j += 1
    return s[i:j], j


def fields(body):
    out = {}
    for m in re.finditer(r"([a-z-]+)=\(([a-z0-9]+)\)", body):
        if m.start() < 1 or body[m.start() - 1] not in ", ":
            continue
        value, _ = parse_value(body, m.end())
        kind = m.group(2)
        convert = float if kind in ("double", "float") else int if "int" in kind else str
        if kind == "boolean":
            convert = lambda v: v == "true"  # noqa: E731
        out[m.group(1)] = [convert(v) for v in value] if isinstance(value, list) else convert(value)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--names", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--echo", action="store_true", help="also print each line")
    a = ap.parse_args()
    names = open(a.names, encoding="utf-8").read().splitlines()
    frames, seconds = 0, None
    with open(a.out, "w", encoding="utf-8") as out:
        for line in sys.stdin:
            m = MESSAGE.match(line.rstrip("\n"))
            if m:
                f = fields(m.group(2))
                frame = f["frame"]
                record = {
                    "file": names[frame] if frame < len(names) else None,
                    "frame": frame,
                    "label": f["best-label"],
                    "class_id": f["best-class-id"],
                    "confidence": round(f["best-confidence"], 6),
                    "below_threshold": f["below-threshold"],
                    "labels": f["labels"],
                    "confidences": [round(c, 6) for c in f["confidences"]],
                    "batch_size": f["batch-size"],
                    "model": f["model"],
                }
                out.write(json.dumps(record) + "\n")
                if a.echo:
                    print(f'{record["file"]}  {record["label"]}  {record["confidence"]:.3f}', flush=True)
                frames += 1
                continue
            e = ENDED.match(line)
            if e:
                h, mnt, sec, frac = e.groups()
                seconds = int(h) * 3600 + int(mnt) * 60 + int(sec) + float("0." + frac)
    print(f"frames {frames} seconds {seconds if seconds is not None else 'unknown'}")


if __name__ == "__main__":
    main()
