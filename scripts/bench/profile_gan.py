#!/usr/bin/env python3
"""Where one GAN training step's time goes, Rust and the PyTorch twin side by side.

`.venv/bin/python scripts/bench/profile_gan.py [--model cgan|wgan-gp] [--size 28|48] [--steps N]`
- Rust: `perf record` over a whole `gan-train` run of --steps steps (the same arguments as
  `just bench-gan`, so start-up and data loading are in it too), then the share of samples per
  library and symbol (oneDNN's JIT kernels, which have no symbols, as `[JIT]`; libtorch, MKL,
  OpenMP, the kernel, gan-train's own code);
- PyTorch: torch.profiler over --steps steps of scripts/bench/gan_step.py (after 5 warm-up
  steps), self CPU time per ATen op.
Both are grouped into the same coarse parts of a step (the patterns below); the share of each
side's own total is printed. The two tools measure differently (sampled symbols against timed
ops), so compare shares within a side, and only roughly across sides.
"""
import collections, json, os, re, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(__file__))
import gan  # noqa: E402

# (part, pattern over a perf symbol or an ATen op name), first match wins.
PARTS = [
    ("DiffAugment translation (grid sampler)", r"rebalance::translation"),
    ("Adam and EMA (lerp, addcdiv, sqrt)", r"rebalance::(adam|ema)"),
    ("sampling, indexing, loss read-back", r"rebalance::(sample|readback)"),
    ("batch norm", r"batch_norm|batchnorm|BatchNorm|bnorm|_bn_"),
    ("DiffAugment translation (grid sampler)", r"grid_sampler|grid_sample|affine_grid"),
    ("convolutions and matmuls (oneDNN, MKL)",
     r"\[JIT\]|conv|dnnl|mkldnn|jit_|brgemm|gemm|mkl_|im2col|col2im|addmm|\bmm\b|aten::mm|aten::linear|matmul"),
    ("Adam and EMA (lerp, addcdiv, sqrt)", r"lerp|addcdiv|sqrt|_foreach|adam"),
    ("activations, losses, other elementwise",
     r"leaky|tanh|relu|sigmoid|binary_cross|embedding|Vectorized|vectorized|binary_kernel|unary|"
     r"aten::(add|sub|mul|div|neg|mean|sum|pow|norm|square|abs|cat|full|ones|zeros|clamp|exp|log)"),
    ("sampling, indexing, loss read-back", r"index|randn|normal|uniform|item|local_scalar|gather|scatter"),
    ("memory (copy, fill, allocation)", r"memcpy|memset|memmove|copy_|copy|fill|alloc|free|empty|page_fault|clear_page"),
    ("threads and OS (OpenMP, kernel)", r"omp|gomp|kmp_|futex|sched|\[k\]|syscall|spin"),
]


def part_of(name):
    for part, pat in PARTS:
        if re.search(pat, name):
            return part
    return "other"


def rust_profile(a, data, steps):
    """Share of perf samples per part over a whole gan-train run."""
    a.steps = steps
    with tempfile.TemporaryDirectory() as tmp:
        rec = os.path.join(tmp, "perf.data")
        subprocess.run(["perf", "record", "-q", "-F", "999", "-o", rec, "--"] + gan.rust_argv(a, data, os.path.join(tmp, "gan")),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rep = subprocess.run(["perf", "report", "-i", rec, "--stdio", "--no-children", "--sort", "dso,sym",
                              "--percent-limit", "0", "-q"], check=True, capture_output=True, text=True).stdout
    parts = collections.Counter()
    top = []
    for line in rep.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.*?)\s+(\[.\])\s+(.*)", line)
        if m:
            pct, dso, kind, sym = float(m.group(1)), m.group(2).strip(), m.group(3), m.group(4).strip()
            # oneDNN's JIT kernels have no symbols: perf puts them in a [JIT] pseudo-library.
            parts[part_of(f"{dso} {kind} {sym}")] += pct
            top.append((pct, f"{dso}: {sym}"))
    # perf rounds each line; the shares are of the lines' own total.
    total = sum(parts.values()) or 1
    return collections.Counter({k: 100 * v / total for k, v in parts.items()}), top[:12]


def torch_profile(a, data, steps):
    """Share of self CPU time per part over --steps steps of the twin."""
    out = subprocess.run([sys.executable, os.path.join(gan.ROOT, "scripts", "bench", "gan_step.py"), "--data", data,
                          "--steps", str(steps), "--threads", str(a.threads), "--device", a.device, "--model", a.model,
                          "--batch", str(a.batch), "--profile"], check=True, capture_output=True, text=True).stdout
    ops = json.loads(out)["self_cpu_us"]
    total = sum(ops.values()) or 1
    parts = collections.Counter()
    for op, us in ops.items():
        parts[part_of(op)] += 100 * us / total
    top = sorted(((100 * us / total, op) for op, us in ops.items()), reverse=True)[:12]
    return parts, top


def main():
    ap = gan.arguments()
    ap.set_defaults(steps=100)
    a = ap.parse_args()
    data, channels = gan.dataset(a)
    rust, rust_top = rust_profile(a, data, a.steps)
    py, py_top = torch_profile(a, data, a.steps)
    print(f"{a.model} training step, MNIST {channels}x{a.size}x{a.size}, batch {a.batch}, {a.steps} steps, "
          f"{a.threads} threads: share of each side's time")
    print(f"  {'part':44} {'rust (perf)':>12} {'pytorch (profiler)':>19}")
    for part in list(dict.fromkeys(p for p, _ in PARTS)) + ["other"]:
        print(f"  {part:44} {rust[part]:11.1f}% {py[part]:18.1f}%")
    print("  rust, top symbols:")
    for pct, sym in rust_top:
        print(f"    {pct:5.1f}%  {sym[:110]}")
    print("  pytorch, top ops:")
    for pct, op in py_top:
        print(f"    {pct:5.1f}%  {op}")


if __name__ == "__main__":
    main()
