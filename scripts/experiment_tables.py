#!/usr/bin/env python3
"""Tables of `scripts/experiment synthetic` (issue 25), read from the stage outputs.

  experiment_tables.py headroom ROOT               the bar, the ceiling and the headroom per setting
  experiment_tables.py screen ROOT SETTING         every screened chain (seed 42) against the bar
  experiment_tables.py confirm ROOT S:G:U ...      5-seed chains against the bar, paired t-tests

ROOT is artifacts/experiment/synthetic. Test numbers are reported; choices use val only.
"""
import csv, glob, json, math, os, subprocess, sys

SETTINGS = ["default", "second", "third", "fourth"]


def load(p):
    with open(p) as f:
        return json.load(f)


def bar(root, setting):
    sel = load(f"{root}/{setting}/bar/recipes.json")
    c = next(x for x in sel["candidates"] if x["name"] == sel["chosen"])
    return sel["chosen"], c


def ms(m, key="macro_f1"):
    return m["mean"][key], m["std"].get(key, 0.0)


def seed_runs(path):
    """{seed: (val macro-F1, test macro-F1)} of a classify output folder."""
    m = load(f"{path}/metrics.json")
    return {r["seed"]: (r["val"]["macro_f1"], r["test"]["macro_f1"]) for r in m["runs"]}


def headroom(root):
    chosen, ceil = bar(root, "ceiling")
    cm, cs = ms(ceil["test"])
    print(f"ceiling (all-real split, every class at 300; best cheap recipe on val: {chosen}): "
          f"test macro-F1 {cm:.4f} ± {cs:.4f} (5 seeds)\n")
    print("| setting | rare classes × real train images | bar (chosen on val) | bar test macro-F1 | ceiling | headroom |")
    print("|---|---|---|---|---|---|")
    for s in SETTINGS:
        if not os.path.exists(f"{root}/{s}/bar/recipes.json"):
            continue
        name, b = bar(root, s)
        bm, bs = ms(b["test"])
        info = load(f"{root}/{s}/dataset/manifest.json")
        rare = info["rare_classes"]
        n = info["counts"]["train"][rare[0]] if rare else 0
        print(f"| {s} | {', '.join(rare)} × {n} | {name} | {bm:.4f} ± {bs:.4f} | {cm:.4f} | {cm - bm:+.4f} |")


def acceptance(folder):
    rows = list(csv.DictReader(open(f"{folder}/acceptance.csv")))
    out = []
    for r in rows:
        real = float(r["diversity_real"] or "nan")
        gen = float(r["diversity_generated"] or "nan")
        out.append(f"{r['class']}: acc {float(r['acceptance']):.2f}, div {gen / real:.2f}×, "
                   f"FD kept {r['fd_kept'] or '—'} (floor {r['fd_real_train'] or '—'})")
    return "; ".join(out)


def screen(root, setting):
    name, b = bar(root, setting)
    base = seed_runs(f"{root}/{setting}/bar/recipes/{name}")[42]
    print(f"setting {setting}, seed 42; the bar ({name}): val {base[0]:.4f}, test {base[1]:.4f}\n")
    print("| generator | use | val macro-F1 | Δ val | test macro-F1 | Δ test | GAN s | per rare class |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for cdir in sorted(glob.glob(f"{root}/{setting}/*/seed-42/classify-*")):
        gen = cdir.split("/")[-3]
        use = cdir.split("classify-")[-1]
        if not os.path.exists(f"{cdir}/metrics.json"):
            continue
        v, t = seed_runs(cdir)[42]
        g = load(f"{root}/{setting}/{gen}/seed-42/gan/manifest.json")
        ft = "filtered-" + use.split("-")[0] if use.startswith(("informative", "diverse")) else "filtered"
        acc = acceptance(f"{root}/{setting}/{gen}/seed-42/{ft}")
        rows.append((v, f"| {gen} | {use} | {v:.4f} | {v - base[0]:+.4f} | {t:.4f} | {t - base[1]:+.4f} | "
                        f"{g['wall_time_s']:.0f} | {acc} |"))
    for _, r in sorted(rows, key=lambda x: -x[0]):
        print(r)


def confirm(root, specs):
    print("| setting | recipe | bar test | synthetic test | Δ (paired) | p | headroom | recovered |")
    print("|---|---|---|---|---|---|---|---|")
    _, ceil = bar(root, "ceiling")
    cm = ms(ceil["test"])[0]
    for spec in specs:
        setting, gen, use = spec.split(":")
        name, b = bar(root, setting)
        bar_dir = f"{root}/{setting}/bar/recipes/{name}"
        chains = sorted(glob.glob(f"{root}/{setting}/{gen}/seed-*/classify-{use}"))
        out = f"{root}/{setting}/compare-{gen}-{use}"
        args = [f"bar={bar_dir}"] + [f"syn={c}" for c in chains]
        subprocess.run(["target/release/classify", "compare", *args, "--baseline", "bar", "--out", out],
                       check=True, stdout=subprocess.DEVNULL)
        j = load(f"{out}/comparison.json")
        d = next(x for x in j["differences"] if x["run"] == "syn" and x["metric"] == "macro_f1")
        syn = [seed_runs(c) for c in chains]
        tests = [t for s in syn for (_, t) in s.values()]
        bm = ms(b["test"])[0]
        mean = sum(tests) / len(tests)
        sd = math.sqrt(sum((x - mean) ** 2 for x in tests) / max(len(tests) - 1, 1))
        head = cm - bm
        rec = d["mean"] / head if head > 0 else float("nan")
        print(f"| {setting} | {gen} / {use} | {bm:.4f} | {mean:.4f} ± {sd:.4f} | {d['mean']:+.4f} | "
              f"{d['p']:.3f} | {head:+.4f} | {rec:.2f} |")
    print()
    for spec in specs:
        setting, gen, use = spec.split(":")
        for f in sorted(glob.glob(f"{root}/{setting}/{gen}/seed-*/filtered*/acceptance.csv")):
            print(f"{setting} {gen} {f.split('/')[-3]}: {acceptance(os.path.dirname(f))}")


if __name__ == "__main__":
    what, root = sys.argv[1], sys.argv[2]
    {"headroom": lambda: headroom(root), "screen": lambda: screen(root, sys.argv[3]),
     "confirm": lambda: confirm(root, sys.argv[3:])}[what]()
