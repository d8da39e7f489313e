"""BN vs the number of examples per BN batch, and the alternatives (Wu & He 2018, Fig. 1).

    python experiments/norm_batch_size.py                      # default scale
    python experiments/norm_batch_size.py --scale=smoke        # seconds, for the tests
    python experiments/norm_batch_size.py --num_steps=2000 --seeds 0 1 --workers=2

A narrow ResNet-20 (``configs/resnet20_cifar10.py``: SGD 0.1, momentum 0.9, weight
decay 1e-4, /10 at 50% and 75% of the run, pad-crop + flip) trains on a CIFAR-10
subset at a FIXED global batch of 128 with BN statistics over 2, 4, 8, 16, 32 and 128
examples (ghost BN, ``norm='ghost_batch<k>'``: the batch is cut into 128/k sub-batches
normalized on their own, so only the statistics change; k=128 is ordinary BN), and with
the batch-independent alternatives GN (G=4 groups, ``norm='group4'``), LN, IN and no
normalization, same schedule. Wu & He's Fig. 1 varies the images per GPU of ResNet-50 on
ImageNet, which is the same thing: BN there is per-GPU (ghost) BN.

The train/test discrepancy: the trained k=128 and k=4 networks are evaluated on the same
test subset with BN's running averages (``running``, what training produced), Algorithm
2's population statistics (``population``, re-estimated over training batches of 128 in
training mode, so a ghost network's statistics are over its k-example sub-batches) and
the statistics of the evaluation batch itself at 1, 4, 8 and 64 examples per batch
(``batch_stats``, the notes' "randomization during use").

Every run trains through the library's loop (``_runs.train_all``); a kept ``--workdir``
is reused by a rerun (finished runs are not retrained). Writes
``norm_batch_size.{json,md,png}`` to ``--out_dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
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

from cnn_arch.errors import UserError  # noqa: E402

NAME = "norm_batch_size"
MACHINE = "2-core Xeon CPU (AVX-512/AMX), shared with other jobs"
GLOBAL_BATCH = 128
GHOST_SIZES = (2, 4, 8, 16, 32, 128)  # examples per BN batch (128 = the whole batch = BN)
# setting name -> model_kwargs.norm; the BN settings are 'bn<k>'
ALTERNATIVES = {"gn": "group4", "ln": "layer", "in": "instance", "none": "none"}
ALTERNATIVE_LABELS = {"gn": "GN (G=4)", "ln": "LN", "in": "IN", "none": "no normalization"}
# The trained BN networks evaluated four ways, and the evaluation batch sizes of batch_stats.
DISCREPANCY_SETTINGS = ("bn128", "bn4")
EVAL_BATCH_SIZES = (1, 4, 8, 64)
POPULATION_BATCHES = 50  # N of Algorithm 2 (training batches of 128)

# Wu & He 2018 (ResNet-50, ImageNet, top-1 validation error %): Table 2 / Fig. 1 for BN
# and GN at 32, 16, 8, 4 and 2 images per GPU; Table 1 (32 images per GPU) for LN and IN.
PAPER_ERROR = {
    "bn32": 23.6,
    "bn16": 23.7,
    "bn8": 24.8,
    "bn4": 27.3,
    "bn2": 34.7,
    "gn": 24.1,  # 24.1, 24.2, 24.0, 24.2, 24.1 from 32 down to 2 images per GPU
    "ln": 25.3,
    "in": 28.4,
}

SCALES = {
    # width: stage channels (16, 32, 64) x width; train / test: subset sizes; steps of the
    # global batch 128; evals: points on the test-error curve.
    "default": {"width": 0.5, "train": 50_000, "steps": 1_000, "test": 2_000, "evals": 4},
    "smoke": {"width": 0.25, "train": 256, "steps": 2, "test": 128, "evals": 1},
}


def settings() -> dict[str, dict]:
    """Every setting: its norm kind and examples per BN batch (None: batch-independent)."""
    out = {f"bn{k}": {"norm": f"ghost_batch{k}", "examples_per_bn_batch": k} for k in GHOST_SIZES}
    for name, norm in ALTERNATIVES.items():
        out[name] = {"norm": norm, "examples_per_bn_batch": None}
    return out


def config_for(setting: str, scale: dict, seed: int, data_dir: str, num_steps: int):
    """The He et al. CIFAR recipe at ``scale`` with the norm of ``setting``."""
    c = _runs.scaled_cifar_resnet(
        **{k: scale[k] for k in ("width", "train", "test", "evals")},
        batch=GLOBAL_BATCH,
        seed=seed,
        data_dir=data_dir,
        num_steps=num_steps,
        schedule_steps=num_steps,
    )
    c.model_kwargs.norm = settings()[setting]["norm"]
    c.evals = {"eval": {"kind": "running"}}
    return c


def discrepancy_evals() -> list[str]:
    """``python -m cnn_arch.evaluate`` names of the four ways to evaluate a BN network."""
    return ["running", "alg2", *(f"batch_stats_{b}" for b in EVAL_BATCH_SIZES)]


def evaluate_discrepancy(workdir: str, data_dir: str) -> dict[str, float]:
    """Test error of one trained BN network under each of ``discrepancy_evals()``."""
    from cnn_arch import evaluate

    report = evaluate.evaluate_workdir(
        workdir, discrepancy_evals(), num_batches=POPULATION_BATCHES, data_dir=data_dir
    )
    return {name: 1.0 - float(m["top1"]) for name, m in report["results"].items()}


def collect(workdir: str, setting: str, seed: int, times: dict) -> dict:
    rows = _runs.read_metrics(workdir)
    steps, top1 = _runs.series(rows["eval"], "top1") if "eval" in rows else ([], [])
    train_steps, train_loss = _runs.series(rows.get("train", {}), "loss") if rows else ([], [])
    s = settings()[setting]
    return {
        "setting": setting,
        "norm": s["norm"],
        "examples_per_bn_batch": s["examples_per_bn_batch"],
        "seed": seed,
        "test_error": 1.0 - top1[-1] if top1 else None,
        "test_error_curve": [[st, 1.0 - t] for st, t in zip(steps, top1, strict=True)],
        "train_loss_curve": [[st, v] for st, v in zip(train_steps, train_loss, strict=True)],
        "diverged": times.get("diverged"),
        "wall_s": times["wall_s"],
        "cpu_s": times["cpu_s"],
        "reused": times.get("reused", False),
    }


def summarize(runs: list[dict], chosen: list[str]) -> dict[str, dict]:
    """Mean and spread over seeds of the final test error of each ``chosen`` setting
    (diverged runs count as error 0.9, chance on CIFAR-10, and are named)."""
    out = {}
    for setting in chosen:
        errors = [r["test_error"] for r in runs if r["setting"] == setting]
        errors = [0.9 if e is None else e for e in errors]
        out[setting] = {
            "test_error_mean": float(np.mean(errors)),
            "test_error_std": float(np.std(errors)),
            "seeds": len(errors),
            "diverged": sum(1 for r in runs if r["setting"] == setting and r["diverged"]),
        }
    return out


def _figure(summary: dict, discrepancy: dict, path: Path, title: str) -> None:
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(13, 4.5))
    ks = [k for k in GHOST_SIZES if f"bn{k}" in summary]
    bn = [100 * summary[f"bn{k}"]["test_error_mean"] for k in ks]
    bn_std = [100 * summary[f"bn{k}"]["test_error_std"] for k in ks]
    ax.errorbar(ks, bn, yerr=bn_std, marker="o", color="C0", label="BN (ghost, k examples)")
    for i, (name, label) in enumerate(ALTERNATIVE_LABELS.items()):
        if name in summary:
            error = 100 * summary[name]["test_error_mean"]
            ax.axhline(error, color=f"C{i + 1}", ls="--", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(GHOST_SIZES, [str(k) for k in GHOST_SIZES])
    ax.set_xlabel(f"examples per BN batch (global batch {GLOBAL_BATCH})")
    ax.set_ylabel("test error (%)")
    ax.set_title("test error vs examples per BN batch")
    ax.legend(fontsize=8)
    names = discrepancy_evals()
    width = 0.8 / max(1, len(discrepancy))
    for j, (setting, per_seed) in enumerate(discrepancy.items()):
        means = [100 * np.mean([e[n] for e in per_seed.values()]) for n in names]
        bars.bar(np.arange(len(names)) + j * width, means, width, label=f"trained as {setting}")
    bars.set_xticks(np.arange(len(names)) + width * (len(discrepancy) - 1) / 2, names)
    bars.tick_params(axis="x", labelrotation=20)
    bars.set_ylabel("test error (%)")
    bars.set_title("one trained BN network, four ways to evaluate it")
    bars.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _markdown(meta: dict, summary: dict, discrepancy: dict, scale: dict) -> str:
    widths = meta["widths"]
    steps = meta["num_steps"]
    epochs = steps * GLOBAL_BATCH / scale["train"]
    lines = [
        "# BN vs examples per BN batch, and the alternatives (Wu & He 2018, Fig. 1, scaled)",
        "",
        f"Generated by `{meta['command']}` in {meta['wall_seconds'] / 60:.1f} min on a "
        f"{MACHINE}; seeds {meta['seeds']}. The runs' own training times (also those of "
        f"runs an earlier invocation with the same --workdir trained and this one reused): "
        f"{meta['train_wall_seconds_sum'] / 60:.1f} min wall summed over runs (trained "
        f"{meta['workers']} at a time), {meta['cpu_seconds'] / 60:.1f} CPU-min.",
        "",
        f"Scaled down: ResNet-20 (option-A shortcuts) with stage widths "
        f"{widths[0]}/{widths[1]}/{widths[2]} (x{scale['width']} of 16/32/64), trained on "
        f"`train[:{scale['train']}]` of CIFAR-10 for {steps} steps of a global batch of "
        f"{GLOBAL_BATCH} ({epochs:.1f} epochs of the subset), SGD 0.1 /10 at steps "
        f"{steps // 2} and {3 * steps // 4}, momentum 0.9, weight decay 1e-4, pad-crop + "
        f"flip; test error on `test[:{scale['test']}]` with the network as trained (BN's "
        "running averages). Full scale would be `configs/resnet20_cifar10.py` as it is "
        "(widths 16/32/64, all 50k images, 64k steps of 128, test on all 10k) with "
        "`--config.model_kwargs.norm=ghost_batch<k>` / `group4` / `layer` / `instance` / "
        "`none`.",
        "",
        "BN at k examples: ghost BN with sub-batches of k inside the fixed global batch of "
        f"{GLOBAL_BATCH}, so the gradient noise of the batch stays the same and only the "
        "statistics change (k = 128 is ordinary BN). Wu & He vary the images per GPU of "
        "ResNet-50 on ImageNet with per-GPU BN, which is ghost BN as well; their numbers are "
        "ImageNet top-1 validation errors of a far larger network and are shown for the "
        "trend only. GN here has G = 4 groups (the library's default gcd(32, C) is one "
        "channel per group at these widths, i.e. IN); theirs has G = 32.",
        "",
        "![norm_batch_size](norm_batch_size.png)",
        "",
        "| setting | examples per BN batch | Wu & He 2018 error % (ResNet-50, ImageNet) | "
        "ours: test error % | ours: ± over seeds |",
        "|---|---|---|---|---|",
    ]

    def spread(m: dict) -> str:
        return _pct(m["test_error_std"]) if m["seeds"] > 1 else "— (one seed)"

    for setting, s in settings().items():
        if setting not in summary:
            continue
        m = summary[setting]
        k = s["examples_per_bn_batch"]
        label = f"BN ({s['norm']})" if k else f"{ALTERNATIVE_LABELS[setting]} ({s['norm']})"
        paper = PAPER_ERROR.get(setting)
        paper_cell = "—" if paper is None else f"{paper}"
        if setting == "bn128":
            paper_cell = "— (their largest is 32 per GPU)"
        if setting == "none":
            paper_cell = "— (not in their table)"
        diverged = f" ({m['diverged']} of {m['seeds']} diverged)" if m["diverged"] else ""
        lines.append(
            f"| {label} | {k or 'independent of the batch'} | {paper_cell} | "
            f"{_pct(m['test_error_mean'])}{diverged} | {spread(m)} |"
        )
    lines += [
        "",
        "Wu & He's values: their Table 2 (the numbers of Fig. 1; BN 23.6, 23.7, 24.8, 27.3, "
        "34.7 and GN 24.1, 24.2, 24.0, 24.2, 24.1 at 32, 16, 8, 4, 2 images per GPU) and "
        "Table 1 (LN 25.3, IN 28.4 at 32 images per GPU), cited from memory of the paper; "
        "its abstract's 10.6-point gap between GN and BN at 2 images per GPU agrees "
        "(34.7 - 24.1).",
        "",
        "## Train/test discrepancy: one trained BN network, evaluated four ways",
        "",
        "Test error % on the same test subset. `running`: BN's running averages (what "
        f"training produced); `alg2`: Algorithm 2's population statistics over "
        f"{POPULATION_BATCHES} training batches of {GLOBAL_BATCH}, with the network in "
        "training mode (for the ghost network: averaged over its k-example sub-batches, "
        "unbiased); `batch_stats_B`: every BN layer uses the mean and variance of the "
        "evaluation batch of B test images itself (the network in BN training mode at "
        "inference, nothing written back; `cnn_arch/evaluators/batch_stats.py`). Mean over "
        "seeds.",
        "",
        "| trained as | " + " | ".join(discrepancy_evals()) + " |",
        "|---|" + "---|" * len(discrepancy_evals()),
    ]
    for setting, per_seed in discrepancy.items():
        cells = [
            _pct(float(np.mean([e[n] for e in per_seed.values()]))) for n in discrepancy_evals()
        ]
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "`batch_stats_1`: with one image the statistics of a conv BN are over that image's "
        "H x W positions per channel (instance normalization with BN's gamma and beta), so "
        "the logits still depend on the image, unlike the exactly constant output of a BN on "
        "a dense layer at batch 1.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="default")
    parser.add_argument("--num_steps", type=int, default=0, help="training steps (0 = the scale's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data_dir", default=_runs.default_data_dir())
    parser.add_argument("--out_dir", default=str(ROOT / "experiments" / "results"))
    parser.add_argument(
        "--workdir", default="", help="kept run folder ('' = a temporary one, removed after)"
    )
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once")
    parser.add_argument(
        "--settings",
        nargs="+",
        default=list(settings()),
        help=f"a subset of the settings (default all: {' '.join(settings())})",
    )
    args = parser.parse_args(argv)
    if any(s < 0 for s in args.seeds):
        raise UserError(f"--seeds={args.seeds}: seeds must be >= 0")
    if len(set(args.seeds)) != len(args.seeds):
        raise UserError(f"--seeds={args.seeds}: a seed is repeated")
    if args.num_steps < 0:
        raise UserError(f"--num_steps={args.num_steps}: it must be >= 1 (0 = the scale's)")
    if args.workers < 1:
        raise UserError(f"--workers={args.workers}: it must be >= 1")
    if not Path(args.data_dir).is_dir():
        raise UserError(f"--data_dir={args.data_dir} is not a directory")
    unknown = sorted(set(args.settings) - set(settings()))
    if unknown:
        raise UserError(f"--settings: {unknown} unknown; choose from {' '.join(settings())}")
    chosen = [s for s in settings() if s in args.settings]  # in the table's order
    scale = SCALES[args.scale]
    num_steps = args.num_steps or scale["steps"]
    if scale["train"] < GLOBAL_BATCH:
        raise UserError(f"the training subset must hold one batch of {GLOBAL_BATCH}")

    import shutil

    from cnn_arch import validate

    work = Path(args.workdir or tempfile.mkdtemp(prefix=f"{NAME}_"))
    jobs, keys = [], []
    for seed in args.seeds:
        for setting in chosen:
            config = config_for(setting, scale, seed, args.data_dir, num_steps)
            validate.validate_config(config, device_count=1)
            jobs.append((str(work / f"{setting}_s{seed}"), config))
            keys.append((setting, seed))
    t0 = time.perf_counter()
    times = _runs.train_all(jobs, workers=args.workers, compilation_cache=str(work / "jax_cache"))
    runs = [collect(w, s, seed, times[w]) for (w, _), (s, seed) in zip(jobs, keys, strict=True)]
    discrepancy: dict[str, dict[str, dict]] = {}
    for (w, _), (setting, seed) in zip(jobs, keys, strict=True):
        if setting in DISCREPANCY_SETTINGS:
            errors = evaluate_discrepancy(w, args.data_dir)
            discrepancy.setdefault(setting, {})[str(seed)] = errors
            print(
                f"{setting} seed {seed}: "
                + ", ".join(f"{n} {100 * e:.1f}%" for n, e in errors.items())
            )
    wall = time.perf_counter() - t0
    summary = summarize(runs, chosen)
    widths = [max(1, round(w * scale["width"])) for w in (16, 32, 64)]
    meta = {
        "command": _runs.command_line(f"{NAME}.py", argv),
        "scale": args.scale,
        **{f"scale_{k}": v for k, v in scale.items()},
        "num_steps": num_steps,
        "global_batch": GLOBAL_BATCH,
        "widths": widths,
        "seeds": args.seeds,
        "wall_seconds": wall,
        "cpu_seconds": float(sum(r["cpu_s"] for r in runs if r["cpu_s"] is not None)),
        "train_wall_seconds_sum": float(sum(r["wall_s"] for r in runs)),
        "workers": args.workers,
        "machine": MACHINE,
        "population_batches": POPULATION_BATCHES,
        "eval_batch_sizes": list(EVAL_BATCH_SIZES),
        "paper_error_percent": PAPER_ERROR,
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{NAME}.json").write_text(
        json.dumps(
            {"meta": meta, "summary": summary, "discrepancy": discrepancy, "runs": runs}, indent=1
        )
    )
    _figure(
        summary,
        discrepancy,
        out_dir / f"{NAME}.png",
        f"ResNet-20 widths {'/'.join(map(str, widths))}, CIFAR-10 train[:{scale['train']}], "
        f"{num_steps} steps of {GLOBAL_BATCH} ({args.scale} scale, seeds {args.seeds})",
    )
    (out_dir / f"{NAME}.md").write_text(_markdown(meta, summary, discrepancy, scale))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    for setting, m in summary.items():
        print(f"{setting:7s} test error {100 * m['test_error_mean']:.1f}%")
    print(f"wrote {out_dir}/{NAME}.md, .json, .png in {wall / 60:.1f} min")
    return {"summary": summary, "discrepancy": discrepancy}


if __name__ == "__main__":
    _runs.run_main(main)
