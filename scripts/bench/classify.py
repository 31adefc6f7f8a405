#!/usr/bin/env python3
"""`just bench-classify`: LeNet-5 training in `classify` against a plain PyTorch twin doing the
same work on the same machine: same network (28x28 padded to 32x32, tanh, average pooling),
Adam 1e-3, batch 64, a shuffled pass per epoch, evaluation on the val split after every epoch,
a copy of the best weights, and a checkpoint (weights + Adam state) written and fsynced per
epoch. Prints training images/s for both (over the epochs' wall time) and the ratio, and each
side's GFLOP/s and share of the machine's peak (scripts/bench/flops.py).

--online: the practitioner's recipe instead (`classify --recipe online`): class-balanced
sampling (classes x the largest class's count draws an epoch, as torch.multinomial over 1/n_c
weights) and a fresh random affine (augment's ranges) + elastic (34, 4) transform of every
image of every batch, done on the batch as a PyTorch user writes it (affine_grid + a smoothed
random field + grid_sample). Images/s counts the draws.
"""
import argparse, contextlib, copy, json, os, statistics, subprocess, sys, tempfile, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))
import flops  # noqa: E402
from flops import counter  # noqa: E402


def online_batch(x, g, torch, F):
    """Affine (rotation 20 deg, shear 0.3 rad, zoom 0.2, shift 0.1) then elastic (34, 4), one grid."""
    import math
    n, _, h, w = x.shape
    u = lambda r: (torch.rand(n, generator=g, device=x.device) * 2 - 1) * r
    th, sh = u(math.radians(20)), u(0.3)
    zx, zy = 1 + u(0.2), 1 + u(0.2)
    c, s = torch.cos(th), torch.sin(th)
    R = torch.stack([torch.stack([c, -s], 1), torch.stack([s, c], 1)], 1)
    S = torch.stack([torch.stack([torch.ones_like(sh), -torch.sin(sh)], 1),
                     torch.stack([torch.zeros_like(sh), torch.cos(sh)], 1)], 1)
    A = torch.zeros(n, 2, 3, device=x.device)
    A[:, :, :2] = R @ S @ torch.diag_embed(torch.stack([zx, zy], 1))
    A[:, 0, 2], A[:, 1, 2] = u(0.2), u(0.2)
    grid = F.affine_grid(A, x.shape, align_corners=False)
    r = 12
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-t ** 2 / 32.0)
    k = k / k.sum()
    d = torch.rand(n, 2, h, w, generator=g, device=x.device) * 2 - 1
    d = F.conv2d(F.pad(d, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(2, 1, 1, -1), groups=2)
    d = F.conv2d(F.pad(d, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(2, 1, -1, 1), groups=2)
    grid = grid + (d * 34.0).permute(0, 2, 3, 1) * torch.tensor([2.0 / w, 2.0 / h], device=x.device)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="border")


def python_twin(train_path, val_path, epochs, threads, device, online=False, count=False):
    """images/s; with `count`, the FLOPs a training image costs instead (the epoch's training,
    validation and all, over its training images)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from safetensors.torch import load_file

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tr, va = load_file(train_path), load_file(val_path)
    xtr, ytr = tr["images"].to(device), tr["labels"].to(device)
    xva, yva = va["images"].to(device), va["labels"].to(device)
    k = int(max(ytr.max(), yva.max())) + 1

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c3, self.c5 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5), nn.Conv2d(16, 120, 5)
            self.f6, self.head = nn.Linear(120, 84), nn.Linear(84, k)

        def forward(self, x):
            x = F.pad(x + 1.0, (2, 2, 2, 2)) - 1.0
            x = F.avg_pool2d(torch.tanh(self.c1(x)), 2)
            x = F.avg_pool2d(torch.tanh(self.c3(x)), 2)
            x = torch.tanh(self.c5(x)).flatten(1)
            return self.head(torch.tanh(self.f6(x)))

    prep = lambda u8: u8.float() / 127.5 - 1.0
    model = LeNet5().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    best, best_f1 = None, -1.0
    n = xtr.shape[0]
    counts = torch.bincount(ytr, minlength=k).float()
    per_epoch = int((counts > 0).sum() * counts.max()) if online else n
    weights = (1.0 / counts.clamp(min=1))[ytr]
    g = torch.Generator(device=device).manual_seed(0)
    ckpt = os.path.join(tempfile.mkdtemp(), "checkpoint.pt")
    t0 = time.perf_counter()
    tally = counter() if count else contextlib.nullcontext()
    tally.__enter__()
    for epoch in range(epochs):
        model.train()
        if online:
            perm = torch.multinomial(weights, per_epoch, replacement=True, generator=g)
        else:
            perm = torch.randperm(n, device=device)
        for s in range(0, per_epoch, 64):
            idx = perm[s:s + 64]
            if online:
                xb = online_batch(xtr[idx].float(), g, torch, F) / 127.5 - 1.0
            else:
                xb = prep(xtr[idx])
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(prep(xva[s:s + 512])) for s in range(0, xva.shape[0], 512)])
            F.cross_entropy(logits, yva).item()
            pred = logits.argmax(1)
            f1s = []
            for c in range(k):
                tp = ((pred == c) & (yva == c)).sum().item()
                p = tp / max((pred == c).sum().item(), 1)
                r = tp / max((yva == c).sum().item(), 1)
                f1s.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
            f1 = sum(f1s) / k
        if f1 > best_f1:
            best_f1, best = f1, copy.deepcopy(model.state_dict())
        with open(ckpt, "wb") as f:
            torch.save({"m": model.state_dict(), "best": best, "opt": opt.state_dict()}, f)
            f.flush()
            os.fsync(f.fileno())
    tally.__exit__(None, None, None)
    if count:
        return tally.total / (epochs * per_epoch)
    return epochs * per_epoch / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--online", action="store_true", help="class-balanced sampling + a fresh affine+elastic per batch")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "classify"))
    ap.add_argument("--python-twin", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--count-flops", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    data = os.path.join(ROOT, "artifacts", "dataset")
    train = os.path.join(data, "train.safetensors")
    if a.python_twin or a.count_flops:
        v = python_twin(train, os.path.join(data, "val.safetensors"), 1 if a.count_flops else a.epochs, a.threads,
                        a.device, a.online, count=a.count_flops)
        print(json.dumps({"flops_per_image" if a.count_flops else "images_per_s": v}))
        return
    out = os.path.join(ROOT, "bench-data", "classify-rust")

    def rust():
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
        subprocess.run([a.bin, "--train", train, "--data", data, "--out", out, "--epochs", str(a.epochs),
                        "--patience", "0", "--device", a.device, "--quiet"] + (["--recipe", "online"] if a.online else []),
                       check=True, stdout=subprocess.DEVNULL, env=env)
        with open(os.path.join(out, "metrics.json")) as f:
            m = json.load(f)
        return a.epochs * m["recipe"]["epoch_size"] / m["runs"][0]["train_s"]

    def python():
        return json.loads(subprocess.run([sys.executable, __file__, "--python-twin", "--epochs", str(a.epochs),
                                          "--threads", str(a.threads), "--device", a.device]
                                         + (["--online"] if a.online else []),
                                         check=True, capture_output=True, text=True).stdout)["images_per_s"]

    rs, ps = [], []
    for _ in range(a.repeat):  # alternate, so a slow spell of the machine hits both alike
        rs.append(rust())
        ps.append(python())
    rust_m, py_m = statistics.median(rs), statistics.median(ps)
    print(f"  runs, rust  : {', '.join(f'{v:.0f}' for v in rs)} images/s")
    print(f"  runs, python: {', '.join(f'{v:.0f}' for v in ps)} images/s")
    what = ("class-balanced draws, a fresh affine+elastic per image" if a.online else "one shuffled pass an epoch")
    print(f"LeNet-5 training, {a.epochs} epochs on artifacts/dataset ({what}; val eval + checkpoint each epoch), "
          f"batch 64, device {a.device}, {a.threads} threads, median of {a.repeat}")
    print(f"  rust classify  (median): {rust_m:8.1f} images/s")
    print(f"  python pytorch (median): {py_m:8.1f} images/s")
    print(f"  ratio (rust / python): {rust_m / py_m:.2f}x")
    fpi = json.loads(subprocess.run([sys.executable, __file__, "--count-flops", "--threads", str(a.threads), "--device", a.device]
                                    + (["--online"] if a.online else []),
                                    check=True, capture_output=True, text=True).stdout)["flops_per_image"]
    print(f"  work: {fpi / 1e6:.2f} MFLOP a training image (its share of the epoch's training and validation; "
          f"PyTorch's FLOP formulas on the twin)")
    flops.report(a, [("rust", rust_m), ("python", py_m)], fpi)


if __name__ == "__main__":
    main()
