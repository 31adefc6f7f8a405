#!/usr/bin/env python3
"""Plain PyTorch twin of `gan-train`'s default cgan training step, for `just bench-gan`.

Same architecture, losses, optimiser, batch, data sampling and per-step work as the Rust
trainer: G = embed(50) ++ z(100) -> Linear -> 128x7x7 -> BN -> ReLU -> ConvT 64 -> BN -> ReLU
-> ConvT C -> tanh; D = Conv 64 -> LReLU(0.2) -> Conv 128 -> BN -> LReLU -> Linear(1) plus a
projection embedding; BCE with one-sided smoothing 0.9; Adam(2e-4, 0.5, 0.999) for both;
class-balanced real batches; DiffAugment translation (affine grid, nearest); EMA of G (0.999,
with warm-up); three losses read back each step. Prints JSON with images/s.
"""
import argparse, json, random, time
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file


class G(nn.Module):
    def __init__(self, n_classes, c, z=100, emb=50, w=64, s0=7):
        super().__init__()
        self.embed = nn.Embedding(n_classes, emb)
        self.fc = nn.Linear(z + emb, 2 * w * s0 * s0)
        self.bn0 = nn.BatchNorm2d(2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 4, 2, 1)
        self.bn1 = nn.BatchNorm2d(w)
        self.out = nn.ConvTranspose2d(w, c, 4, 2, 1)
        self.w, self.s0 = w, s0

    def forward(self, z, y):
        h = self.fc(torch.cat([z, self.embed(y)], 1)).view(-1, 2 * self.w, self.s0, self.s0)
        h = F.relu(self.bn0(h))
        h = F.relu(self.bn1(self.up1(h)))
        return torch.tanh(self.out(h))


class D(nn.Module):
    def __init__(self, n_classes, c, w=64, s0=7):
        super().__init__()
        self.conv0 = nn.Conv2d(c, w, 4, 2, 1)
        self.conv1 = nn.Conv2d(w, 2 * w, 4, 2, 1)
        self.bn1 = nn.BatchNorm2d(2 * w)
        feat = 2 * w * s0 * s0
        self.out = nn.Linear(feat, 1)
        self.embed = nn.Embedding(n_classes, feat)

    def forward(self, x, y):
        h = F.leaky_relu(self.conv0(x), 0.2)
        h = F.leaky_relu(self.bn1(self.conv1(h)), 0.2).flatten(1)
        return self.out(h).squeeze(-1) + (self.embed(y) * h).sum(1)


def translation(x, ratio=0.125):
    n, _, h, w = x.shape
    mh, mw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-mh, mh + 1, (n,), device=x.device).float()
    dx = torch.randint(-mw, mw + 1, (n,), device=x.device).float()
    one, zero = torch.ones(n, device=x.device), torch.zeros(n, device=x.device)
    theta = torch.stack([torch.stack([one, zero, dx * 2 / w], 1), torch.stack([zero, one, dy * 2 / h], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="artifacts/dataset/train.safetensors")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(42)
    dev = torch.device(a.device)
    t = load_file(a.data)
    with safe_open(a.data, "pt") as f:
        classes = json.loads(f.metadata()["classes"])
    x = (t["images"].float() / 127.5 - 1).to(dev)
    y = t["labels"].to(dev)
    by_class = [torch.nonzero(t["labels"] == c).flatten().tolist() for c in range(len(classes))]
    by_class = [v for v in by_class if v]
    n, c, h, w = x.shape
    g, d = G(len(classes), c, s0=h // 4).to(dev), D(len(classes), c, s0=h // 4).to(dev)
    ema = G(len(classes), c, s0=h // 4).to(dev)
    ema.load_state_dict(g.state_dict())
    og = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    bce = F.binary_cross_entropy_with_logits
    rng = random.Random(42)
    # Float tensors only: PyTorch's BatchNorm also counts batches in an int buffer (tch has none).
    ema_pairs = [(e, p) for e, p in zip(ema.state_dict().values(), g.state_dict().values()) if e.is_floating_point()]
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(1, a.steps + 1):
        idx = torch.tensor([rng.choice(by_class[rng.randrange(len(by_class))]) for _ in range(a.batch)], device=dev)
        xr, yr = x[idx], y[idx]
        z = torch.randn(a.batch, 100, device=dev)
        fake = g(z, yr)
        d_real = d(translation(xr), yr)
        d_fake = d(translation(fake.detach()), yr)
        l_real = bce(d_real, torch.full_like(d_real, 0.9))
        l_fake = bce(d_fake, torch.zeros_like(d_fake))
        od.zero_grad()
        (l_real + l_fake).backward()
        od.step()
        out = d(translation(fake), yr)
        lg = bce(out, torch.ones_like(out))
        og.zero_grad()
        lg.backward()
        og.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in ema_pairs:
                e.mul_(decay).add_(p, alpha=1 - decay)
        l_real.item(), l_fake.item(), lg.item()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - start
    print(json.dumps({"steps": a.steps, "batch": a.batch, "train_s": secs, "images_per_s": a.steps * a.batch / secs}))


if __name__ == "__main__":
    main()
