#!/usr/bin/env python3
"""`just bench-ingest`: time `ingest` on an image folder against ingest_pil.py on the same folder.

Makes bench-data/mnist-png (the 10,000 MNIST digits as PNG files, one folder per class) from
data/mnist if it is missing, runs each loader --repeat times and prints the medians and ratio.
"""
import argparse, gzip, os, statistics, subprocess, sys, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def make_png_folder(dst):
    from PIL import Image
    import numpy as np
    src = os.path.join(ROOT, "data", "mnist")
    with gzip.open(os.path.join(src, "mnist-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 28, 28)
    with gzip.open(os.path.join(src, "mnist-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read()[8:], dtype=np.uint8)
    tmp = dst + ".tmp"
    for i, (img, label) in enumerate(zip(images, labels)):
        d = os.path.join(tmp, str(label))
        os.makedirs(d, exist_ok=True)
        Image.fromarray(img).save(os.path.join(d, f"{i:05d}.png"))
    os.replace(tmp, dst)


def timed(cmd):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    folder = os.path.join(ROOT, "bench-data", "mnist-png")
    if not os.path.isdir(folder):
        print("bench-ingest: writing bench-data/mnist-png (10,000 PNG files)", file=sys.stderr)
        make_png_folder(folder)
    n_files = sum(len(fs) for _, _, fs in os.walk(folder))
    ingest = os.path.join(ROOT, "target", "release", "ingest")
    rust = [ingest, folder, "--out", os.path.join(ROOT, "bench-data", "out-rust"), "--quiet"]
    py = [sys.executable, os.path.join(ROOT, "scripts", "bench", "ingest_pil.py"), folder, os.path.join(ROOT, "bench-data", "out-python")]
    timed(rust), timed(py)  # warm the page cache for both
    r = [timed(rust) for _ in range(args.repeat)]
    p = [timed(py) for _ in range(args.repeat)]
    rm, pm = statistics.median(r), statistics.median(p)
    print(f"ingest of {n_files} PNG files, {os.cpu_count()} cores, median of {args.repeat} runs")
    print(f"  rust ingest      : {rm:7.3f} s  ({n_files / rm:8.0f} images/s)")
    print(f"  python PIL+NumPy : {pm:7.3f} s  ({n_files / pm:8.0f} images/s)")
    print(f"  ratio (python / rust): {pm / rm:.2f}x")


if __name__ == "__main__":
    main()
