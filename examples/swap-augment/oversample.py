#!/usr/bin/env python3
"""A stand-in for the `augment` stage, in plain Python (standard library only).

It honours the artifact contract (docs/artifacts.md): it reads the real training image set
(safetensors: `images` u8 [N,C,H,W], `labels` i64 [N], metadata `classes` and
`contract_version`) and writes `<out>/train.safetensors` in the same format, with every class
repeated up to the largest one (random oversampling), plus `<out>/composition.json` (what it added) and `<out>/manifest.json`.

Swap it in for `augment` in pipeline.toml:

    [entry_points.augment]
    command = ["python3", "examples/swap-augment/oversample.py",
               "--train", "{artifacts}/dataset/train.safetensors",
               "--seed", "{seed}", "--out", "{round_dir}/augmented"]
"""
import argparse
import json
import os
import random
import struct
import sys
import tempfile


def read_set(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    meta = header.pop("__metadata__", {})
    images, labels = header["images"], header["labels"]
    if images["dtype"] != "U8" or labels["dtype"] != "I64":
        sys.exit(f"{path}: images must be U8 and labels I64")
    count, c, h, w = images["shape"]
    per = c * h * w
    a, b = images["data_offsets"]
    pixels = body[a:b]
    a, b = labels["data_offsets"]
    ys = [struct.unpack_from("<q", body, a + 8 * i)[0] for i in range(count)]
    xs = [pixels[i * per : (i + 1) * per] for i in range(count)]
    return meta, (c, h, w), xs, ys


def write_set(path, meta, shape, xs, ys):
    labels = b"".join(struct.pack("<q", y) for y in ys)
    images = b"".join(xs)
    header = {
        "__metadata__": meta,
        "images": {"dtype": "U8", "shape": [len(xs), *shape],
                   "data_offsets": [len(labels), len(labels) + len(images)]},
        "labels": {"dtype": "I64", "shape": [len(ys)], "data_offsets": [0, len(labels)]},
    }
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    atomic_write(path, struct.pack("<Q", len(text)) + text + labels + images)


def atomic_write(path, data):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    meta, shape, xs, ys = read_set(args.train)
    classes = json.loads(meta["classes"])
    by_class = {k: [i for i, y in enumerate(ys) if y == k] for k in range(len(classes))}
    target = max(len(v) for v in by_class.values())
    rng = random.Random(args.seed)
    out_x, out_y, counts = list(xs), list(ys), {}
    for k, idx in by_class.items():
        extra = [rng.choice(idx) for _ in range(target - len(idx))] if idx else []
        out_x += [xs[i] for i in extra]
        out_y += [k] * len(extra)
        counts[classes[k]] = {"real": len(idx), "repeated": len(extra)}
    os.makedirs(args.out, exist_ok=True)
    write_set(os.path.join(args.out, "train.safetensors"), meta, shape, out_x, out_y)
    totals = {"real": len(ys), "repeated": len(out_y) - len(ys), "classical": 0,
              "synthetic": 0, "images": len(out_y)}
    composition = {"strategy": "oversample", "target": target, "train": args.train,
                   "synthetic": None, "classes": counts, "totals": totals}
    atomic_write(os.path.join(args.out, "composition.json"),
                 json.dumps(composition, indent=2).encode())
    manifest = {"stage": "augment", "implementation": "examples/swap-augment/oversample.py",
                "contract_version": meta.get("contract_version", "1.0"),
                "metrics": {"n_images": len(out_y)}, "composition": counts}
    atomic_write(os.path.join(args.out, "manifest.json"), json.dumps(manifest, indent=2).encode())
    print(f"oversample.py: {len(ys)} real images -> {len(out_y)} ({target} per class) in {args.out}")


if __name__ == "__main__":
    main()
