#!/usr/bin/env python3
"""Plain Python baseline for `ingest` on an image folder: the same work, the usual way.

Walks root/<class>/*.png, reads each file, hashes it (sha256, as ingest records inputs),
decodes with PIL, converts to grey, stacks into a NumPy array, makes a stratified split with
a seed, and saves train/val/test with safetensors.numpy. Single process, as such loaders are.
"""
import hashlib, json, os, sys
import numpy as np
from PIL import Image
from safetensors.numpy import save_file


def main(root, out):
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    xs, ys = [], []
    for ci, c in enumerate(classes):
        d = os.path.join(root, c)
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                data = f.read()
            hashlib.sha256(data).hexdigest()
            img = Image.open(os.path.join(d, name)).convert("L")
            xs.append(np.asarray(img, dtype=np.uint8))
            ys.append(ci)
    x = np.stack(xs)[:, None]
    y = np.array(ys, dtype=np.int64)
    rng = np.random.default_rng(42)
    split = np.empty(len(y), dtype=np.int64)
    for ci in range(len(classes)):
        idx = rng.permutation(np.flatnonzero(y == ci))
        n_test = round(len(idx) * 0.1)
        n_val = round(len(idx) * 0.1)
        split[idx[:n_test]] = 2
        split[idx[n_test:n_test + n_val]] = 1
        split[idx[n_test + n_val:]] = 0
    os.makedirs(out, exist_ok=True)
    meta = {"classes": json.dumps(classes)}
    for si, s in enumerate(["train", "val", "test"]):
        m = split == si
        save_file({"images": np.ascontiguousarray(x[m]), "labels": y[m]}, os.path.join(out, f"{s}.safetensors"), metadata=meta)
    print(len(y))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
