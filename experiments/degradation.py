"""Degradation: plain-20/56 vs ResNet-20/56 on CIFAR-10 (He et al. 2016 Sec. 4.2, Fig. 6).

The four nets train with the same recipe (``configs/resnet20_cifar10.py``: SGD 0.1,
momentum 0.9, weight decay 1e-4, batch 128, /10 at 50% and 75% of the run, pad-crop
and flip) through the library's loop, scaled down to run on a CPU: narrower (every
stage's width x ``width``), on a training subset, for a few hundred steps. Two
evaluators record over training the error on the test subset and on the first
``train_eval`` training images without augmentation (the training error of Fig. 6 is
measured on the augmented batches; the clean one is the cleaner signal).

The lesson to see: plain-56's training error above plain-20's (degradation), and
ResNet-56's at or below ResNet-20's (shortcuts remove it). Also the gradient norm of
every conv/FC kernel of plain-56 and ResNet-56 at initialisation and after
``grad_step`` steps: each run trains to ``grad_step`` first, its checkpoint gives the
parameters, ``jax.grad`` of the task's loss on one training batch gives the gradients,
then the run resumes to the end (the loop's resume is exact).

    python experiments/degradation.py                   # default scale, ~25 min here
    python experiments/degradation.py --scale=smoke     # a minute, for the tests
Full recipe on an accelerator: configs/{plain20,plain56,resnet20,resnet56}_cifar10.py.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere
sys.path.insert(0, str(ROOT / "experiments"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import _runs  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from cnn_arch.errors import UserError  # noqa: E402

MACHINE = "2-core Xeon CPU (AVX-512/AMX), shared with other jobs"
MODELS = ("plain20", "plain56", "resnet20", "resnet56")
GRAD_MODELS = ("plain56", "resnet56")
# He et al. 2016 Table 6 (test error %, CIFAR-10, full recipe); plain nets: Fig. 6 only.
PAPER_TEST_ERROR = {"resnet20": 8.75, "resnet56": 6.97, "resnet110": 6.43}
SCALES = {
    # width: channels of the three stages are (16, 32, 64) x width; train: training
    # subset; steps at batch 128; test / train_eval: evaluated images; evals: points on
    # the curves; grad_step: when the second gradient profile is taken.
    "default": {
        "width": 0.5,
        "train": 10_000,
        "steps": 500,
        "batch": 128,
        "test": 1_000,
        "train_eval": 1_000,
        "evals": 5,
        "grad_step": 200,
    },
    "smoke": {
        "width": 0.25,
        "train": 512,
        "steps": 6,
        "batch": 32,
        "test": 64,
        "train_eval": 64,
        "evals": 2,
        "grad_step": 3,
    },
}


def config_for(model: str, scale: dict, seed: int, data_dir: str, num_steps: int):
    """The He et al. CIFAR recipe for ``model`` at ``scale``, trained to ``num_steps``
    (the learning-rate steps depend on scale['steps'] only, so a run stopped early and
    resumed is the same run)."""
    c = _runs.scaled_cifar_resnet(
        **{k: scale[k] for k in ("width", "train", "test", "batch", "evals")},
        seed=seed,
        data_dir=data_dir,
        num_steps=num_steps,
        schedule_steps=scale["steps"],
    )
    c.model = model
    c.evals = {
        "eval": {"kind": "running"},
        "train_clean": {"kind": "running", "split": f"train[:{scale['train_eval']}]"},
    }
    return c


def _layer_order(path: str) -> tuple:
    """conv1, then layer<stage>_<unit>/conv<k> in network order, then fc."""
    if path.startswith("fc"):
        return (1,)
    return (0, *[int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)])


def kernel_grad_norms(workdir: str | None, config) -> dict[str, float]:
    """||dL/dW|| of every conv and FC kernel on the run's first training batch (train
    mode, batch BN statistics), for the checkpoint in ``workdir`` or, with None, the
    run's initial parameters (the same seed, so the same network the run starts from)."""
    import jax

    from cnn_arch import run as run_lib

    if workdir is None:
        run = run_lib.build(config)
        state = run.init_state()
    else:
        run, state = run_lib.from_workdir(workdir, data_dir=config.data_dir)
    batch = next(run.train_batches(0))

    def loss(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        outputs, _ = run.model.apply(variables, batch["image"], train=True, mutable=["batch_stats"])
        return run.task.loss(outputs, batch)[0]

    grads = jax.jit(jax.grad(loss))(state.params)
    norms = {}
    for keys, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        names = [str(getattr(k, "key", k)) for k in keys]
        if names[-1] == "kernel":
            norms["/".join(names[:-1])] = float(np.linalg.norm(np.asarray(g)))
    return dict(sorted(norms.items(), key=lambda kv: _layer_order(kv[0])))


def _latest_checkpoint(workdir: Path) -> int:
    folder = workdir / "checkpoints"
    steps = [int(p.name) for p in folder.glob("*") if p.name.isdigit()] if folder.is_dir() else []
    return max(steps, default=0)


def run_model(
    model: str, scale: dict, seed: int, data_dir: str, workdir: Path, resume: bool = False
) -> dict:
    """Trains one net (with its two gradient profiles) and returns every number of it.

    With ``resume``, a workdir an interrupted invocation left continues from its last
    checkpoint (the loop resumes exactly), its saved gradient profiles are kept and a
    finished run (``result.json``) is reused; otherwise the workdir starts fresh."""
    from cnn_arch import train

    result_path, grads_path = workdir / "result.json", workdir / "grad_norms.json"
    if resume and result_path.exists():
        return json.loads(result_path.read_text())
    if workdir.exists() and not resume:
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    grads = json.loads(grads_path.read_text()) if grads_path.exists() else {}
    resumed_from = _latest_checkpoint(workdir)
    t0 = time.perf_counter()
    full = config_for(model, scale, seed, data_dir, scale["steps"])
    if model in GRAD_MODELS:
        if "0" not in grads:
            grads["0"] = kernel_grad_norms(None, full)
            grads_path.write_text(json.dumps(grads))
        later = str(scale["grad_step"])
        if later not in grads:
            if resumed_from > scale["grad_step"]:
                raise UserError(
                    f"{workdir} is past step {later} without its gradient profile; rerun "
                    "without --resume"
                )
            first = config_for(model, scale, seed, data_dir, scale["grad_step"])
            train.train_and_evaluate(first, str(workdir))
            grads[later] = kernel_grad_norms(str(workdir), first)
            grads_path.write_text(json.dumps(grads))
    train.train_and_evaluate(full, str(workdir))  # resumes at grad_step when it stopped there
    wall = time.perf_counter() - t0
    rows = _runs.read_metrics(str(workdir))
    curves = {
        split: [[s, 1.0 - float(r["top1"])] for s, r in rows[split].items()]
        for split in ("eval", "train_clean", "train")
    }
    result = {
        "model": model,
        "seed": seed,
        "train_error": curves["train_clean"][-1][1],
        "test_error": curves["eval"][-1][1],
        "augmented_train_error_last_window": curves["train"][-1][1],
        "curves": curves,  # [step, error]; 'train' is the augmented batches' running mean
        "grad_norms": grads,
        "wall_seconds": wall,  # of this invocation: from resumed_from_step on
        "resumed_from_step": resumed_from,
    }
    result_path.write_text(json.dumps(result))
    return result


def _run_in_worker(model, scale, seed, data_dir, workdir, cache, resume) -> dict:
    """run_model in a spawned process (its own JAX runtime), quiet, sharing the cache."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging

    _runs.use_compilation_cache(cache)
    logging.set_verbosity(logging.WARNING)
    return run_model(model, scale, seed, data_dir, Path(workdir), resume)


def summarize(results: list[dict]) -> dict:
    out = {}
    for model in MODELS:
        runs = [r for r in results if r["model"] == model]
        out[model] = {
            k: {
                "mean": float(np.mean([r[k] for r in runs])),
                "std": float(np.std([r[k] for r in runs])),
            }
            for k in ("train_error", "test_error")
        }
    err = {m: out[m]["train_error"]["mean"] for m in MODELS}
    out["lesson"] = {
        "plain56_above_plain20": err["plain56"] > err["plain20"],
        "resnet56_at_or_below_resnet20": err["resnet56"] <= err["resnet20"],
    }
    out["lesson"]["shown"] = all(out["lesson"].values())
    return out


def _figure(results: list[dict], path: Path, title: str) -> None:
    fig, (train_ax, test_ax, grad_ax) = plt.subplots(1, 3, figsize=(16, 4.5))
    colours = {"plain20": "C0", "plain56": "C3", "resnet20": "C2", "resnet56": "C1"}
    first_seed = results[0]["seed"]
    for r in (r for r in results if r["seed"] == first_seed):
        style = "--" if r["model"].startswith("plain") else "-"
        for ax, split in ((train_ax, "train_clean"), (test_ax, "eval")):
            steps, err = zip(*r["curves"][split], strict=True)
            ax.plot(
                steps,
                100 * np.array(err),
                style,
                marker="o",
                ms=3,
                color=colours[r["model"]],
                label=r["model"],
            )
    train_ax.set_title("training error (training subset, no augmentation)")
    test_ax.set_title("test error (test subset)")
    for ax in (train_ax, test_ax):
        ax.set_xlabel("step")
        ax.set_ylabel("error (%)")
        ax.legend()
    for r in (r for r in results if r["seed"] == first_seed and r["grad_norms"]):
        for (step, norms), style in zip(r["grad_norms"].items(), (":", "-"), strict=True):
            grad_ax.semilogy(
                range(1, len(norms) + 1),
                list(norms.values()),
                style,
                color=colours[r["model"]],
                label=f"{r['model']} step {step}",
            )
    grad_ax.set_xlabel("layer (conv1 ... fc, network order)")
    grad_ax.set_ylabel("||dL/dW|| of the layer's kernel")
    grad_ax.set_title("per-layer gradient norm, one batch")
    grad_ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(meta: dict, summary: dict, results: list[dict], scale: dict) -> str:
    s = scale
    widths = [max(1, round(w * s["width"])) for w in (16, 32, 64)]
    lesson = summary["lesson"]
    verdict = (
        "**The lesson shows at this scale**"
        if lesson["shown"]
        else "**The lesson does not fully show at this scale**"
    )
    lines = [
        "# Degradation: plain vs residual nets on CIFAR-10 (He et al. 2016, Fig. 6)",
        "",
        f"Generated by `{meta['command']}` in {meta['wall_seconds'] / 60:.1f} min on a "
        f"{MACHINE}; seeds {meta['seeds']}.",
        "",
        "Scaled down from the paper's recipe (`configs/resnet20_cifar10.py`, "
        "`configs/resnet56_cifar10.py`, `configs/plain20_cifar10.py`, "
        "`configs/plain56_cifar10.py`: 50k images, 64k iterations of batch 128, "
        "widths 16/32/64): "
        f"stage widths {widths[0]}/{widths[1]}/{widths[2]} (x{s['width']}), "
        f"training subset `train[:{s['train']}]`, {s['steps']} iterations of batch "
        f"{s['batch']} ({s['steps'] * s['batch'] / s['train']:.1f} epochs of the subset), "
        f"learning rate 0.1 /10 at iterations {s['steps'] // 2} and {3 * s['steps'] // 4} "
        "(50% and 75%, as 32k/48k of 64k), momentum 0.9, weight decay 1e-4, pad-crop + flip. "
        f"Training error: the first {s['train_eval']} training images without "
        f"augmentation; test error: `test[:{s['test']}]`.",
        "",
        f"{verdict}: plain-56 training error above plain-20's: "
        f"{lesson['plain56_above_plain20']}; ResNet-56 at or below ResNet-20: "
        f"{lesson['resnet56_at_or_below_resnet20']}.",
        "",
        "![degradation](degradation.png)",
        "",
        "| net | paper test error % (Table 6, full recipe) | ours: training error % | "
        "ours: test error % | wall (s) |",
        "|---|---|---|---|---|",
    ]
    for model in MODELS:
        m = summary[model]
        paper = PAPER_TEST_ERROR.get(model)
        paper_cell = (
            f"{paper}" if paper else "— (Fig. 6: above plain-20's)" if model == "plain56" else "—"
        )
        walls = [r["wall_seconds"] for r in results if r["model"] == model]
        lines.append(
            f"| {model} | {paper_cell} | {100 * m['train_error']['mean']:.2f} ± "
            f"{100 * m['train_error']['std']:.2f} | {100 * m['test_error']['mean']:.2f} ± "
            f"{100 * m['test_error']['std']:.2f} | {np.mean(walls):.0f} |"
        )
    lines += [
        "",
        "Paper, Fig. 6: plain-56 has higher training *and* test error than plain-20 over "
        "the whole run; ResNet-56 lower than ResNet-20. ± is the spread over seeds (0 "
        "with one seed).",
    ]
    resumed = [r for r in results if r.get("resumed_from_step")]
    if resumed:
        lines += [
            "",
            "Resumed runs (`--resume`; the loop resumes bitwise): "
            + "; ".join(
                f"{r['model']} from its step-{r['resumed_from_step']} checkpoint" for r in resumed
            )
            + ". Their wall column counts this invocation only; runs resumed at their last "
            "step were trained by an earlier, interrupted invocation of the same command.",
        ]
    lines += [
        "",
        "## Per-layer gradient norm (right panel)",
        "",
        f"||dL/dW|| for each conv and FC kernel on one training batch of {s['batch']}, at "
        f"initialisation (step 0) and at step {s['grad_step']}, computed with `jax.grad` "
        "of the task's loss on the run's model and checkpoint.",
        "",
        "| net | step | first conv | median layer | last conv | fc |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for step, norms in r["grad_norms"].items():
            values = list(norms.values())
            lines.append(
                f"| {r['model']} (seed {r['seed']}) | {step} | {values[0]:.3g} | "
                f"{np.median(values):.3g} | {values[-2]:.3g} | {values[-1]:.3g} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data_dir", default=_runs.default_data_dir())
    parser.add_argument("--out_dir", default=str(ROOT / "experiments" / "results"))
    parser.add_argument("--workdir", default="", help="'' = a temporary folder, removed after")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the runs an interrupted invocation left in --workdir (reuse finished ones)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="runs trained at once, each in its own process (1 = one after another here)",
    )
    parser.add_argument(
        "--compilation_cache",
        default="",
        help="JAX compilation cache folder; '' = one inside the workdir (the two stages of a "
        "run and the seeds compile the same programs)",
    )
    args = parser.parse_args(argv)
    if any(s < 0 for s in args.seeds):
        raise UserError(f"--seeds={args.seeds}: seeds must be >= 0")
    if args.workers < 1:
        raise UserError(f"--workers={args.workers}: it must be >= 1")
    if not Path(args.data_dir).is_dir():
        raise UserError(f"--data_dir={args.data_dir} is not a directory")

    scale = SCALES[args.scale]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="degradation_"))
    cache = args.compilation_cache or str(work / "jax_cache")
    # Longest first, so that with 2 workers each takes one 56-layer net and one 20-layer net.
    jobs = [
        (m, seed) for seed in args.seeds for m in ("plain56", "resnet56", "plain20", "resnet20")
    ]
    t0 = time.perf_counter()
    results = []

    def report(r: dict) -> None:
        results.append(r)
        print(
            f"{r['model']:9s} seed {r['seed']}: train error {100 * r['train_error']:.2f}% test "
            f"error {100 * r['test_error']:.2f}% ({r['wall_seconds']:.0f} s)",
            flush=True,
        )

    args_of = [
        (m, scale, s, args.data_dir, str(work / f"{m}_s{s}"), cache, args.resume) for m, s in jobs
    ]
    if args.workers == 1:
        for job in args_of:
            report(_run_in_worker(*job))
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=context) as pool:
            for future in concurrent.futures.as_completed(
                [pool.submit(_run_in_worker, *job) for job in args_of]
            ):
                report(future.result())
    results.sort(key=lambda r: (r["seed"], MODELS.index(r["model"])))
    wall = time.perf_counter() - t0
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(results)
    meta = {
        "command": _runs.command_line("degradation.py", argv),
        "scale": args.scale,
        **{f"scale_{k}": v for k, v in scale.items()},
        "seeds": args.seeds,
        "wall_seconds": wall,
        "machine": MACHINE,
        "paper_test_error_percent": PAPER_TEST_ERROR,
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "degradation.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": results}, indent=1)
    )
    _figure(
        results,
        out_dir / "degradation.png",
        f"CIFAR-10, widths x{scale['width']}, {scale['train']} training images, "
        f"{scale['steps']} steps of {scale['batch']} ({args.scale} scale)",
    )
    (out_dir / "degradation.md").write_text(_markdown(meta, summary, results, scale))
    print(f"lesson shown: {summary['lesson']}")
    print(f"wrote {out_dir}/degradation.md, .json, .png in {wall / 60:.1f} min")
    return summary


if __name__ == "__main__":
    _runs.run_main(main)
