"""Accuracy vs cost of the ImageNet zoo (the notes' Fig. 9, after Canziani et al. 2016).

For every ImageNet model of the zoo: its published top-1 (for the 29 models torchvision
documents, its ``IMAGENET1K_V1`` weight metadata, ``acc@1`` on the ImageNet-1k
validation set, 224x224 centre crop, https://docs.pytorch.org/vision/stable/models.html;
for the others, the paper's own table, cited per model in ``PAPER_TOP1``; none for
``preact_resnet18`` and ``inception_v1``, whose papers give no ImageNet top-1),
multiply-adds and parameters counted by the library (``cnn_arch.models.cost``) on our
Flax model at its input size with 1000 classes, and inference throughput measured here: the
library's jitted eval step (``cnn_arch.benchmark``'s synthetic run, the same step
``--eval`` times) at batch 1 and batch 32, median of a few timed steps after one
warm-up step. Figure: top-1 vs GMACs, bubble area = parameters.

    python experiments/accuracy_vs_cost.py --workdir=W      # all 40 models
    python experiments/accuracy_vs_cost.py --scale=smoke    # two small nets, for tests
``--workdir`` keeps each timed model's row, so an interrupted run goes on where it
stopped. On a GPU the same command times the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere

import _runs  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cnn_arch.errors import UserError  # noqa: E402

MACHINE = "2-core Xeon CPU (AVX-512/AMX), shared with other jobs"
SOURCE = (
    "torchvision.models weight metadata, IMAGENET1K_V1 acc@1 "
    "(https://docs.pytorch.org/vision/stable/models.html)"
)
# torchvision's documented ImageNet-1k top-1 (%) of its IMAGENET1K_V1 weights.
TORCHVISION_TOP1: dict[str, float] = {
    "alexnet": 56.522,
    "vgg11": 69.020,
    "vgg11_bn": 70.370,
    "vgg13": 69.928,
    "vgg13_bn": 71.586,
    "vgg16": 71.592,
    "vgg16_bn": 73.360,
    "vgg19": 72.376,
    "vgg19_bn": 74.218,
    "resnet18": 69.758,
    "resnet34": 73.314,
    "resnet50": 76.130,
    "resnet101": 77.374,
    "resnet152": 78.312,
    "resnext50_32x4d": 77.618,
    "resnext101_32x8d": 79.312,
    "wide_resnet50_2": 78.468,
    "wide_resnet101_2": 78.848,
    "densenet121": 74.434,
    "densenet161": 77.138,
    "densenet169": 75.600,
    "densenet201": 76.896,
    "googlenet": 69.778,
    "squeezenet1_0": 58.092,
    "squeezenet1_1": 58.178,
    "shufflenet_v2_x0_5": 60.552,
    "shufflenet_v2_x1_0": 69.362,
    "shufflenet_v2_x1_5": 72.996,
    "shufflenet_v2_x2_0": 76.230,
}
# The zoo's other ImageNet models: top-1 % from the paper that defines each, and where.
# Not torchvision's protocol: read the source column before comparing across it.
PAPER_TOP1: dict[str, tuple[float | None, str]] = {
    "alexnet_paper": (59.3, "Krizhevsky et al. 2012, Table 2: 1 CNN, 40.7% top-1 val error"),
    # The BN paper's 72.2% "Inception" is its 3x3-pair variant without BN, not GoogLeNet.
    "inception_v1": (None, "none: Szegedy et al. 2014 give top-5 only (Table 3: 10.07%, 1 crop)"),
    "bn_inception": (74.8, "Ioffe & Szegedy 2015, Fig. 4: 25.2% top-1 error, 1 crop (BN-x30)"),
    "mobilenet_v1": (70.6, "Howard et al. 2017, Table 8: 1.0 MobileNet-224"),
    "plain18": (72.06, "He et al. 2016, Table 2: 27.94% top-1 error, 10-crop"),
    "plain34": (71.46, "He et al. 2016, Table 2: 28.54% top-1 error, 10-crop"),
    "se_resnet50": (76.71, "Hu et al. 2018, Table 2: 23.29% top-1 error, 224 single crop"),
    "se_resnet101": (77.62, "Hu et al. 2018, Table 2: 22.38% top-1 error, 224 single crop"),
    "se_resnet152": (78.43, "Hu et al. 2018, Table 2: 21.57% top-1 error, 224 single crop"),
    "se_resnext50_32x4d": (79.03, "Hu et al. 2018, Table 2: 20.97% top-1 error, 224 single crop"),
    "preact_resnet18": (None, "none: He et al. 2016b report ImageNet for 152/200 layers only"),
}
PUBLISHED = {**{m: (t, "torchvision") for m, t in TORCHVISION_TOP1.items()}, **PAPER_TOP1}
SCALES = {
    # models; batch sizes timed; timed steps per batch size (after one warm-up step)
    "default": {"models": list(PUBLISHED), "batches": (1, 32), "steps": {1: 5, 32: 2}},
    "smoke": {"models": ["squeezenet1_1", "alexnet"], "batches": (1, 2), "steps": {1: 1, 2: 1}},
}


def counts(name: str) -> dict[str, float]:
    """Parameters and multiply-adds (conv + dense, batch 1) of our model at 224x224x3."""
    from cnn_arch import models
    from cnn_arch.models import cost

    model = models.create(name, num_classes=1000)
    shape = models.spec(name).input_shape
    return {"params": cost.model_params(model, shape), "gmacs": cost.model_macs(model, shape) / 1e9}


def throughput(name: str, batch_size: int, steps: int) -> dict[str, float]:
    """img/s of the library's jitted eval step on random 224x224 images (median of
    ``steps`` timed steps after one warm-up), with its CPU seconds and compile time."""
    from cnn_arch import benchmark, models, schema
    from cnn_arch import steps as steps_lib
    from cnn_arch.evaluators.base import jit_eval_step

    config = schema.default_config()
    config.model = name
    config.batch_size = batch_size
    config.num_classes = 1000
    run = benchmark.synthetic_run(config, models.spec(name).input_shape)
    state = run.init_state()
    batch = benchmark.synthetic_batch(run, batch_size)
    compiled = benchmark.compile_step(
        jit_eval_step(run, steps_lib.inference(run.model)), state.variables, batch
    )
    wall, cpu = benchmark.time_alternating(
        {"eval": lambda: compiled.fn(state.variables, batch)}, steps, warmup=1
    )
    median = statistics.median(wall["eval"])
    return {
        "images_per_sec": batch_size / median,
        "ms_per_step": 1e3 * median,
        "cpu_ms_per_step": 1e3 * statistics.median(cpu["eval"]),
        "compile_seconds": compiled.compile_seconds,
        "timed_steps": steps,
    }


def _figure(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(11, 7))
    largest = max(r["params"] for r in rows)
    speeds = [r["throughput"]["32"]["images_per_sec"] for r in rows if "32" in r["throughput"]]
    for r in rows:
        if r["top1"] is None:
            continue  # no published top-1 to place it at
        area = 2500 * r["params"] / largest
        paper = r["top1_source"] != "torchvision"
        ax.scatter(
            r["gmacs"],
            r["top1"],
            s=area,
            alpha=0.45,
            edgecolors="r" if paper else "k",
            linestyles="--" if paper else "-",
        )
        ax.annotate(r["model"], (r["gmacs"], r["top1"]), fontsize=7, ha="center", va="center")
    ax.set_xscale("log")
    ax.set_xlabel("GMACs per image at the model's input size (cnn_arch.models.cost, log scale)")
    ax.set_ylabel("top-1 % (black: torchvision IMAGENET1K_V1; red dashed: the paper's)")
    note = f"; img/s at batch 32 here: {min(speeds):.1f} to {max(speeds):.0f}" if speeds else ""
    ax.set_title(f"ImageNet accuracy vs cost; bubble area = parameters{note}")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(meta: dict, rows: list[dict]) -> str:
    batches = meta["batches"]
    big = str(max(batches))
    lines = [
        "# Accuracy vs cost of the ImageNet zoo (the notes' Fig. 9; Canziani et al. 2016)",
        "",
        f"Generated by `{meta['command']}` in {meta['wall_seconds'] / 60:.1f} min on a "
        f"{MACHINE} (load average {meta['load_average'][0]:.1f} at the start, "
        f"{meta['load_average'][1]:.1f} at the end; no GPU in this run). Top-1: {SOURCE} "
        "for the models marked torchvision; for the zoo's other ImageNet models, the paper "
        "cited in the source column (its protocol, e.g. 10-crop, is not torchvision's: "
        "compare within a source). GMACs and parameters: `cnn_arch.models.cost` on our "
        "Flax models (at the model's input size, 224x224x3 except alexnet_paper's 227; "
        "1000 classes; GMACs count conv + dense multiply-adds, torchvision's GFLOPS "
        "convention). Throughput: the library's jitted eval step (`cnn_arch.benchmark`'s "
        "synthetic run and `compile_step`/`time_alternating`, as `python -m "
        "cnn_arch.benchmark --eval`), random images, float32, median of "
        + ", ".join(f"{meta['steps'][str(b)]} timed steps at batch {b}" for b in batches)
        + " after one warm-up step each: a few steps on a shared machine, so read the "
        f"img/s as +-20%; img per CPU-second (batch {big}, all the process's threads) moves "
        "less with the machine's other load.",
        "",
        "![accuracy vs cost](accuracy_vs_cost.png)",
        "",
        "| model | top-1 % | source | GMACs | params (M) | "
        + " | ".join(f"img/s batch {b}" for b in batches)
        + f" | img/CPU-s batch {big} |",
        "|---|---|---|---|---|" + "---|" * (len(batches) + 1),
    ]
    for r in sorted(rows, key=lambda r: r["gmacs"]):
        speeds = " | ".join(f"{r['throughput'][str(b)]['images_per_sec']:.1f}" for b in batches)
        per_cpu = int(big) / (r["throughput"][big]["cpu_ms_per_step"] / 1e3)
        top1 = f"{r['top1']:.2f}" if r["top1"] is not None else "—"
        lines.append(
            f"| {r['model']} | {top1} | {r['top1_source']} | {r['gmacs']:.3f} | "
            f"{r['params'] / 1e6:.2f} | {speeds} | {per_cpu:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="default")
    parser.add_argument("--models", default="", help="comma-separated subset ('' = the scale's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="unused: no training")
    parser.add_argument("--out_dir", default=str(ROOT / "experiments" / "results"))
    parser.add_argument(
        "--workdir", default="", help="keeps each timed model's row; a rerun reuses them"
    )
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    names = [m for m in args.models.split(",") if m] or scale["models"]
    unknown = [m for m in names if m not in PUBLISHED]
    if unknown:
        raise UserError(
            f"--models: {unknown} are not ImageNet zoo models; choose from {', '.join(PUBLISHED)}"
        )
    kept = Path(args.workdir) if args.workdir else None
    if kept is not None:
        kept.mkdir(parents=True, exist_ok=True)
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    t0 = time.perf_counter()
    load_start = os.getloadavg()[0]
    rows = []
    for name in names:
        saved = kept / f"{name}.json" if kept is not None else None
        if saved is not None and saved.exists():
            row = json.loads(saved.read_text())
            timed = {int(b): t["timed_steps"] for b, t in row["throughput"].items()}
            if timed == scale["steps"]:
                rows.append(row)  # timed by an earlier invocation with this --workdir
                continue
        top1, source = PUBLISHED[name]
        row = {"model": name, "top1": top1, "top1_source": source, **counts(name)}
        row["throughput"] = {
            str(b): throughput(name, b, scale["steps"][b]) for b in scale["batches"]
        }
        if saved is not None:
            saved.write_text(json.dumps(row, indent=1))
        rows.append(row)
        shown = ", ".join(
            f"b{b} {row['throughput'][str(b)]['images_per_sec']:.1f} img/s"
            for b in scale["batches"]
        )
        print(
            f"{name:20s} top-1 {top1 if top1 is not None else '-'}  {row['gmacs']:.3f} GMACs  "
            f"{row['params'] / 1e6:.2f} M params  {shown}",
            flush=True,
        )
    wall = time.perf_counter() - t0
    meta = {
        "command": " ".join(
            ["python experiments/accuracy_vs_cost.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "scale": args.scale,
        "batches": list(scale["batches"]),
        "steps": {str(b): s for b, s in scale["steps"].items()},
        "warmup_steps": 1,
        "wall_seconds": wall,
        "load_average": [load_start, os.getloadavg()[0]],
        "machine": MACHINE,
        "top1_source": SOURCE,
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "accuracy_vs_cost.json").write_text(
        json.dumps({"meta": meta, "models": rows}, indent=1)
    )
    _figure(rows, out_dir / "accuracy_vs_cost.png")
    (out_dir / "accuracy_vs_cost.md").write_text(_markdown(meta, rows))
    print(f"wrote {out_dir}/accuracy_vs_cost.md, .json, .png in {wall / 60:.1f} min")
    return rows


if __name__ == "__main__":
    _runs.run_main(main)
