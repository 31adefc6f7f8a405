"""FLOP counting and the machine's peak, for the benchmarks' GFLOP/s and share of peak."""
import json, os, subprocess, sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def counter():
    """A dispatch mode that adds up PyTorch's FLOP formulas (matmuls and convolutions, forward
    and backward) of every op run under it, in `.total`. FlopCounterMode itself is not used:
    its module hooks refuse a double backward (wgan-gp's gradient penalty)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Count.total += formula(*args, **kwargs, out_val=out)
            return out

    return Count()


PEAK_SCRIPT = r"""
import json, sys, time, torch
threads, device = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(threads)
n = 8192 if device.startswith("cuda") else 2048
a, b = (torch.randn(n, n, device=device) for _ in range(2))
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
best = 0.0
for _ in range(3):
    a @ b
for _ in range(10):
    sync(); t = time.perf_counter(); a @ b; sync()
    best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
print(json.dumps({"n": n, "threads": threads, "device": device, "flops_per_s": best}))
"""


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def peak(threads, device):
    """The machine's fp32 peak as a plain large matmul reaches it: measured once per machine,
    thread count and device, then read back."""
    machine = cpu_model() if device == "cpu" else device
    path = os.path.join(ROOT, "bench-data", f"peak-{device.replace(':', '')}-{threads}.json")
    if os.path.exists(path):
        with open(path) as f:
            p = json.load(f)
        if p.get("machine") == machine:
            return p
    p = json.loads(subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(threads), device],
                                  check=True, capture_output=True, text=True).stdout)
    p["machine"] = machine
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(p, f)
    return p


def report(a, sides, flops_per_image):
    """Each side's GFLOP/s and share of peak: sides is [(name, images/s)]."""
    pk = peak(a.threads, a.device)
    print(f"  peak: {pk['flops_per_s'] / 1e9:.1f} GFLOP/s, measured by a {pk['n']}x{pk['n']} fp32 matmul on {pk['machine']}, "
          f"{a.threads} threads")
    for name, v in sides:
        gf = v * flops_per_image / 1e9
        print(f"  {name:6}: {gf:6.1f} GFLOP/s, {100 * gf * 1e9 / pk['flops_per_s']:.0f}% of peak")
