"""Figure 4's mechanisms on CIFAR-10: multi-crop evaluation and ensembles.

    python experiments/multicrop_ensemble.py [--epochs=15] [--seeds=0,1,2] [--workers=2]

Trains ``--seeds`` small networks (default LeNet-5 with BN, one per seed) with the
library's loop, then evaluates each with the library's evaluators
(``cnn_arch.evaluate.evaluate_workdir``): the single eval image, it and its mirror,
10 crops and GoogLeNet's 144 crops (``cnn_arch.evaluators.multicrop``), and the
ensemble of all of them with each of those view sets (softmax averaged over views, then
over networks). Ioffe & Szegedy 2015, Figure 4 (ImageNet validation, BN-Inception):
25.2% top-1 error single crop, 21.99% with 144 crops, 20.1% for an ensemble of 6
networks with 144 crops.

Writes ``multicrop_ensemble.json`` (every number), ``multicrop_ensemble.md`` (the
table beside Figure 4, command, wall time, machine, seeds) and ``multicrop_ensemble.png``
(top-1 error per view set, single networks vs the ensemble).
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

from cnn_arch import schema  # noqa: E402

NAME = "multicrop_ensemble"
VIEWS = ("single", "flip", "10crop", "144crop")
SINGLE_EVALS = {"single": "running", "flip": "flip", "10crop": "10crop", "144crop": "144crop"}
ENSEMBLE_EVALS = {v: "ensemble" if v == "single" else f"ensemble_{v}" for v in VIEWS}
# Figure 4 of the BN paper, BN-Inception on ImageNet validation: (top-1, top-5) error %.
PAPER = {
    ("single", 1): (25.2, 7.82),
    ("144crop", 1): (21.99, 5.82),
    ("144crop", 6): (20.1, 4.9),
}
VIEW_LABELS = {
    "single": "1 view",
    "flip": "2 views (flip)",
    "10crop": "10 crops",
    "144crop": "144 crops",
}


def member_config(args, seed: int):
    c = schema.default_config()
    c.model = args.model
    c.model_kwargs = json.loads(args.model_kwargs)
    c.dataset = "cifar10"
    c.data_dir = args.data_dir
    c.seed = seed
    c.batch_size = args.batch_size
    c.num_epochs = args.epochs
    c.optimizer = "sgd"
    c.momentum = 0.9
    c.nesterov = True
    c.learning_rate = args.learning_rate
    c.schedule = "cosine"
    c.weight_decay = args.weight_decay
    c.log_every_steps = 100
    c.steps_per_eval = 10**9  # only at the end: this experiment evaluates afterwards
    c.checkpoint_every_steps = 10**9
    c.keep_checkpoints = 1
    c.shuffle_buffer = args.shuffle_buffer
    if args.train_examples:
        c.train_split = f"train[:{args.train_examples}]"
    if args.eval_examples:
        c.eval_split = f"test[:{args.eval_examples}]"
        c.eval_batch_size = min(c.eval_batch_size, args.eval_examples)
    return c


def evaluate(workdirs: list[str], data_dir: str, views: list[str]) -> dict:
    """Every view set for each network, and for the ensemble of all of them."""
    from cnn_arch import evaluate as evaluate_lib

    out: dict = {"networks": {}, "ensemble": {}, "eval_seconds": {}}
    for w in workdirs:
        t0 = time.perf_counter()
        names = [SINGLE_EVALS[v] for v in views]
        report = evaluate_lib.evaluate_workdir(w, names, data_dir=data_dir)
        name = os.path.basename(w)
        out["networks"][name] = {v: report["results"][SINGLE_EVALS[v]] for v in views}
        out["eval_seconds"][name] = time.perf_counter() - t0
        out["checkpoint_step"] = report["checkpoint_step"]
    t0 = time.perf_counter()
    names = [ENSEMBLE_EVALS[v] for v in views]
    report = evaluate_lib.evaluate_workdir(
        workdirs[0], names, data_dir=data_dir, workdirs=workdirs[1:]
    )
    out["ensemble"] = {v: report["results"][ENSEMBLE_EVALS[v]] for v in views}
    out["eval_seconds"]["ensemble"] = time.perf_counter() - t0
    return out


def error_table(results: dict) -> dict:
    """Top-1 / top-5 error (%) per view set: each network, their mean/std, the ensemble."""
    table = {}
    for v in results["ensemble"]:
        top1 = [100 * (1 - r[v]["top1"]) for r in results["networks"].values()]
        top5 = [100 * (1 - r[v]["top5"]) for r in results["networks"].values()]
        ens = results["ensemble"][v]
        table[v] = {
            "single_top1_err": top1,
            "single_top1_err_mean": float(np.mean(top1)),
            "single_top1_err_std": float(np.std(top1, ddof=1)) if len(top1) > 1 else 0.0,
            "single_top5_err_mean": float(np.mean(top5)),
            "ensemble_top1_err": 100 * (1 - ens["top1"]),
            "ensemble_top5_err": 100 * (1 - ens["top5"]),
            "views": int(ens["views"]),
        }
    return table


def write_markdown(report: dict, path: str) -> None:
    t = report["table"]
    n = len(report["seeds"])
    base = t["single"]["single_top1_err_mean"]
    lines = [
        "# Multi-crop evaluation and ensembles on CIFAR-10 (the mechanisms of Figure 4, "
        "Ioffe & Szegedy 2015)",
        "",
        f"Command: `{report['command']}`  ",
        f"Wall time: {report['wall_seconds'] / 60:.1f} min on {report['machine']} "
        f"({report['workers']} trainings at a time); seeds {', '.join(map(str, report['seeds']))}.",
        "",
        f"Networks: {n} x `{report['model']}` {report['model_kwargs']} trained "
        f"{report['epochs']:g} epochs on {report['train_split']} (batch {report['batch_size']}, "
        f"SGD + Nesterov 0.9, lr {report['learning_rate']:g} cosine, weight decay "
        f"{report['weight_decay']:g}, pad-4 crops + flips), one per seed. Evaluated on "
        f"{report['eval_split']} ({report['eval_examples']:,} images) with "
        "`python -m cnn_arch.evaluate --evals=running,flip,10crop,144crop` and, for the "
        "ensemble, `--workdirs=... --evals=ensemble,ensemble_flip,ensemble_10crop,"
        "ensemble_144crop`. 10 crops: 32-pixel crops of the image resized to 36.6 (256/224); "
        "144 crops: shorter side 256/224, 288/224, 320/224, 352/224 of 32 (42 of the 144 "
        "views are distinct on square images).",
        "",
        "## Top-1 error (%)",
        "",
        f"| views | single network (mean ± std of {n}) | ensemble of {n} | "
        "Figure 4, BN-Inception on ImageNet |",
        "| --- | --- | --- | --- |",
    ]
    for v in t:
        row = t[v]
        single = f"{row['single_top1_err_mean']:.2f} ± {row['single_top1_err_std']:.2f}"
        paper = []
        if (v, 1) in PAPER:
            paper.append(f"{PAPER[(v, 1)][0]} (1 network)")
        if (v, 6) in PAPER:
            paper.append(f"{PAPER[(v, 6)][0]} (6 networks)")
        lines.append(
            f"| {VIEW_LABELS[v]} | {single} | {row['ensemble_top1_err']:.2f} | "
            f"{' / '.join(paper) or '-'} |"
        )
    e1 = t["single"]["ensemble_top1_err"]
    lines += [
        "",
        "## Relative error reduction from one network on one view",
        "",
        "| | ours | Figure 4 |",
        "| --- | --- | --- |",
        f"| ensemble, 1 view | {100 * (base - e1) / base:.1f}% | - |",
    ]
    if "144crop" in t:
        m144, e144 = t["144crop"]["single_top1_err_mean"], t["144crop"]["ensemble_top1_err"]
        lines += [
            f"| 144 crops | {100 * (base - m144) / base:.1f}% | "
            f"{100 * (25.2 - 21.99) / 25.2:.1f}% (25.2 -> 21.99) |",
            f"| ensemble + 144 crops | {100 * (base - e144) / base:.1f}% | "
            f"{100 * (25.2 - 20.1) / 25.2:.1f}% (25.2 -> 20.1, 6 networks) |",
        ]
    lines += [
        "",
        f"Per network (top-1 error %, views {' / '.join(t)}):",
        "",
    ]
    for name, r in report["results"]["networks"].items():
        errs = " / ".join(f"{100 * (1 - r[v]['top1']):.2f}" for v in t)
        lines.append(f"- `{name}`: {errs}")
    lines += ["", *report["notes"], "", f"![top-1 error per view set]({NAME}.png)", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def plot(report: dict, path: str) -> None:
    t = report["table"]
    views = list(t)
    x = np.arange(len(views))
    fig, ax = plt.subplots(figsize=(7, 4))
    single = [t[v]["single_top1_err_mean"] for v in views]
    std = [t[v]["single_top1_err_std"] for v in views]
    ax.bar(x - 0.2, single, 0.4, yerr=std, label=f"single network (mean of {len(report['seeds'])})")
    ens = [t[v]["ensemble_top1_err"] for v in views]
    ax.bar(x + 0.2, ens, 0.4, label=f"ensemble of {len(report['seeds'])}")
    ax.set_xticks(x, [VIEW_LABELS[v] for v in views])
    ax.set_ylabel("CIFAR-10 test top-1 error (%)")
    lo = min(min(single), min(ens))
    ax.set_ylim(max(0.0, lo - 3), max(single) + 2)
    ax.legend()
    ax.set_title(f"{report['model']} {report['model_kwargs']}, {report['epochs']:g} epochs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def notes(table: dict) -> list[str]:
    base = table["single"]["single_top1_err_mean"]
    out = []
    for v in [v for v in table if v != "single"]:
        d = table[v]["single_top1_err_mean"] - base
        out.append(
            f"- {VIEW_LABELS[v]} vs 1 view, single networks: {d:+.2f} points "
            f"({'better' if d < 0 else 'worse' if d > 0 else 'the same'})."
        )
    d = table["single"]["ensemble_top1_err"] - base
    out.append(f"- Ensemble vs single network, 1 view: {d:+.2f} points.")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default=str(_runs.ROOT / "experiments" / "results"))
    parser.add_argument("--work_root", default="/tmp/cnn_arch_multicrop")
    parser.add_argument("--data_dir", default=_runs.default_data_dir())
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--model_kwargs", default='{"norm": "batch"}', help="JSON")
    parser.add_argument("--epochs", type=float, default=15.0, help="scale: epochs per network")
    parser.add_argument("--seeds", default="0,1,2", help="one network per seed")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=0.05)
    parser.add_argument("--weight_decay", type=float, default=5e-4)
    parser.add_argument("--train_examples", type=int, default=0, help="0: all 50,000")
    parser.add_argument("--eval_examples", type=int, default=0, help="0: all 10,000")
    parser.add_argument("--shuffle_buffer", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2, help="networks trained at a time")
    parser.add_argument("--compilation_cache", default=None, help="default: WORK_ROOT/jax_cache")
    parser.add_argument("--views", default=",".join(VIEWS), help="view sets to evaluate")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    views = [v for v in VIEWS if v in args.views.split(",")]
    if "single" not in views or set(args.views.split(",")) - set(VIEWS):
        parser.error(f"--views: a subset of {','.join(VIEWS)} that includes single")
    if len(seeds) < 2:
        parser.error("--seeds: an ensemble needs at least 2 networks")
    if args.compilation_cache is None:
        args.compilation_cache = os.path.join(args.work_root, "jax_cache")
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.perf_counter()

    tag = f"{args.model}_e{args.epochs:g}_n{args.train_examples or 'all'}"
    jobs = [(os.path.join(args.work_root, f"{tag}_s{s}"), member_config(args, s)) for s in seeds]
    print(f"training {len(jobs)} networks, {args.workers} at a time")
    walls = _runs.train_all(jobs, args.workers, compilation_cache=args.compilation_cache)
    train_seconds = time.perf_counter() - t0
    print("evaluating: 1 view, flip, 10 crops, 144 crops; then the ensemble")
    t1 = time.perf_counter()
    _runs.use_compilation_cache(args.compilation_cache)
    results = evaluate([w for w, _ in jobs], args.data_dir, views)
    config = jobs[0][1]
    report = {
        "command": _runs.command_line(f"{NAME}.py", argv),
        "machine": _runs.MACHINE,
        "workers": args.workers,
        "seeds": seeds,
        "model": args.model,
        "model_kwargs": json.loads(args.model_kwargs),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "train_split": config.train_split,
        "eval_split": config.eval_split,
        "eval_examples": int(results["ensemble"]["single"]["num_examples"]),
        "checkpoint_step": results["checkpoint_step"],
        "paper_figure4": {f"{v}_{n}_networks": e for (v, n), e in PAPER.items()},
        "run_seconds": {os.path.basename(w): t for w, t in walls.items()},
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - t1,
        "results": results,
    }
    report["table"] = error_table(results)
    report["notes"] = notes(report["table"])
    report["wall_seconds"] = time.perf_counter() - t0
    with open(os.path.join(args.out_dir, f"{NAME}.json"), "w") as f:
        json.dump(report, f, indent=1)
    write_markdown(report, os.path.join(args.out_dir, f"{NAME}.md"))
    plot(report, os.path.join(args.out_dir, f"{NAME}.png"))
    print(open(os.path.join(args.out_dir, f"{NAME}.md")).read())
    return report


if __name__ == "__main__":
    _runs.run_main(main)
