"""Sec. 4.2.2 of Ioffe & Szegedy 2015 (Figures 2 and 3) as a scaled study on CIFAR-10.

    python experiments/bn_inception_cifar.py [--scale=default|short] [--ablation]

Trains the networks of ``configs/bn_inception_cifar.py`` (Inception, BN-Baseline,
BN-x5, BN-x30, BN-x5-Sigmoid, Inception with sigmoid) with the library's loop for the
same number of steps of 32, evaluating test accuracy every ``--eval_every`` steps. As
in Figure 3 it reports, for each network, the steps it needs to reach the Inception
network's maximum accuracy, the speed-up over Inception, and its own maximum.
``--ablation`` adds the study the paper does not make: each Sec. 4.2.1 change alone on
top of BN-Baseline, and each removed from BN-x5.

Scale: BN-Inception with the 32x32 stem at ``--width`` x the table's channels. The
learning-rate decay periods of the config (a 100-epoch schedule) are compressed to the
run's length, so "decay every 8 epochs" becomes every 8% of the run and BN-x's
accelerated decay every 8/6%. ``--scale=short`` is a smoke-test scale whose numbers only
show the pipeline works; the md says which scale produced it.

Writes ``bn_inception_cifar.json``, ``.md`` (the tables beside Figure 3's numbers) and
``.png`` (accuracy vs steps, like Figure 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _runs  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from configs import bn_inception_cifar as cfg  # noqa: E402

NAME = "bn_inception_cifar"
NETWORKS = tuple(cfg.NETWORKS)
LABELS = {
    "inception": "Inception",
    "bn_baseline": "BN-Baseline",
    "bn_x5": "BN-x5",
    "bn_x30": "BN-x30",
    "bn_x5_sigmoid": "BN-x5-Sigmoid",
    "inception_sigmoid": "Inception, sigmoid",
}
# Figure 3: steps (of 32) to reach Inception's 72.2% top-1, and maximum accuracy (%).
PAPER = {
    "inception": (31.0e6, 72.2),
    "bn_baseline": (13.3e6, 72.7),
    "bn_x5": (2.1e6, 73.0),
    "bn_x30": (2.7e6, 74.8),
    "bn_x5_sigmoid": (None, 69.8),
    "inception_sigmoid": (None, 0.1),  # Sec. 4.2.2: "never achieved better than 1/1000"
}
CHANCE = 0.1  # CIFAR-10
ABLATION_CHANGES = (
    "lr_x5",
    "no_dropout",
    "l2_div5",
    "decay_x6",
    "no_lrn",
    "thorough_shuffle",
    "less_distortion",
)
SCALES = {  # width, steps, eval every, eval examples
    "short": dict(width=0.125, num_steps=300, eval_every=100, eval_examples=1000),
    "default": dict(width=0.125, num_steps=6000, eval_every=250, eval_examples=10_000),
}


def network_config(variant: str, args, seed: int):
    c = cfg.get_config(variant, width=args.width)
    c.data_dir = args.data_dir
    c.seed = seed
    c.num_train_steps = args.num_steps
    # The config's schedule is for 100 epochs: compress its decay periods to this run.
    run_epochs = args.num_steps * c.batch_size / 50_000
    c.lr_decay_every_epochs *= run_epochs / c.num_epochs
    c.steps_per_eval = args.eval_every
    c.log_every_steps = args.eval_every
    c.checkpoint_every_steps = args.num_steps
    c.keep_checkpoints = 1
    if args.eval_examples < 10_000:
        c.eval_split = f"test[:{args.eval_examples}]"
    c.eval_batch_size = min(500, args.eval_examples)
    return c


def curve(workdir: str) -> dict:
    rows = _runs.read_metrics(workdir)
    steps, top1 = _runs.series(rows.get("eval", {}), "top1") if "eval" in rows else ([], [])
    return {"steps": steps, "top1": top1}


def reach(c: dict, target: float) -> int | None:
    """The first evaluated step whose accuracy is at least ``target`` (None: never)."""
    return next((s for s, a in zip(c["steps"], c["top1"], strict=True) if a >= target), None)


def analyse(curves: dict[str, dict]) -> dict:
    """Figure 3's columns: steps to Inception's maximum, speed-up, maximum accuracy."""
    base = curves["inception"]
    target = max(base["top1"]) if base["top1"] else float("nan")
    base_steps = reach(base, target)
    table = {}
    for name, c in curves.items():
        steps = reach(c, target)
        table[name] = {
            "steps_to_inception_max": steps,
            "speedup": (base_steps / steps) if steps and base_steps else None,
            "max_top1": max(c["top1"]) if c["top1"] else None,
            "step_of_max": c["steps"][int(np.argmax(c["top1"]))] if c["top1"] else None,
            "final_top1": c["top1"][-1] if c["top1"] else None,
        }
    return {"inception_max": target, "inception_max_step": base_steps, "networks": table}


def fmt_steps(s) -> str:
    return "never" if s is None else f"{s:,}"


def write_markdown(report: dict, path: str) -> None:
    a = report["analysis"]
    lines = [
        "# BN-Inception variants (Sec. 4.2.2, Figures 2 and 3 of Ioffe & Szegedy 2015), "
        "scaled to CIFAR-10",
        "",
    ]
    if report["scale"] == "short":
        lines += [
            f"**Short run (scale `short`: {report['num_steps']} steps): a smoke test of the "
            "pipeline. Its accuracies are far from converged and say nothing about the paper's "
            "claims.**",
            "",
        ]
    lines += [
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; seeds {report['seeds']}; {report['workers']} runs at "
        f"a time.  ",
        f"Time: the {report['runs']} training runs took {report['train_wall_minutes']:.1f} min "
        f"of wall time in all ({report['workers']} at a time on the shared machine) and "
        f"{report['train_cpu_minutes']:.1f} min of CPU time"
        + (f"; {report['reused']} were trained earlier and reused" if report["reused"] else "")
        + f"; this invocation {report['wall_seconds'] / 60:.1f} min wall.",
        "",
        f"Setup: BN-Inception, 32x32 stem (`stem='cifar'`: 3x3/1 conv1, modules at 16/8/4), "
        f"width x{report['width']:g} ({report['params']:,} parameters), CIFAR-10 train "
        f"(50,000), {report['num_steps']:,} steps of 32 for every network "
        f"({report['num_steps'] * 32 / 50_000:.2f} epochs), SGD momentum 0.9, the paper's "
        "learning rates (0.0015 x1 / x5 / x30); the 100-epoch decay schedule compressed to "
        f"the run. Test accuracy on {report['eval_examples']:,} test images every "
        f"{report['eval_every']} steps. Switches: `configs/bn_inception_cifar.py`.",
        "",
        f"## Steps to reach Inception's maximum ({100 * a['inception_max']:.2f}% here, "
        "72.2% in the paper) and maximum accuracy",
        "",
        "| network | steps (ours) | speed-up (ours) | max top-1 (ours) | steps (paper) | "
        "speed-up (paper) | max top-1 (paper) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in a["networks"].items():
        p_steps, p_max = PAPER[name]
        p_speed = f"{PAPER['inception'][0] / p_steps:.1f}x" if p_steps else "-"
        speed = f"{row['speedup']:.1f}x" if row["speedup"] else "-"
        ours_max = "-" if row["max_top1"] is None else f"{100 * row['max_top1']:.2f}%"
        diverged = " (diverged)" if report["diverged"].get(name) else ""
        lines.append(
            f"| {LABELS[name]}{diverged} | {fmt_steps(row['steps_to_inception_max'])} | {speed} "
            f"| {ours_max} | {fmt_steps(p_steps and int(p_steps))} | {p_speed} | {p_max}% |"
        )
    ablation = report.get("ablation")
    if ablation:
        lines += [
            "",
            "## Which change carries the speed-up (beyond the paper)",
            "",
            "Each Sec. 4.2.1 change added alone to BN-Baseline, and removed alone from BN-x5: "
            "steps to reach Inception's maximum / maximum top-1.",
            "",
            "| change | BN-Baseline + change | BN-x5 - change |",
            "| --- | --- | --- |",
            f"| (none) | {cell(a['networks']['bn_baseline'])} | {cell(a['networks']['bn_x5'])} |",
        ]
        for change in ABLATION_CHANGES:
            lines.append(
                f"| {change} | {cell(ablation['plus'][change])} | "
                f"{cell(ablation['minus'][change])} |"
            )
    lines += ["", *report["notes"], "", f"![accuracy vs steps]({NAME}.png)", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def cell(row: dict) -> str:
    top = "-" if row["max_top1"] is None else f"{100 * row['max_top1']:.2f}%"
    return f"{fmt_steps(row['steps_to_inception_max'])} / {top}"


def notes(a: dict, diverged: dict) -> list[str]:
    out = []
    n = a["networks"]
    if a["inception_max"] < CHANCE + 0.05:
        out.append(
            f"- Inception (no BN) stayed at chance ({100 * a['inception_max']:.1f}%; 10 classes) "
            "for the whole run, so every network 'reaches' its maximum at the first evaluation "
            "and the steps and speed-up columns say nothing; only the maximum accuracies do."
        )
    speeds = {k: v["speedup"] for k, v in n.items() if v["speedup"]}
    fastest = max(speeds, key=speeds.get) if speeds else None
    if fastest:
        out.append(
            f"- Fastest to Inception's maximum here: {LABELS[fastest]} "
            f"({speeds[fastest]:.1f}x); in the paper BN-x5 (14.8x), then BN-x30 (11.5x)."
        )
    best = max(
        (k for k in n if n[k]["max_top1"] is not None), key=lambda k: n[k]["max_top1"], default=None
    )
    if best:
        out.append(
            f"- Highest maximum accuracy here: {LABELS[best]} ({100 * n[best]['max_top1']:.2f}%); "
            "in the paper BN-x30 (74.8%)."
        )
    sig = n.get("inception_sigmoid")
    if sig and sig["max_top1"] is not None:
        out.append(
            f"- Inception with sigmoid: maximum {100 * sig['max_top1']:.2f}% (chance is 10%); "
            "the paper's never rose above chance (0.1% on 1000 classes)."
        )
    for name, message in diverged.items():
        if message:
            out.append(f"- {LABELS.get(name, name)} diverged: {message.split(';')[0]}.")
    return out


def plot(curves: dict, analysis: dict, path: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, c in curves.items():
        if c["steps"]:
            ax.plot(c["steps"], c["top1"], label=LABELS[name])
    ax.axhline(analysis["inception_max"], color="gray", ls=":", lw=1, label="Inception's max")
    ax.set_xlabel("training steps (mini-batches of 32)")
    ax.set_ylabel("CIFAR-10 test accuracy")
    ax.set_title("Figure 2, scaled: BN-Inception variants on CIFAR-10")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def count_params(width: float) -> int:
    import jax
    import jax.numpy as jnp

    from cnn_arch import models

    model = models.create("bn_inception", num_classes=10, stem="cifar", width=width)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
    )
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes["params"])))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default=str(_runs.ROOT / "experiments" / "results"))
    parser.add_argument("--work_root", default="/tmp/cnn_arch_bn_inception_cifar")
    parser.add_argument("--data_dir", default=_runs.default_data_dir())
    parser.add_argument("--scale", choices=sorted(SCALES), default="default")
    parser.add_argument("--width", type=float, default=None, help="default: the scale's")
    parser.add_argument("--num_steps", type=int, default=None, help="default: the scale's")
    parser.add_argument("--eval_every", type=int, default=None, help="default: the scale's")
    parser.add_argument("--eval_examples", type=int, default=None, help="default: the scale's")
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--ablation", action="store_true", help="also the 14 ablation runs")
    parser.add_argument("--seeds", default="0", help="one seed (the table is per network)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--compilation_cache", default=None, help="default: WORK_ROOT/jax_cache")
    args = parser.parse_args(argv)
    for key, value in SCALES[args.scale].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    networks = [n for n in args.networks.split(",") if n]
    if "inception" not in networks or set(networks) - set(NETWORKS):
        parser.error(f"--networks: a subset of {','.join(NETWORKS)} that includes inception")
    seed = int(args.seeds.split(",")[0])
    if args.compilation_cache is None:
        args.compilation_cache = os.path.join(args.work_root, "jax_cache")
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.perf_counter()

    variants = list(networks)
    if args.ablation:
        variants += [f"bn_baseline+{c}" for c in ABLATION_CHANGES]
        variants += [f"bn_x5-{c}" for c in ABLATION_CHANGES]
    tag = f"w{args.width:g}_n{args.num_steps}_e{args.eval_examples}_s{seed}"
    jobs = [
        (os.path.join(args.work_root, f"{v}_{tag}"), network_config(v, args, seed))
        for v in variants
    ]
    print(f"training {len(jobs)} networks for {args.num_steps} steps, {args.workers} at a time")
    times = _runs.train_all(jobs, args.workers, compilation_cache=args.compilation_cache)
    by_variant = {v: w for v, (w, _) in zip(variants, jobs, strict=True)}
    curves = {v: curve(by_variant[v]) for v in variants}
    analysis = analyse({n: curves[n] for n in networks})
    diverged = {v: times[by_variant[v]].get("diverged") for v in variants}
    report = {
        "command": _runs.command_line(f"{NAME}.py", argv),
        "machine": _runs.MACHINE,
        "scale": args.scale,
        "seeds": seed,
        "workers": args.workers,
        "width": args.width,
        "params": count_params(args.width),
        "num_steps": args.num_steps,
        "eval_every": args.eval_every,
        "eval_examples": args.eval_examples,
        "runs": len(jobs),
        "run_seconds": {os.path.basename(w): t for w, t in times.items()},
        "train_cpu_minutes": sum(t["cpu_s"] or 0 for t in times.values()) / 60,
        "train_wall_minutes": sum(t["wall_s"] for t in times.values()) / 60,
        "reused": sum(bool(t.get("reused")) for t in times.values()),
        "diverged": diverged,
        "curves": curves,
        "analysis": analysis,
        "paper_figure3": {k: {"steps": s, "max_top1": m} for k, (s, m) in PAPER.items()},
    }
    if args.ablation:
        target = analysis["inception_max"]
        report["ablation"] = {
            side: {
                c: analyse_one(curves[f"{base}{sign}{c}"], target, analysis)
                for c in ABLATION_CHANGES
            }
            for side, base, sign in (("plus", "bn_baseline", "+"), ("minus", "bn_x5", "-"))
        }
    report["notes"] = notes(analysis, diverged)
    report["wall_seconds"] = time.perf_counter() - t0
    with open(os.path.join(args.out_dir, f"{NAME}.json"), "w") as f:
        json.dump(report, f, indent=1)
    write_markdown(report, os.path.join(args.out_dir, f"{NAME}.md"))
    plot({n: curves[n] for n in networks}, analysis, os.path.join(args.out_dir, f"{NAME}.png"))
    print(open(os.path.join(args.out_dir, f"{NAME}.md")).read())
    return report


def analyse_one(c: dict, target: float, analysis: dict) -> dict:
    steps = reach(c, target)
    base_steps = analysis["inception_max_step"]
    return {
        "steps_to_inception_max": steps,
        "speedup": (base_steps / steps) if steps and base_steps else None,
        "max_top1": max(c["top1"]) if c["top1"] else None,
    }


if __name__ == "__main__":
    _runs.run_main(main)
