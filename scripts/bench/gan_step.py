#!/usr/bin/env python3
"""Plain PyTorch twin of `gan-train`'s cgan and wgan-gp training steps, for `just bench-gan`.

Same architecture, losses, optimiser, batch, data sampling and per-step work as the Rust
trainer, at any side GanConfig::stages takes (28, 32, 48, 64, 128): G = embed(50) ++ z(100) ->
Linear -> ch0 x s0 x s0 -> BN -> ReLU -> (ConvT -> BN -> ReLU)... -> ConvT C -> tanh; D =
(Conv 4x4/2 -> BN (not for wgan-gp) -> LReLU(0.2))... -> Linear(1) plus a projection embedding;
Adam(2e-4, 0.5, 0.999) for both; class-balanced real batches; DiffAugment translation (affine
grid, nearest); EMA of G (0.999, with warm-up); losses read back each step.
- cgan: BCE with one-sided smoothing 0.9, one D step per G step.
- wgan-gp: 5 critic steps per G step, each on a new real batch and new noise (the fakes of the
  first four made without gradients), loss -D(real) + D(fake) + 10 * (|grad D(x_hat)| - 1)^2 on
  random interpolates (not augmented); G's loss -D(G(z)) on the last critic step's fakes.
Prints JSON with images/s (real images through D per second, as gan-train's manifest counts).
"""
import argparse, contextlib, json, random, time
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file


def stages(side):
    """Stride-2 stages and starting side, as GanConfig::stages: 28 -> (2, 7), 48 -> (3, 6), 128 -> (4, 8)."""
    s, k = side, 0
    while s > 8 and s % 2 == 0:
        s //= 2
        k += 1
    return k, s


