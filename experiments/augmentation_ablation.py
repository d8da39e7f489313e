"""Does augmentation help? ResNet-20 on CIFAR-10 with none / flip / crop+flip / +colour /
RandAugment / mixup at one fixed budget: train and test accuracy and their gap.

The notes' point (Sec. 3): augmentation enlarges the training set and so reduces
overfitting. To see overfitting within a CPU budget the runs train on a subset of the
training split (``--scale=full``: 5,000 images, 20 epochs, i.e. 100k training images and
50k evaluated images per variant; about an hour for the six variants at ~200 img/s, an
estimate, not a measurement), with the ResNet-20 recipe of ``configs/resnet20_cifar10.py``
(He et al. 2016, Sec. 4.2) but a cosine schedule fitted to the budget. Every run goes through the
library's loop, ``cnn_arch.train.train_and_evaluate``; two evaluators measure the network
as trained on the test split (``eval``) and on the same training images without
augmentation (``train_clean``, the eval spec), so the gap is train minus test accuracy.

    python experiments/augmentation_ablation.py                  # full: ~1 h (estimate)
    python experiments/augmentation_ablation.py --scale=smoke    # minutes, for tests
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere

import _runs  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cnn_arch import train  # noqa: E402
from configs import resnet20_cifar10  # noqa: E402

MACHINE = "2-core Xeon CPU (AVX-512/AMX), shared"
CROP_FLIP = "pad_crop(4)|flip_lr"
VARIANTS = {
    "none": "normalize",
    "flip": "flip_lr|normalize",
    "crop+flip": f"{CROP_FLIP}|normalize",
    "+colour": f"{CROP_FLIP}|color_jitter(0.4, 0.4, 0.4)|pca_lighting(0.1)|normalize",
    "RandAugment": f"{CROP_FLIP}|randaugment(2, 9)|normalize",
    "mixup": f"{CROP_FLIP}|normalize|mixup(0.2)",
}
SCALES = {
    # train images, epochs, test images, images of the training subset re-evaluated
    "full": {"train": 5_000, "epochs": 20, "test": 5_000, "evals": 5},
    "smoke": {"train": 256, "epochs": 2, "test": 200, "evals": 2},
}


def config_for(variant: str, scale: dict, seed: int, data_dir: str):
    """The ResNet-20 recipe on the training subset with one augmentation variant."""
    c = resnet20_cifar10.get_config()
    c.data_dir = data_dir
    c.train_split = f"train[:{scale['train']}]"
    c.eval_split = f"test[:{scale['test']}]"
    c.train_pp = VARIANTS[variant]
    c.seed = seed
    c.num_epochs = float(scale["epochs"])
    c.schedule = "cosine"  # the paper's steps at 50%/75% assume 164 epochs
    c.lr_decay_epochs = ()
    c.shuffle_buffer = scale["train"]
    steps_per_epoch = scale["train"] // c.batch_size
    c.steps_per_eval = max(1, steps_per_epoch * scale["epochs"] // scale["evals"])
    c.log_every_steps = max(1, min(50, c.steps_per_eval))
    c.checkpoint_every_steps = 10**9  # one final checkpoint; runs are short
    c.evals = {
        "eval": {"kind": "running"},
        "train_clean": {"kind": "running", "split": c.train_split},
    }
    return c


def _rows(workdir: Path) -> list[dict]:
    with open(workdir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def run_variant(variant: str, scale: dict, seed: int, data_dir: str, workdir: Path) -> dict:
    done = workdir / "result.json"
    if done.exists():  # finished by an earlier invocation with the same --workdir
        result = json.loads(done.read_text())
        if result["train_pp"] == VARIANTS[variant]:
            return result
    if workdir.exists():
        shutil.rmtree(workdir)  # an unfinished run starts afresh, never resumed mid-way
    t0 = time.perf_counter()
    train.train_and_evaluate(config_for(variant, scale, seed, data_dir), str(workdir))
    wall = time.perf_counter() - t0
    rows = _rows(workdir)
    curve = {
        name: [(r["step"], r["top1"]) for r in rows if r["split"] == name]
        for name in ("eval", "train_clean")
    }
    test, train_acc = curve["eval"][-1][1], curve["train_clean"][-1][1]
    result = {
        "variant": variant,
        "train_pp": VARIANTS[variant],
        "seed": seed,
        "test_top1": test,
        "train_top1": train_acc,
        "gap": train_acc - test,
        "curves": curve,
        "wall_seconds": wall,
    }
    done.write_text(json.dumps(result))
    return result


def summarize(results: list[dict]) -> dict[str, dict]:
    """Mean and spread over seeds per variant, in VARIANTS order."""
    out = {}
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant]
        if not runs:
            continue
        out[variant] = {
            key: {
                "mean": float(np.mean([r[key] for r in runs])),
                "std": float(np.std([r[key] for r in runs])),
            }
            for key in ("train_top1", "test_top1", "gap")
        }
    return out


def _figure(summary: dict, results: list[dict], path: Path, title: str) -> None:
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(12, 4.2))
    names = list(summary)
    x = np.arange(len(names))
    for offset, key, label in ((-0.2, "train_top1", "train (no aug.)"), (0.2, "test_top1", "test")):
        bars.bar(
            x + offset,
            [100 * summary[n][key]["mean"] for n in names],
            0.4,
            yerr=[100 * summary[n][key]["std"] for n in names],
            label=label,
        )
    for i, n in enumerate(names):
        bars.text(i, 2, f"gap\n{100 * summary[n]['gap']['mean']:.1f}", ha="center", fontsize=8)
    bars.set_xticks(x, names)
    bars.set_ylabel("top-1 accuracy (%)")
    bars.set_ylim(0, 100)
    bars.legend(loc="upper right")
    bars.set_title("final accuracy (mean over seeds)")
    for i, n in enumerate(names):
        run = next(r for r in results if r["variant"] == n)
        for split, style in (("train_clean", "--"), ("eval", "-")):
            steps, top1 = zip(*run["curves"][split], strict=True)
            curves.plot(
                steps,
                100 * np.array(top1),
                style,
                color=f"C{i}",
                label=n if split == "eval" else None,
            )
    curves.set_xlabel("step")
    curves.set_ylabel("top-1 (%): test solid, train dashed")
    curves.legend(fontsize=8)
    curves.set_title(f"first seed, {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--data_dir",
        default=os.environ.get(
            "TFDS_DATA_DIR", str(ROOT.parent / "shared" / "tensorflow_datasets")
        ),
    )
    parser.add_argument("--out_dir", default=str(ROOT / "experiments" / "results"))
    parser.add_argument(
        "--workdir",
        default="",
        help="'' = a temporary folder, removed after; a kept one lets a rerun skip done variants",
    )
    args = parser.parse_args(argv)

    scale = SCALES[args.scale]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="augmentation_ablation_"))
    t0 = time.perf_counter()
    results = []
    for seed in args.seeds:
        for variant in args.variants:
            result = run_variant(variant, scale, seed, args.data_dir, work / f"{variant}_s{seed}")
            results.append(result)
            print(
                f"{variant:12s} seed {seed}: train {100 * result['train_top1']:.2f}% test "
                f"{100 * result['test_top1']:.2f}% gap {100 * result['gap']:.2f} "
                f"({result['wall_seconds']:.0f} s)",
                flush=True,
            )
    wall = time.perf_counter() - t0
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(results)

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = "python experiments/augmentation_ablation.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    meta = {
        "command": command.strip(),
        "scale": args.scale,
        **{f"scale_{k}": v for k, v in scale.items()},
        "seeds": args.seeds,
        "wall_seconds": wall,
        "machine": MACHINE,
    }
    (out_dir / "augmentation_ablation.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": results}, indent=1)
    )
    _figure(
        summary,
        results,
        out_dir / "augmentation_ablation.png",
        f"ResNet-20, {scale['train']} CIFAR-10 images, {scale['epochs']} epochs",
    )
    lines = [
        "# Augmentation ablation: ResNet-20 on CIFAR-10",
        "",
        f"Generated by `{meta['command']}` in {wall / 60:.0f} min on a {MACHINE} (the "
        f"runs' own training times, also of runs reused from a kept --workdir: "
        f"{sum(r['wall_seconds'] for r in results) / 60:.0f} min), seeds "
        f"{args.seeds}. ResNet-20 ({scale['train']} training images = "
        f"`train[:{scale['train']}]`, {scale['epochs']} epochs, batch 128, SGD 0.1 momentum "
        f"0.9, weight decay 1e-4, cosine), tested on `test[:{scale['test']}]`. `train` is "
        "the accuracy on the same training images without augmentation (the eval spec); "
        "gap = train - test. Source for the question: the notes' Sec. 3 (augmentation "
        "reduces overfitting); no paper reports this exact budget, so there is no source "
        "column.",
        "",
        "![ablation](augmentation_ablation.png)",
        "",
        "| variant | train_pp | train top-1 % | test top-1 % | gap (points) |",
        "|---|---|---|---|---|",
    ]
    for variant, s in summary.items():
        cells = [
            f"{100 * s[k]['mean']:.2f}"
            + (f" ± {100 * s[k]['std']:.2f}" if len(args.seeds) > 1 else "")
            for k in ("train_top1", "test_top1", "gap")
        ]
        spec = VARIANTS[variant].replace("|", "\\|")  # a bare | would split the table cell
        lines.append(f"| {variant} | `{spec}` | " + " | ".join(cells) + " |")
    (out_dir / "augmentation_ablation.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out_dir}/augmentation_ablation.md, .json, .png in {wall / 60:.1f} min")
    return summary


if __name__ == "__main__":
    _runs.run_main(main)
