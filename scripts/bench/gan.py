#!/usr/bin/env python3
"""`just bench-gan`: the Rust cgan training step against scripts/bench/gan_step.py (plain
PyTorch, same architecture, batch, device and thread count), on the ingested MNIST train set.
Prints images/s for both and the ratio. Sampling and checkpoint I/O are excluded on both sides.
"""
import argparse, json, os, statistics, subprocess, sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "gan-train"))
    a = ap.parse_args()
    data = os.path.join(ROOT, "artifacts", "dataset", "train.safetensors")
    out = os.path.join(ROOT, "bench-data", "gan-rust")

    def rust():
        subprocess.run([a.bin, "--data", data, "--out", out, "--steps", str(a.steps), "--threads", str(a.threads),
                        "--device", a.device, "--sample-every", "1000000", "--checkpoint-every", "1000000",
                        "--log-every", "1000000", "--quiet"], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "manifest.json")) as f:
            return json.load(f)["metrics"]["images_per_s"]

    def python():
        return json.loads(subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench", "gan_step.py"), "--data", data,
                                          "--steps", str(a.steps), "--threads", str(a.threads), "--device", a.device],
                                         check=True, capture_output=True, text=True).stdout)["images_per_s"]

    # Alternate the two so that a slow spell of the machine hits both alike; report medians.
    rs, ps = [], []
    for _ in range(a.repeat):
        rs.append(rust())
        ps.append(python())
    rust, py = statistics.median(rs), statistics.median(ps)
    print(f"  runs, rust  : {', '.join(f'{v:.0f}' for v in rs)} images/s")
    print(f"  runs, python: {', '.join(f'{v:.0f}' for v in ps)} images/s")
    print(f"cgan training step, MNIST 28x28, batch 64, {a.steps} steps, device {a.device}, {a.threads} threads, median of {a.repeat}")
    print(f"  rust gan-train (median): {rust:8.1f} images/s")
    print(f"  python pytorch (median): {py:8.1f} images/s")
    print(f"  ratio (rust / python): {rust / py:.2f}x")


if __name__ == "__main__":
    main()