class G(nn.Module):
    """fc -> ch(0) x s0 x s0 -> BN -> ReLU -> (ConvT -> BN -> ReLU) x (k-1) -> ConvT C -> tanh."""

    def __init__(self, n_classes, c, side, z=100, emb=50, w=64):
        super().__init__()
        k, s0 = stages(side)
        ch = lambda i: w << (k - 1 - i)
        self.embed = nn.Embedding(n_classes, emb)
        self.fc = nn.Linear(z + emb, ch(0) * s0 * s0)
        layers = [nn.BatchNorm2d(ch(0)), nn.ReLU()]
        for i in range(1, k):
            layers += [nn.ConvTranspose2d(ch(i - 1), ch(i), 4, 2, 1), nn.BatchNorm2d(ch(i)), nn.ReLU()]
        layers += [nn.ConvTranspose2d(ch(k - 1), c, 4, 2, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.c0, self.s0 = ch(0), s0

    def forward(self, z, y):
        h = self.fc(torch.cat([z, self.embed(y)], 1)).view(-1, self.c0, self.s0, self.s0)
        return self.body(h)


class D(nn.Module):
    """(Conv 4x4/2 -> [BN] -> LReLU(0.2)) x k -> Linear(1) + projection; no BN for wgan-gp."""

    def __init__(self, n_classes, c, side, w=64, batch_norm=True):
        super().__init__()
        k, s0 = stages(side)
        layers, c_in = [], c
        for i in range(k):
            layers.append(nn.Conv2d(c_in, w << i, 4, 2, 1))
            if i > 0 and batch_norm:
                layers.append(nn.BatchNorm2d(w << i))
            layers.append(nn.LeakyReLU(0.2))
            c_in = w << i
        self.body = nn.Sequential(*layers)
        feat = c_in * s0 * s0
        self.out = nn.Linear(feat, 1)
        self.embed = nn.Embedding(n_classes, feat)

    def forward(self, x, y):
        h = self.body(x).flatten(1)
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
    ap.add_argument("--model", choices=["cgan", "wgan-gp"], default="cgan")
    ap.add_argument("--flops", action="store_true", help="count one step's FLOPs instead of timing")
    ap.add_argument("--profile", action="store_true",
                    help="time each op with torch.profiler over --steps steps (after 5 warm-up steps); "
                         "prints JSON {op: self CPU microseconds}")
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
    wgan = a.model == "wgan-gp"
    g, d = G(len(classes), c, h).to(dev), D(len(classes), c, h, batch_norm=not wgan).to(dev)
    ema = G(len(classes), c, h).to(dev)
    ema.load_state_dict(g.state_dict())
    og = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    bce = F.binary_cross_entropy_with_logits
    rng = random.Random(42)
    n_d = 5 if wgan else 1
    # Float tensors only: PyTorch's BatchNorm also counts batches in an int buffer (tch has none).
    ema_pairs = [(e, p) for e, p in zip(ema.state_dict().values(), g.state_dict().values()) if e.is_floating_point()]

    def real_batch():
        idx = torch.tensor([rng.choice(by_class[rng.randrange(len(by_class))]) for _ in range(a.batch)], device=dev)
        return x[idx], y[idx]

    def gradient_penalty(xr, fake, yr):
        alpha = torch.rand(xr.shape[0], 1, 1, 1, device=dev)
        x_hat = (alpha * xr + (1 - alpha) * fake.detach()).requires_grad_(True)
        grads = torch.autograd.grad(d(x_hat, yr).sum(), x_hat, create_graph=True)[0]
        return ((grads.view(xr.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()

    # Parts of the step named for --profile (nothing when timing).
    mark = torch.profiler.record_function if a.profile else (lambda name: contextlib.nullcontext())

    def train_step(step):
        for k in range(n_d):
            with mark("rebalance::sample"):
                xr, yr = real_batch()
            z = torch.randn(a.batch, 100, device=dev)
            if k + 1 == n_d:
                fake = g(z, yr)
            else:
                with torch.no_grad():
                    fake = g(z, yr)
            with mark("rebalance::translation"):
                tr, tf = translation(xr), translation(fake.detach())
            d_real = d(tr, yr)
            d_fake = d(tf, yr)
            if wgan:
                gp = gradient_penalty(xr, fake, yr)
                l_real, l_fake = -d_real.mean(), d_fake.mean()
                loss = l_real + l_fake + 10.0 * gp
            else:
                gp = torch.zeros(())
                l_real = bce(d_real, torch.full_like(d_real, 0.9))
                l_fake = bce(d_fake, torch.zeros_like(d_fake))
                loss = l_real + l_fake
            od.zero_grad()
            loss.backward()
            with mark("rebalance::adam"):
                od.step()
        with mark("rebalance::translation"):
            tg = translation(fake)
        out = d(tg, yr)
        lg = -out.mean() if wgan else bce(out, torch.ones_like(out))
        og.zero_grad()
        lg.backward()
        with mark("rebalance::adam"):
            og.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad(), mark("rebalance::ema"):
            for e, p in ema_pairs:
                e.mul_(decay).add_(p, alpha=1 - decay)
        with mark("rebalance::readback"):
            l_real.item(), l_fake.item(), gp.item(), lg.item()

    if a.flops:
        # The floating-point operations of one training step (every D update, the G update).
        import os, sys
        sys.path.insert(0, os.path.dirname(__file__))
        from flops import counter
        train_step(1)
        with counter() as count:
            train_step(2)
        flops = count.total
        print(json.dumps({"model": a.model, "batch": a.batch, "images_per_step": a.batch * n_d,
                          "flops_per_step": flops, "flops_per_image": flops / (a.batch * n_d)}))
        return
    if a.profile:
        for step in range(1, 6):
            train_step(step)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for step in range(6, 6 + a.steps):
                train_step(step)
        # Each op's self time under its op name, or under the named part of the step it ran in.
        ops = {}
        for e in prof.events():
            key, up = e.name, e.cpu_parent
            while up is not None:
                if up.name.startswith("rebalance::"):
                    key = up.name
                up = up.cpu_parent
            ops[key] = ops.get(key, 0.0) + e.self_cpu_time_total
        print(json.dumps({"steps": a.steps, "self_cpu_us": ops}))
        return
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(1, a.steps + 1):
        train_step(step)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - start
    print(json.dumps({"steps": a.steps, "batch": a.batch, "model": a.model, "train_s": secs,
                      "images_per_s": a.steps * a.batch * n_d / secs}))

if __name__ == "__main__":
    main()
