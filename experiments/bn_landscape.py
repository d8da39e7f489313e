"""Santurkar et al. 2018, "How Does Batch Normalization Help Optimization?", scaled down.

    python experiments/bn_landscape.py [--num_steps=1500] [--seeds=0] [--workers=2]

The narrow VGG-11 of ``configs/bn_landscape.py`` on CIFAR-10, trained by the library's
loop (``_runs.train_all``) without BN ("standard"), with BN, with noisy BN (BN then a
random per-channel scale and shift drawn every step, Sec. 2.1) at one learning rate,
and with BN at ``--high_lr`` (their Fig. 1 also trains at a 5x higher rate; 0 = skip).
Every ``--eval_every`` steps the loop's evaluators record the test accuracy on the first
``--eval_examples`` test images, the internal covariate shift of Definition 2.1 for
three conv layers (``ics``) and the loss and gradient along the gradient (Sec. 3.1,
Fig. 4: ``landscape``), both on one fixed training batch of 128.

Writes ``bn_landscape.json`` (every curve and number), ``bn_landscape.md`` (table, the
paper's claims beside ours, command, machine, seeds, scale) and ``bn_landscape.png``
(training curves, ICS, landscape). Workdirs go to ``--workdir``; finished ones are reused.
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

from cnn_arch.errors import UserError  # noqa: E402
from configs import bn_landscape  # noqa: E402

NAME = "bn_landscape"
LABELS = {
    "standard": "Standard (no BN)",
    "bn": "Standard + BN",
    "noisy_bn": "Standard + noisy BN",
    "bn_high_lr": "Standard + BN, high lr",
}
COLORS = {
    "standard": "tab:blue",
    "bn": "tab:red",
    "noisy_bn": "tab:green",
    "bn_high_lr": "tab:purple",
}
ICS_KEYS = ("l2", "cos", "rel", "grad_norm")
LANDSCAPE_KEYS = (
    "loss",
    "loss_min",
    "loss_max",
    "loss_range",
    "grad_diff_min",
    "grad_diff_max",
    "beta",
    "grad_norm",
)


def network_config(network: str, args, seed: int):
    c = bn_landscape.get_config("bn" if network == "bn_high_lr" else network)
    c.data_dir = args.data_dir
    c.seed = seed
    c.learning_rate = args.high_lr if network == "bn_high_lr" else args.learning_rate
    c.num_train_steps = args.num_steps
    c.checkpoint_every_steps = args.num_steps
    c.log_every_steps = args.log_every
    c.steps_per_eval = args.eval_every
    c.eval_split = f"test[:{args.eval_examples}]" if args.eval_examples < 10_000 else "test"
    c.train_split = args.train_split
    c.shuffle_buffer = args.shuffle_buffer
    c.evals.landscape.step_sizes = list(args.step_sizes)
    c.evals.landscape.relative_to_lr = args.relative_to_lr
    return c


def networks(args) -> list[str]:
    return ["standard", "bn", "noisy_bn"] + (["bn_high_lr"] if args.high_lr > 0 else [])


def curves(workdir: str) -> dict:
    """Every logged series of one run (train rows every log step; evals every eval step)."""
    rows = _runs.read_metrics(workdir)
    out: dict = {}
    out["train_steps"], out["train_loss"] = _runs.series(rows["train"], "loss")
    out["train_top1"] = _runs.series(rows["train"], "top1")[1]
    out["eval_steps"], out["test_top1"] = _runs.series(rows["eval"], "top1")
    ics_steps = sorted(rows["ics"])
    assert ics_steps == sorted(rows["landscape"]) == out["eval_steps"], workdir
    for layer in bn_landscape.ICS_LAYERS:
        for key in ICS_KEYS:
            out[f"ics_{layer}_{key}"] = _runs.series(rows["ics"], f"{layer}_{key}")[1]
    for key in LANDSCAPE_KEYS:
        out[f"landscape_{key}"] = _runs.series(rows["landscape"], key)[1]
    return out


def _mean(values) -> float:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def summarize(c: dict) -> dict:
    """One run's numbers: the end of training and means over the measured steps."""
    n = max(1, len(c["train_loss"]) // 10)  # the last tenth of the logged train losses
    out = {
        "final_train_loss": _mean(c["train_loss"][-n:]),
        "final_train_top1": _mean(c["train_top1"][-n:]),
        "final_test_top1": float(c["test_top1"][-1]),
        "best_test_top1": float(max(c["test_top1"])),
    }
    for layer in bn_landscape.ICS_LAYERS:
        for key in ("l2", "cos", "rel"):
            out[f"ics_{layer}_{key}_mean"] = _mean(c[f"ics_{layer}_{key}"])
    for key in ("loss_range", "grad_diff_max", "beta"):
        out[f"{key}_mean"] = _mean(c[f"landscape_{key}"])
        out[f"{key}_max"] = float(np.nanmax(c[f"landscape_{key}"]))
    out["grad_norm_mean"] = _mean(c["landscape_grad_norm"])
    return out


def over_seeds(by_seed: dict[int, dict]) -> dict:
    keys = next(iter(by_seed.values())).keys()
    out = {}
    for key in keys:
        v = np.array([s[key] for s in by_seed.values()], np.float64)
        out[key] = {
            "mean": float(v.mean()),
            "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "values": v.tolist(),
        }
    return out


def plot(runs: dict, path: str, seed: int, layer: str) -> None:
    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5))
    panels = [
        ("train_steps", "train_loss", "training loss (batch)", "(a) training loss"),
        ("train_steps", "train_top1", "training accuracy (batch)", "(b) training accuracy"),
        ("eval_steps", "test_top1", "test accuracy", "(c) test accuracy"),
        ("eval_steps", f"ics_{layer}_l2", "||G - G'||", f"(d) ICS of {layer}: l2 distance"),
        ("eval_steps", f"ics_{layer}_cos", "cos(G, G')", f"(e) ICS of {layer}: cosine"),
    ]
    for ax, (xs, ys, ylabel, title) in zip(axes.flat, panels, strict=False):
        for network, c in runs.items():
            ax.plot(c[seed][xs], c[seed][ys], color=COLORS[network], label=LABELS[network])
        ax.set_title(title)
        ax.set_xlabel("training steps")
        ax.set_ylabel(ylabel)
    axes[0, 0].legend(fontsize=8)
    bands = [
        ("landscape_loss_min", "landscape_loss_max", "loss", "(f) loss landscape along -g"),
        (
            "landscape_grad_diff_min",
            "landscape_grad_diff_max",
            "||grad(x - eta g) - g||",
            "(g) gradient predictiveness",
        ),
    ]
    for ax, (lo, hi, ylabel, title) in zip(axes.flat[5:7], bands, strict=True):
        for network, c in runs.items():
            s = c[seed]
            ax.fill_between(
                s["eval_steps"],
                s[lo],
                s[hi],
                color=COLORS[network],
                alpha=0.35,
                label=LABELS[network],
            )
        ax.set_title(title + " (band: over step sizes)")
        ax.set_xlabel("training steps")
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")
    ax = axes.flat[7]
    for network, c in runs.items():
        ax.plot(
            c[seed]["eval_steps"],
            c[seed]["landscape_beta"],
            color=COLORS[network],
            label=LABELS[network],
        )
    ax.set_yscale("log")
    ax.set_title("(h) effective beta-smoothness")
    ax.set_xlabel("training steps")
    ax.set_ylabel("max ||grad(x - eta g) - g|| / ||eta g||")
    fig.suptitle(f"Santurkar et al. 2018, scaled: narrow VGG-11 on CIFAR-10 (seed {seed})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def pm(s: dict, digits: int = 3, scale: float = 1.0) -> str:
    if s["std"]:
        return f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"
    return f"{scale * s['mean']:.{digits}f}"


def comparison(summary: dict, layers: tuple[str, ...]) -> list[str]:
    """The paper's claims and ours, side by side (numbers from ``summary``)."""
    s, b, n = summary["standard"], summary["bn"], summary["noisy_bn"]
    out = [
        "- **Fig. 1 and Fig. 2 (Sec. 2.1): BN trains faster and better; noisy BN trains "
        "about as well as BN** although its layer inputs are far less stable. Ours, final "
        f"training loss (mean of the last tenth of the logged batches): standard "
        f"{pm(s['final_train_loss'])}, BN {pm(b['final_train_loss'])}, noisy BN "
        f"{pm(n['final_train_loss'])}; test accuracy at the end "
        f"{pm(s['final_test_top1'], 1, 100)}% / {pm(b['final_test_top1'], 1, 100)}% / "
        f"{pm(n['final_test_top1'], 1, 100)}%.",
        "- **Fig. 5, VGG (Sec. 2.2): BN does not reduce ICS as Definition 2.1 measures it** "
        "(with BN the l2 distance between G and G' is often larger and the cosine no closer "
        "to 1). Ours, mean over the measured steps, l2 / cosine / relative l2:",
    ]
    for layer in layers:
        k = f"ics_{layer}"
        cells = [
            f"{label} {pm(r[k + '_l2_mean'], 4)} / {pm(r[k + '_cos_mean'])} / "
            f"{pm(r[k + '_rel_mean'])}"
            for label, r in (("standard", s), ("BN", b), ("noisy BN", n))
        ]
        out.append(f"  - {layer}: " + "; ".join(cells) + ".")
    out.append(
        "- **Fig. 4 (Sec. 3.1): with BN the loss changes less along the gradient, the "
        "gradient is more predictive and the effective beta-smoothness is smaller.** Ours, "
        "mean over the measured steps (max in brackets), standard vs BN: loss range "
        f"{pm(s['loss_range_mean'])} [{s['loss_range_max']['mean']:.3f}] vs "
        f"{pm(b['loss_range_mean'])} [{b['loss_range_max']['mean']:.3f}]; gradient change at "
        f"the largest step {pm(s['grad_diff_max_mean'])} vs {pm(b['grad_diff_max_mean'])}; "
        f"beta {pm(s['beta_mean'], 2)} [{s['beta_max']['mean']:.2f}] vs "
        f"{pm(b['beta_mean'], 2)} [{b['beta_max']['mean']:.2f}]; gradient norm on the probe "
        f"batch {pm(s['grad_norm_mean'])} vs {pm(b['grad_norm_mean'])} (the loss range and "
        "the gradient change grow with it at a fixed eta; beta divides it out)."
    )
    return out


def verdicts(summary: dict, layers: tuple[str, ...]) -> list[str]:
    """Whether each qualitative claim holds in our numbers (means over seeds)."""

    def m(net: str, key: str) -> float:
        return summary[net][key]["mean"]

    out = []
    ok = m("bn", "final_train_loss") < m("standard", "final_train_loss")
    out.append(f"BN reaches a lower training loss than standard: {'yes' if ok else 'NO'}")
    gap_noisy = abs(m("noisy_bn", "final_train_loss") - m("bn", "final_train_loss"))
    gap_std = abs(m("standard", "final_train_loss") - m("bn", "final_train_loss"))
    ok = gap_noisy < gap_std
    out.append(
        "noisy BN's final training loss is closer to BN's than standard's is: "
        f"{'yes' if ok else 'NO'} ({gap_noisy:.3f} vs {gap_std:.3f})"
    )
    for layer in layers:
        ok = m("bn", f"ics_{layer}_cos_mean") <= m("standard", f"ics_{layer}_cos_mean")
        out.append(
            f"{layer}: BN's mean ICS cosine is not closer to 1 than standard's (no ICS "
            f"reduction by that measure): {'yes' if ok else 'NO'}"
        )
    for key, what in (
        ("loss_range_mean", "loss range"),
        ("grad_diff_max_mean", "gradient change"),
        ("beta_mean", "effective beta"),
    ):
        ok = m("bn", key) < m("standard", key)
        out.append(f"BN has the smaller mean {what}: {'yes' if ok else 'NO'}")
    return out


def write_markdown(report: dict, path: str) -> None:
    summary, nets = report["summary"], report["networks"]
    layers = tuple(report["ics_layers"])
    lines = [
        "# Santurkar et al. 2018: ICS is not why BN helps; BN smooths the landscape (scaled)",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; seeds {', '.join(map(str, report['seeds']))}; "
        f"{report['workers']} runs at a time.  ",
        f"Time: {report['timing']}",
        "",
        "## Setup (ours) and the full-scale one",
        "",
        f"- Network: VGG-11 (configuration A, `vgg11`) at 1/8 width (8-16-32-32-64-64-64-64 "
        "channels), global average pool, linear classifier, no dropout; BN after every conv "
        "(before the ReLU); noisy BN = BN then y = s * BN(x) + m with per-channel s ~ U(1, "
        f"{report['noise_scale']}) and m ~ U(-{report['noise_shift']}, {report['noise_shift']}) "
        "drawn every step (`norm='noisy_batch'`).",
        f"- Training: CIFAR-10 {report['train_split']}, no augmentation, batch 128, SGD "
        f"momentum 0.9, constant learning rate {report['learning_rate']:g} for all three"
        + (f" (and BN at {report['high_lr']:g})" if report["high_lr"] > 0 else "")
        + f", {report['num_steps']:,} steps "
        f"({report['num_steps'] * 128 / 50_000:.1f} epochs), no weight decay.",
        f"- Measured every {report['eval_every']} steps: test accuracy on the first "
        f"{report['eval_examples']:,} test images; ICS (Def. 2.1) of {', '.join(layers)} and "
        "the landscape along the gradient on one fixed training batch of 128 (training "
        f"mode, the step's noise); step sizes eta = {report['step_sizes']}"
        + (" x the learning rate" if report["relative_to_lr"] else " (absolute)")
        + ".",
        "- Full scale (the paper): a standard VGG (full width) on CIFAR-10, learning rates "
        "0.1 and 0.5, trained to convergence (their Fig. 1 runs for ~15k steps), ICS and "
        "landscape measured along all of training. Ours is 1/8 of the width and "
        f"{report['num_steps']:,} steps; rerun at full scale with `--num_steps=15000` and a "
        "full-width model_kwargs (width_multiplier=1) on an accelerator.",
        "",
        "## Summary (mean ± std over seeds)",
        "",
        "| | " + " | ".join(LABELS[n] for n in nets) + " |",
        "| --- |" + " --- |" * len(nets),
    ]
    rows = [
        ("final_train_loss", "final training loss", 3, 1.0),
        ("final_train_top1", "final training accuracy (%)", 1, 100.0),
        ("final_test_top1", "final test accuracy (%)", 1, 100.0),
        ("best_test_top1", "best test accuracy (%)", 1, 100.0),
    ]
    for layer in layers:
        rows += [
            (f"ics_{layer}_l2_mean", f"ICS {layer}: mean l2", 4, 1.0),
            (f"ics_{layer}_cos_mean", f"ICS {layer}: mean cosine", 3, 1.0),
            (f"ics_{layer}_rel_mean", f"ICS {layer}: mean relative l2", 3, 1.0),
        ]
    rows += [
        ("loss_range_mean", "loss range along -g: mean", 3, 1.0),
        ("loss_range_max", "loss range along -g: max", 3, 1.0),
        ("grad_diff_max_mean", "gradient change (largest eta): mean", 3, 1.0),
        ("beta_mean", "effective beta-smoothness: mean", 2, 1.0),
        ("beta_max", "effective beta-smoothness: max", 2, 1.0),
        ("grad_norm_mean", "gradient norm on the probe batch: mean", 3, 1.0),
    ]
    for key, label, digits, scale in rows:
        cells = [pm(summary[n][key], digits, scale) for n in nets]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Paper vs ours", "", *report["comparison"], "", "Checks on our numbers:", ""]
    lines += [f"- {v}" for v in report["verdicts"]]
    mean_scale = (1 + report["noise_scale"]) / 2
    lines += [
        "",
        "Notes:",
        "",
        "- Noisy BN is evaluated as plain BN (running averages, no noise), but it was "
        f"trained with every BN output scaled by s, whose mean is {mean_scale:g} (1 is its "
        "lowest draw) and shifted by m: at test time every layer's output is at the edge of "
        "what training saw, and the errors compound over 8 layers, so its test accuracy "
        "measures that train/test mismatch, not how well it optimized. The paper's "
        "claim is about training: compare the training loss and accuracy.",
        "- The ICS l2 distance, the loss range and the gradient change are not scale-free "
        "(they grow with the gradient and with eta); the cosine, the relative l2 and beta "
        "are the comparable ones across networks.",
        f"- {len(report['seeds'])} seed(s), one probe batch, {report['num_steps']:,} steps: "
        "a qualitative check of the paper's claims, not a measurement of their size.",
        "",
        f"![Figures]({NAME}.png)",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def timing_line(report: dict) -> str:
    runs = report["run_seconds"]
    walls = [t["wall_s"] for t in runs.values()]
    cpus = [t["cpu_s"] for t in runs.values() if t.get("cpu_s") is not None]
    reused = sum(t.get("reused", False) for t in runs.values())
    text = (
        f"the {len(runs)} training runs took {sum(walls) / 60:.1f} min of wall time in all and "
        f"{sum(cpus) / 60:.1f} min of CPU time"
    )
    if reused:
        text += f" ({reused} trained by an earlier invocation and reused)"
    return text + f"; this invocation: {report['wall_seconds'] / 60:.1f} min wall."


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default=str(_runs.ROOT / "experiments" / "results"))
    parser.add_argument("--workdir", default="/tmp/cnn_arch_bn_landscape", help="runs' root")
    parser.add_argument("--data_dir", default=_runs.default_data_dir())
    parser.add_argument("--num_steps", type=int, default=1500, help="scale: steps per run")
    parser.add_argument("--eval_every", type=int, default=150)
    parser.add_argument("--log_every", type=int, default=50)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--learning_rate", type=float, default=0.05)
    parser.add_argument("--high_lr", type=float, default=0.25, help="BN again at this; 0 = skip")
    parser.add_argument("--step_sizes", default=",".join(map(str, bn_landscape.STEP_SIZES)))
    parser.add_argument("--relative_to_lr", action="store_true", help="eta = size x lr")
    parser.add_argument("--eval_examples", type=int, default=2000, help="first N test images")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--shuffle_buffer", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2, help="runs trained at a time")
    parser.add_argument("--compilation_cache", default=None, help="default: WORKDIR/jax_cache")
    args = parser.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        args.step_sizes = [float(s) for s in args.step_sizes.split(",") if s.strip()]
    except ValueError as e:
        raise UserError(f"--seeds and --step_sizes take comma-separated numbers ({e})") from None
    if not args.seeds:
        raise UserError("--seeds must name at least one seed")
    if args.num_steps < 1 or args.eval_every < 1 or args.num_steps % args.eval_every:
        raise UserError("--num_steps must be a positive multiple of --eval_every")
    if not args.step_sizes or min(args.step_sizes) <= 0:
        raise UserError("--step_sizes must be positive numbers")
    if not 1 <= args.eval_examples <= 10_000:
        raise UserError("--eval_examples must be between 1 and 10000")
    if args.compilation_cache is None:
        args.compilation_cache = os.path.join(args.workdir, "jax_cache")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    from cnn_arch.norm.noisy import NOISE_SCALE, NOISE_SHIFT
    from cnn_arch.validate import validate_config

    nets = networks(args)
    jobs, index = [], {}
    for seed in args.seeds:
        for network in nets:
            config = network_config(network, args, seed)
            validate_config(config)  # bad flags are one error line before anything trains
            workdir = os.path.join(args.workdir, f"{network}_s{seed}_n{args.num_steps}")
            jobs.append((workdir, config))
            index[(network, seed)] = workdir
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.perf_counter()
    print(f"training {len(jobs)} runs of {args.num_steps} steps, {args.workers} at a time")
    walls = _runs.train_all(jobs, args.workers, compilation_cache=args.compilation_cache)
    diverged = {os.path.basename(w): t["diverged"] for w, t in walls.items() if "diverged" in t}

    runs = {n: {s: curves(index[(n, s)]) for s in args.seeds} for n in nets}
    summary = {n: over_seeds({s: summarize(c) for s, c in runs[n].items()}) for n in nets}
    layers = bn_landscape.ICS_LAYERS
    report: dict = {
        "command": _runs.command_line("bn_landscape.py", argv),
        "machine": _runs.MACHINE,
        "workers": args.workers,
        "seeds": args.seeds,
        "networks": nets,
        "num_steps": args.num_steps,
        "eval_every": args.eval_every,
        "eval_examples": args.eval_examples,
        "train_split": args.train_split,
        "learning_rate": args.learning_rate,
        "high_lr": args.high_lr,
        "step_sizes": args.step_sizes,
        "relative_to_lr": args.relative_to_lr,
        "noise_shift": NOISE_SHIFT,
        "noise_scale": NOISE_SCALE,
        "ics_layers": list(layers),
        "config": {n: network_config(n, args, args.seeds[0]).to_dict() for n in nets},
        "run_seconds": {os.path.basename(w): t for w, t in walls.items()},
        "diverged": diverged,
        "curves": {n: {str(s): c for s, c in by_seed.items()} for n, by_seed in runs.items()},
        "summary": summary,
        "comparison": comparison(summary, layers),
        "verdicts": verdicts(summary, layers),
    }
    report["wall_seconds"] = time.perf_counter() - t0
    report["timing"] = timing_line(report)
    with open(os.path.join(args.out_dir, f"{NAME}.json"), "w") as f:
        json.dump(report, f, indent=1)
    write_markdown(report, os.path.join(args.out_dir, f"{NAME}.md"))
    plot(runs, os.path.join(args.out_dir, f"{NAME}.png"), args.seeds[0], layers[1])
    print(open(os.path.join(args.out_dir, f"{NAME}.md")).read())
    return report


if __name__ == "__main__":
    _runs.run_main(main)
