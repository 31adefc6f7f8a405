#!/usr/bin/env python3
"""`just bench-gan [--model cgan|wgan-gp] [--size N]`: the Rust GAN training step against
scripts/bench/gan_step.py (plain PyTorch, same architecture, batch, device and thread count), on
the MNIST train set (ingested at N px: grey at 28 and 48 as MNIST and FER2013, RGB at 32, 64
and 128 as the traffic-sign and retina studies). Prints images/s for both and the ratio, and
each side's GFLOP/s and share of the machine's peak: the step's FLOPs are counted once on the
twin (torch.utils.flop_counter: the same networks, so the same work), and the peak is measured
once per machine, thread count and device by a plain large fp32 matmul (bench-data/peak-*.json).
Sampling and checkpoint I/O are excluded on both sides.
"""
import argparse, json, os, statistics, subprocess, sys

sys.path.insert(0, os.path.dirname(__file__))
import flops  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def dataset(a):
    """The bench's training set at `a.size` px (made once with ingest): (path, channels)."""
    channels = a.channels or (1 if a.size in (28, 48) else 3)
    if a.size == 28 and channels == 1:
        data = os.path.join(ROOT, "artifacts", "dataset", "train.safetensors")
    else:
        folder = os.path.join(ROOT, "bench-data", f"mnist-{a.size}-{channels}")
        data = os.path.join(folder, "train.safetensors")
        if not os.path.exists(data):
            ingest = os.path.join(os.path.dirname(a.bin), "ingest")
            subprocess.run([ingest, os.path.join(ROOT, "data", "mnist"), "--size", str(a.size), "--channels", str(channels),
                            "--test-per-class", "400", "--val-per-class", "100", "--max-per-class", "300",
                            "--out", folder, "--quiet"], check=True, stdout=subprocess.DEVNULL)
    return data, channels


def rust_argv(a, data, out):
    """gan-train doing the twin's work: `a.steps` steps, no sampling, checkpoints or logs."""
    return [a.bin, "--data", data, "--out", out, "--steps", str(a.steps), "--threads", str(a.threads),
            "--device", a.device, "--sample-every", "1000000", "--checkpoint-every", "1000000",
            "--log-every", "1000000", "--model", a.model, "--batch", str(a.batch), "--quiet",
            # The twin is the plain cgan / wgan-gp: no minibatch-std D, no mode seeking.
            "--minibatch-std", "false", "--mode-seeking", "0"]


def arguments():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "gan-train"))
    ap.add_argument("--model", choices=["cgan", "wgan-gp"], default="cgan")
    ap.add_argument("--size", type=int, default=28, help="image side: 28, 32, 48, 64 or 128")
    ap.add_argument("--channels", type=int, choices=[1, 3], help="default: 1 at 28 and 48 px, else 3")
    ap.add_argument("--batch", type=int, default=64)
    return ap


def main():
    a = arguments().parse_args()
    data, channels = dataset(a)
    out = os.path.join(ROOT, "bench-data", "gan-rust")

    def rust():
        subprocess.run(rust_argv(a, data, out), check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "manifest.json")) as f:
            return json.load(f)["metrics"]["images_per_s"]

    def python():
        return json.loads(subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench", "gan_step.py"), "--data", data,
                                          "--steps", str(a.steps), "--threads", str(a.threads), "--device", a.device,
                                          "--model", a.model, "--batch", str(a.batch)],
                                         check=True, capture_output=True, text=True).stdout)["images_per_s"]

    def flops_per_image():
        return json.loads(subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench", "gan_step.py"), "--data", data,
                                          "--threads", str(a.threads), "--device", a.device, "--model", a.model,
                                          "--batch", str(a.batch), "--flops"],
                                         check=True, capture_output=True, text=True).stdout)["flops_per_image"]

    # Alternate the two so that a slow spell of the machine hits both alike; report medians.
    rs, ps = [], []
    for _ in range(a.repeat):
        rs.append(rust())
        ps.append(python())
    rust, py = statistics.median(rs), statistics.median(ps)
    print(f"  runs, rust  : {', '.join(f'{v:.0f}' for v in rs)} images/s")
    print(f"  runs, python: {', '.join(f'{v:.0f}' for v in ps)} images/s")
    print(f"{a.model} training step, MNIST {channels}x{a.size}x{a.size}, batch {a.batch}, {a.steps} steps, device {a.device}, "
          f"{a.threads} threads, median of {a.repeat}")
    print(f"  rust gan-train (median): {rust:8.1f} images/s")
    print(f"  python pytorch (median): {py:8.1f} images/s")
    print(f"  ratio (rust / python): {rust / py:.2f}x")
    fpi = flops_per_image()
    print(f"  work: {fpi / 1e6:.0f} MFLOP an image ({fpi * a.batch / 1e9:.2f} GFLOP a batch; PyTorch's FLOP formulas on the twin)")
    flops.report(a, [("rust", rust), ("python", py)], fpi)


if __name__ == "__main__":
    main()
