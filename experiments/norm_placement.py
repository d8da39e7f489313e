"""Where BN goes: the BN slides' three Keras placements, on the BN paper's MNIST MLP and a
small VGG on CIFAR-10 (issue 15, study 3).

    python experiments/norm_placement.py                  # default scale (CPU, ~25 CPU-min)
    python experiments/norm_placement.py --scale=smoke    # seconds, for the tests
    python experiments/norm_placement.py --scale=full     # the full-scale configs (accelerator)

Placements (the models' ``norm_position``, ``cnn_arch/models/layers.py``), each with the
Keras layer order it stands for:
- ``before``: Dense/Conv -> BN -> nonlinearity (the BN paper, Sec. 3.2; the layer's bias
  is dropped, BN's beta replaces it);
- ``after``: Dense/Conv -> nonlinearity -> BN (biases kept);
- ``network_input``: one BN on the raw input, none inside ("normalize the input only");
- ``none``: no BN anywhere (the reference);
- ``layer_input``: a BN on every layer's input, i.e. before every Dense/Conv (optional
  reference; for layer 1 that is the raw input, later the previous nonlinearity's output).

Networks: (a) ``configs/bn_mnist.py`` -- 784-100-100-100-10, sigmoid, N(0, 0.1^2)
weights, plain SGD on batches of 60 at learning rate 1 (the rate ``bn_mnist.py``'s sweep
chose for both its networks), on all 60,000 training digits, test accuracy on all 10,000
test digits; (b) VGG-11 (configuration A) on CIFAR-10, every conv width x
``width_multiplier``, a 1x1 map flattened into FCs of ``fc_width`` (no dropout), SGD with
momentum 0.9, weight decay 5e-4, cosine decay, pad-crop-flip, trained on a subset of the
training set. Every placement of a network runs the same recipe and seeds, so the only
difference is where the norm layers sit. The library's loop trains every run
(``_runs.train_all``); a kept ``--workdir`` reuses finished runs.

Writes ``norm_placement.json`` (every number and curve), ``.md`` (table beside the
sources' claims, command, machine, time, seeds, scale) and ``.png`` (curves).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere
sys.path.insert(0, str(ROOT / "experiments"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _runs  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402

from cnn_arch.errors import UserError  # noqa: E402
from configs import base, bn_mnist  # noqa: E402

NAME = "norm_placement"
MACHINE = "2-core Xeon CPU (AVX-512/AMX), shared with other jobs"
NETWORKS = ("mlp", "vgg")
PLACEMENTS = ("before", "after", "network_input", "none", "layer_input")
KERAS_ORDER = {
    "before": "Dense/Conv -> BatchNormalization -> Activation (the paper)",
    "after": "Dense/Conv(activation) -> BatchNormalization",
    "network_input": "BatchNormalization on the input only, then the plain network",
    "none": "no BatchNormalization (reference)",
    "layer_input": "BatchNormalization before every Dense/Conv (reference)",
}
COLOURS = {
    "before": "tab:blue",
    "after": "tab:orange",
    "network_input": "tab:green",
    "none": "k",
    "layer_input": "tab:purple",
}
MLP_LEARNING_RATE = 1.0  # experiments/results/bn_mnist.md: the sweep's choice for both nets
SCALES: dict[str, dict[str, dict]] = {
    # mlp: steps of 60 on all 60,000 training digits, test digits evaluated, eval period,
    # target test accuracy for "steps to target". vgg: conv widths x width, FC width,
    # training subset, test subset, batch, steps, eval period, target.
    "default": {
        "mlp": {"steps": 5_000, "test": 10_000, "eval_every": 500, "target": 0.96},
        "vgg": {
            "width": 0.125,
            "fc_width": 0,
            "train": 10_000,
            "test": 2_000,
            "batch": 128,
            "steps": 800,  # ~10 epochs of the 10,000-image subset
            "eval_every": 100,
            "learning_rate": 0.05,
            "target": 0.5,
        },
    },
    "smoke": {
        "mlp": {"steps": 40, "test": 500, "eval_every": 20, "target": 0.5},
        "vgg": {
            "width": 0.125,
            "fc_width": 0,
            "train": 256,
            "test": 128,
            "batch": 32,
            "steps": 4,
            "eval_every": 2,
            "learning_rate": 0.05,
            "target": 0.2,
        },
    },
    "full": {  # the BN paper's 50,000 steps; VGG-11-BN at full width on all of CIFAR-10
        "mlp": {"steps": 50_000, "test": 10_000, "eval_every": 500, "target": 0.97},
        "vgg": {
            "width": 1.0,
            "fc_width": 512,
            "train": 50_000,
            "test": 10_000,
            "batch": 128,
            "steps": 39_000,  # 100 epochs of 390 steps
            "eval_every": 1_950,
            "learning_rate": 0.05,
            "target": 0.85,
        },
    },
}


def _split(name: str, n: int, total: int) -> str:
    return name if n >= total else f"{name}[:{n}]"


def mlp_config(placement: str, scale: dict, seed: int, data_dir: str) -> ml_collections.ConfigDict:
    """The Sec. 4.1 MLP of ``configs/bn_mnist.py`` with BN at ``placement``."""
    c = bn_mnist.get_config("bn")
    c.model_kwargs.norm = "batch"
    c.model_kwargs.norm_position = placement
    c.learning_rate = MLP_LEARNING_RATE
    c.data_dir = data_dir
    c.seed = seed
    c.num_train_steps = scale["steps"]
    c.eval_split = _split("test", scale["test"], 10_000)
    c.eval_batch_size = min(1000, scale["test"])
    c.log_every_steps = c.steps_per_eval = scale["eval_every"]
    c.checkpoint_every_steps = scale["steps"]
    c.keep_checkpoints = 1
    c.evals = {"eval": {"kind": "running"}}
    return c


def vgg_config(placement: str, scale: dict, seed: int, data_dir: str) -> ml_collections.ConfigDict:
    """A narrow VGG-11 on (a subset of) CIFAR-10 with BN at ``placement``."""
    c = base.get_config()
    c.model = "vgg11_bn"
    c.model_kwargs = ml_collections.ConfigDict(
        {
            "norm_position": placement,
            "width_multiplier": scale["width"],
            "fc_width": scale["fc_width"],
            "pool_size": 1,  # 32x32 after five pools is 1x1: flatten it (the CIFAR VGG)
            "dropout_rate": 0.0,
            "conv_bias": False,  # a bias only where no norm directly follows (Sec. 3.2)
        }
    )
    c.dataset = "cifar10"
    c.augment = "default"  # pad 4 + random crop + flip
    c.data_dir = data_dir
    c.train_split = _split("train", scale["train"], 50_000)
    c.eval_split = _split("test", scale["test"], 10_000)
    c.shuffle_buffer = scale["train"]
    c.batch_size = scale["batch"]
    c.eval_batch_size = min(1000, scale["test"])
    c.seed = seed
    c.optimizer = "sgd"
    c.momentum = 0.9
    c.learning_rate = scale["learning_rate"]
    c.schedule = "cosine"
    c.weight_decay = 5e-4
    c.num_train_steps = scale["steps"]
    c.log_every_steps = c.steps_per_eval = scale["eval_every"]
    c.checkpoint_every_steps = scale["steps"]
    c.keep_checkpoints = 1
    c.evals = {"eval": {"kind": "running"}}
    return c


CONFIGS = {"mlp": mlp_config, "vgg": vgg_config}


def run_result(workdir: str, target: float) -> dict:
    """Final test accuracy, last training-loss window, steps to ``target`` and the curves."""
    rows = _runs.read_metrics(workdir)
    eval_steps, top1 = _runs.series(rows["eval"], "top1")
    train_steps, loss = _runs.series(rows["train"], "loss")
    reached = [s for s, a in zip(eval_steps, top1, strict=True) if a >= target]
    return {
        "test_top1": top1[-1],
        "train_loss": loss[-1],
        "steps_to_target": reached[0] if reached else None,
        "curves": {
            "eval_steps": eval_steps,
            "top1": top1,
            "train_steps": train_steps,
            "loss": loss,
        },
    }


def stats(values: list[float]) -> dict:
    v = np.asarray(values, np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "values": [float(x) for x in v],
    }


def summarize(results: dict, seeds: list[int]) -> dict:
    """Per network and placement: mean/std over seeds of the final numbers, and how many
    seeds reached the target (with the mean steps of those that did)."""
    out: dict = {}
    for network, by_placement in results.items():
        out[network] = {}
        for placement, by_seed in by_placement.items():
            runs = [by_seed[str(s)] for s in seeds]
            hit = [r["steps_to_target"] for r in runs if r["steps_to_target"] is not None]
            out[network][placement] = {
                "test_top1": stats([r["test_top1"] for r in runs]),
                "train_loss": stats([r["train_loss"] for r in runs]),
                "seeds_reaching_target": len(hit),
                "steps_to_target_mean": float(np.mean(hit)) if hit else None,
            }
    return out


def plot(results: dict, scale: dict, placements: tuple[str, ...], path: str) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    titles = {"mlp": "(a) MNIST MLP 3x100 sigmoid", "vgg": "(b) narrow VGG-11, CIFAR-10 subset"}
    for col, network in enumerate(NETWORKS):
        acc_ax, loss_ax = axes[0, col], axes[1, col]
        for placement in placements:
            runs = list(results[network][placement].values())
            c0 = runs[0]["curves"]
            acc = np.array([r["curves"]["top1"] for r in runs])
            loss = np.array([r["curves"]["loss"] for r in runs])
            colour = COLOURS[placement]
            style = "--" if placement in ("none", "layer_input") else "-"
            acc_ax.plot(c0["eval_steps"], acc.mean(0), style, color=colour, label=placement)
            acc_ax.fill_between(
                c0["eval_steps"], acc.min(0), acc.max(0), color=colour, alpha=0.2, lw=0
            )
            loss_ax.plot(c0["train_steps"], loss.mean(0), style, color=colour, label=placement)
        acc_ax.axhline(scale[network]["target"], color="grey", lw=0.6, ls=":")
        acc_ax.set_title(f"{titles[network]}: test accuracy\n(mean; band: min-max over seeds)")
        acc_ax.set_xlabel("training steps")
        acc_ax.set_ylabel("test accuracy")
        acc_ax.legend(loc="lower right", fontsize=8)
        loss_ax.set_title(f"{titles[network]}: training loss\n(window mean, mean over seeds)")
        loss_ax.set_xlabel("training steps")
        loss_ax.set_ylabel("cross-entropy")
        loss_ax.set_yscale("log")
        loss_ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


SOURCES = [
    "- **The BN paper** (Ioffe & Szegedy 2015, Sec. 3.2) adds BN *immediately before the "
    "nonlinearity*, normalizing x = Wu + b. Their reasoning: they could normalize the layer "
    "input u instead, but u is likely the output of another nonlinearity, so the shape of its "
    "distribution is likely to change during training and fixing its first two moments would "
    "not remove the covariate shift; Wu + b is more likely to have a symmetric, non-sparse, "
    "'more Gaussian' distribution, so normalizing it should give activations with a stable "
    "distribution. The bias b can be dropped because the mean subtraction cancels it (beta "
    "takes its role). Their MNIST experiment (Sec. 4.1, Fig. 1) compares only BN-before vs "
    "no BN.",
    "- **The BN slides** (as issue 15 describes them) show three Keras placements: Dense -> "
    "BatchNormalization -> Activation (the paper's), Dense with its activation -> "
    "BatchNormalization (after the nonlinearity), and BatchNormalization on the input only; "
    "we have no numbers from them to compare. `layer_input` (a BN before every layer) is our "
    "extra reference.",
    "- **Later practice** is split, and we cite only what we read: F. Chollet "
    "(keras-team/keras#1802, 2016) wrote that recent code by Szegedy applies ReLU before BN "
    "and that the order is still debated; ducha-aiki/caffenet-benchmark (batchnorm.md, "
    "ImageNet resized to 128 px) reports CaffeNet top-1 accuracy 0.474 with BN before ReLU "
    "(0.478 with scale & bias) vs 0.499 after (0.493), but for GoogLeNet 0.607 before "
    "(orthogonal init) vs 0.596 after (LSUV init). We know of no published comparison on "
    "our two networks.",
]


def _pct(s: dict) -> str:
    return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"


def _seeds(s: dict, scale: float = 100.0, digits: int = 2) -> str:
    return ", ".join(f"{scale * v:.{digits}f}" for v in s["values"])


def findings(report: dict) -> list[str]:
    """What we measured, as sentences computed from the summary (no fixed verdicts)."""
    out = []
    names = {"mlp": "MNIST MLP", "vgg": "narrow VGG-11 on CIFAR-10"}
    for network, by_p in report["summary"].items():
        scale = report["scale"][network]
        order = sorted(by_p, key=lambda p: -by_p[p]["test_top1"]["mean"])
        ranked = " > ".join(f"{p} {100 * by_p[p]['test_top1']['mean']:.2f}" for p in order)
        spread = max(
            100 * (max(r["test_top1"]["values"]) - min(r["test_top1"]["values"]))
            for r in by_p.values()
        )
        text = (
            f"- **{names[network]}** after {scale['steps']:,} steps, mean test accuracy (%) "
            f"over {len(report['seeds'])} seed(s): {ranked}. The largest gap between two seeds "
            f"of one placement is {spread:.2f} points"
        )
        if "before" in by_p and "after" in by_p:
            d = 100 * (by_p["before"]["test_top1"]["mean"] - by_p["after"]["test_top1"]["mean"])
            text += f"; before minus after: {d:+.2f} points"
        if "network_input" in by_p and "none" in by_p:
            d = 100 * (
                by_p["network_input"]["test_top1"]["mean"] - by_p["none"]["test_top1"]["mean"]
            )
            text += f"; input-only BN minus no BN: {d:+.2f} points"
        fastest = [p for p in by_p if by_p[p]["steps_to_target_mean"] is not None]
        if fastest:
            p = min(fastest, key=lambda p: by_p[p]["steps_to_target_mean"])
            text += (
                f". First to {100 * scale['target']:.0f}% test accuracy: {p} "
                f"(mean {by_p[p]['steps_to_target_mean']:,.0f} steps)"
            )
        out.append(text + ".")
    return out


def cross_check(report: dict, bn_mnist_json: str) -> dict | None:
    """Our MLP 'before' and 'none' runs are bn_mnist.py's two networks (same config and
    seeds): the test accuracy both record at common steps, largest difference."""
    if not os.path.exists(bn_mnist_json) or "mlp" not in report["runs"]:
        return None
    with open(bn_mnist_json) as f:
        theirs = json.load(f)["curves"]
    out = {}
    for ours, name in (("before", "bn"), ("none", "baseline")):
        for seed, run in report["runs"]["mlp"].get(ours, {}).items():
            if seed not in theirs.get(name, {}):
                continue
            c, t = run["curves"], theirs[name][seed]
            common = [s for s in c["eval_steps"] if s in t["steps"]]
            diffs = [
                abs(c["top1"][c["eval_steps"].index(s)] - t["top1"][t["steps"].index(s)])
                for s in common
            ]
            if not common:
                continue
            out[f"{ours}_s{seed}"] = {
                "bn_mnist_network": name,
                "common_steps": len(common),
                "max_abs_diff": max(diffs),
                "first_step_differing": next(
                    (s for s, d in zip(common, diffs, strict=True) if d > 0), None
                ),
            }
    return out or None


def timing_text(report: dict) -> str:
    runs = report["run_seconds"].values()
    wall = sum(t["wall_s"] for t in runs) / 60
    cpu = sum(t["cpu_s"] for t in runs) / 60
    reused = sum(t.get("reused", False) for t in runs)
    text = (
        f"the {len(report['run_seconds'])} training runs took {wall:.1f} min of wall time "
        f"({report['workers']} at a time) and {cpu:.1f} min of CPU time in all"
    )
    if reused:
        text += f" ({reused} trained by an earlier invocation of the same command, reused)"
    return text + f"; this invocation: {report['wall_seconds'] / 60:.1f} min wall."


def write_markdown(report: dict, path: str) -> None:
    sc, full = report["scale"], report["full_scale"]
    m, v = sc["mlp"], sc["vgg"]
    lines = [
        "# Where BN goes: before / after the nonlinearity / on the input only "
        "(BN slides; Ioffe & Szegedy 2015, Sec. 3.2)",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; seeds {', '.join(map(str, report['seeds']))}; "
        f"scale `{report['scale_name']}`.  ",
        f"Time: {timing_text(report)}",
        "",
        "| placement (`norm_position`) | Keras layer order | biases |",
        "| --- | --- | --- |",
    ]
    bias = {
        "before": "dropped where BN follows (Sec. 3.2)",
        "after": "kept",
        "network_input": "kept (plain net)",
        "none": "kept",
        "layer_input": "kept",
    }
    for p in report["placements"]:
        lines.append(f"| `{p}` | {KERAS_ORDER[p]} | {bias[p]} |")
    lines += [
        "",
        "Networks (every placement of a network: same recipe, data order and seeds):",
        "",
        f"- (a) the BN paper's MNIST MLP (`configs/bn_mnist.py`): 784-100-100-100-10, "
        "sigmoid, N(0, 0.1²) weights, plain SGD, batches of 60, learning rate "
        f"{MLP_LEARNING_RATE:g} (the rate `bn_mnist.py`'s sweep chose), all 60,000 training "
        f"digits, {m['steps']:,} steps (the paper: 50,000), test accuracy on "
        f"{m['test']:,} test digits every {m['eval_every']} steps; target {m['target']:.0%}.",
        f"- (b) VGG-11 (configuration A) with every conv width x {v['width']:g} "
        f"({', '.join(str(max(1, round(w * v['width']))) for w in (64, 128, 256, 512))} "
        "channels per stage), the 1x1 map after the five pools flattened "
        + (
            "straight into the classifier"
            if not v["fc_width"]
            else f"into two FCs of {v['fc_width']}"
        )
        + ", no dropout, BN with "
        "`conv_bias=False` (a conv bias only where no BN directly follows); CIFAR-10 "
        f"train[:{v['train']:,}] with pad-crop-flip, batch {v['batch']}, {v['steps']:,} steps "
        f"(~{v['steps'] * v['batch'] / v['train']:.0f} epochs), SGD momentum 0.9, learning "
        f"rate {v['learning_rate']:g} with cosine decay, weight decay 5e-4; test accuracy on "
        f"test[:{v['test']:,}] every {v['eval_every']} steps; target {v['target']:.0%}.",
        "- Both input pipelines end in the library's `normalize` (per channel, the training "
        "set's mean and std), so `network_input` adds batch statistics per input feature (each "
        "of the MLP's 784 pixels, each of VGG's 3 channels) and a learned scale and shift on "
        "an input that is already standardized, not on raw pixels.",
        f"- Full scale (`--scale=full`, for an accelerator): the MLP for {full['mlp']['steps']:,} "
        f"steps (the paper's length); VGG-11-BN at full width with two FCs of "
        f"{full['vgg']['fc_width']} on all 50,000 training images, {full['vgg']['steps']:,} "
        "steps (100 epochs), all 10,000 test images.",
        "",
        "## Results (test accuracy %, mean ± std over seeds [per seed]; training loss = "
        "the last logged window's mean cross-entropy)",
        "",
    ]
    for network, title in (("mlp", "(a) MNIST MLP"), ("vgg", "(b) narrow VGG-11, CIFAR-10")):
        target = sc[network]["target"]
        lines += [
            f"### {title}, {sc[network]['steps']:,} steps",
            "",
            f"| placement | test accuracy | per seed | training loss | steps to {target:.0%} "
            "(mean of seeds reaching it) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for p, row in report["summary"][network].items():
            n = len(report["seeds"])
            hit = row["seeds_reaching_target"]
            steps = (
                f"{row['steps_to_target_mean']:,.0f} ({hit}/{n} seeds)"
                if hit
                else f"not reached (0/{n})"
            )
            lines.append(
                f"| `{p}` | {_pct(row['test_top1'])} | {_seeds(row['test_top1'])} | "
                f"{row['train_loss']['mean']:.3f} ± {row['train_loss']['std']:.3f} | {steps} |"
            )
        lines.append("")
    lines += ["## The sources and what we measured", "", *SOURCES, "", "Ours:", ""]
    lines += findings(report)
    check = report.get("bn_mnist_cross_check")
    if check:
        lines += [
            "",
            "Cross-check: our MLP `before` and `none` runs are `bn_mnist.py`'s two networks "
            "(same config, same seeds; experiments/results/bn_mnist.json). Largest test "
            "accuracy difference at common steps:",
            "",
        ]
        for key, c in check.items():
            first = c["first_step_differing"]
            lines.append(
                f"- `{key}` vs bn_mnist `{c['bn_mnist_network']}`: "
                f"{100 * c['max_abs_diff']:.2f} points over {c['common_steps']} evaluations"
                + (f" (equal before step {first:,})" if first else " (equal at every one)")
            )
    lines += ["", f"![curves per placement]({NAME}.png)", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"{flag}={text!r} must be comma-separated integers") from None
    if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise UserError(f"{flag}={values} must be distinct non-negative integers")
    return values


def _name_list(text: str, flag: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [n for n in names if n not in allowed]
    if not names or bad or len(set(names)) != len(names):
        raise UserError(f"{flag}={text!r}: choose distinct names from {', '.join(allowed)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default=str(ROOT / "experiments" / "results"))
    parser.add_argument(
        "--workdir",
        default="/tmp/cnn_arch_norm_placement",
        help="run folders; finished runs in it are reused",
    )
    parser.add_argument("--data_dir", default=_runs.default_data_dir())
    parser.add_argument("--scale", default="default", choices=sorted(SCALES))
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument("--placements", default=",".join(PLACEMENTS))
    parser.add_argument("--workers", type=int, default=2, help="runs trained at a time")
    parser.add_argument("--compilation_cache", default=None, help="default: WORKDIR/jax_cache")
    args = parser.parse_args(argv)
    args.seeds = _int_list(args.seeds, "--seeds")
    args.placements = _name_list(args.placements, "--placements", PLACEMENTS)
    if args.workers < 1:
        raise UserError(f"--workers={args.workers} must be at least 1")
    if args.compilation_cache is None:
        args.compilation_cache = os.path.join(args.workdir, "jax_cache")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    scale = SCALES[args.scale]
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.perf_counter()
    jobs, index = [], {}
    for network in NETWORKS:  # the MLP runs first: a partial run still has one network
        for seed in args.seeds:
            for placement in args.placements:
                workdir = os.path.join(args.workdir, f"{args.scale}_{network}_{placement}_s{seed}")
                config = CONFIGS[network](placement, scale[network], seed, args.data_dir)
                jobs.append((workdir, config))
                index[(network, placement, seed)] = workdir
    print(f"training {len(jobs)} runs ({args.scale} scale), {args.workers} at a time")
    times = _runs.train_all(jobs, args.workers, compilation_cache=args.compilation_cache)
    results = {
        network: {
            p: {
                str(s): run_result(index[(network, p, s)], scale[network]["target"])
                for s in args.seeds
            }
            for p in args.placements
        }
        for network in NETWORKS
    }
    report = {
        "command": _runs.command_line("norm_placement.py", argv),
        "machine": MACHINE,
        "scale_name": args.scale,
        "scale": scale,
        "full_scale": SCALES["full"],
        "seeds": args.seeds,
        "placements": list(args.placements),
        "workers": args.workers,
        "configs": {
            network: CONFIGS[network]("before", scale[network], args.seeds[0], "").to_dict()
            for network in NETWORKS
        },
        "run_seconds": {os.path.basename(w): t for w, t in times.items()},
        "summary": summarize(results, args.seeds),
        "runs": results,
    }
    report["bn_mnist_cross_check"] = cross_check(
        report, str(ROOT / "experiments" / "results" / "bn_mnist.json")
    )
    report["wall_seconds"] = time.perf_counter() - t0
    with open(os.path.join(args.out_dir, f"{NAME}.json"), "w") as f:
        json.dump(report, f, indent=1)
    write_markdown(report, os.path.join(args.out_dir, f"{NAME}.md"))
    plot(results, scale, args.placements, os.path.join(args.out_dir, f"{NAME}.png"))
    print(open(os.path.join(args.out_dir, f"{NAME}.md")).read())
    return report


if __name__ == "__main__":
    _runs.run_main(main)
