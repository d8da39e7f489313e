"""Figure 1 of Ioffe & Szegedy 2015 (Sec. 4.1): the MNIST MLP with and without BN.

    python experiments/bn_mnist.py [--num_steps=50000] [--seeds=0,1,2] [--workers=2]

Both networks of ``configs/bn_mnist.py`` (3 hidden layers of 100 sigmoid units, small
Gaussian init, softmax cross-entropy, SGD on mini-batches of 60; BN before each sigmoid
in the second) are trained by the library's loop for every seed. Every 500 steps the
loop's evaluators record (a) the test accuracy over the 10,000 test digits and (b, c)
the 15th/50th/85th percentiles of the input to the first sigmoid of the last hidden
layer on the same 10,000 test digits.

The paper states no learning rate. Unless ``--learning_rate`` is given, one rate for
both networks is chosen first: each rate of ``--lr_grid`` trains both networks for
``--sweep_steps`` steps on train[:50000] (seed 0) and is scored on the held-out
train[50000:]; the rate with the best mean validation accuracy of the two wins. The test
split is not looked at until the chosen rate is trained.

Writes ``bn_mnist.json`` (every curve, the sweep, the table, wall times), ``bn_mnist.md``
(the table beside the paper's claims, command, machine, seeds) and ``bn_mnist.png``
(three panels like Fig. 1). Workdirs go to ``--work_root``; finished ones are reused.
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

from configs import bn_mnist  # noqa: E402

NAME = "bn_mnist"
NETWORKS = ("baseline", "bn")
LABELS = {"baseline": "Without BN", "bn": "With BN"}
TABLE_STEPS = (1_000, 5_000, 10_000, 20_000, 50_000)
PERCENTILES = ("p15", "p50", "p85")


def network_config(network: str, args, *, seed: int, lr: float, steps: int, sweep: bool):
    c = bn_mnist.get_config(network)
    c.data_dir = args.data_dir
    c.seed = seed
    c.learning_rate = lr
    c.num_train_steps = steps
    c.checkpoint_every_steps = steps
    c.shuffle_buffer = args.shuffle_buffer
    if sweep:  # validation on the last 10,000 training digits; test untouched
        c.train_split, c.eval_split = "train[:50000]", "train[50000:]"
        c.log_every_steps = c.steps_per_eval = steps
        c.evals = {"eval": {"kind": "running"}}
    else:
        c.log_every_steps = args.log_every
        c.steps_per_eval = args.eval_every
        c.evals.sigmoid.num_images = args.num_images
    return c


def sweep_learning_rate(args) -> tuple[float, dict]:
    """The rate of ``--lr_grid`` with the best mean validation accuracy of both networks."""
    jobs, index = [], {}
    for lr in args.lr_grid:
        for network in NETWORKS:
            workdir = os.path.join(args.work_root, f"sweep_{network}_lr{lr:g}_n{args.sweep_steps}")
            jobs.append(
                (
                    workdir,
                    network_config(
                        network, args, seed=0, lr=lr, steps=args.sweep_steps, sweep=True
                    ),
                )
            )
            index[(lr, network)] = workdir
    print(f"learning-rate sweep: {len(jobs)} runs of {args.sweep_steps} steps")
    walls = _runs.train_all(jobs, args.workers, compilation_cache=args.compilation_cache)
    table = {}
    for lr in args.lr_grid:
        accuracy = {}
        for network in NETWORKS:
            rows = _runs.read_metrics(index[(lr, network)])["eval"]
            accuracy[network] = float(rows[max(rows)]["top1"])
        table[f"{lr:g}"] = {**accuracy, "mean": float(np.mean(list(accuracy.values())))}
    best = max(args.lr_grid, key=lambda lr: table[f"{lr:g}"]["mean"])
    return best, {
        "grid": list(args.lr_grid),
        "steps": args.sweep_steps,
        "train_split": "train[:50000]",
        "eval_split": "train[50000:]",
        "validation_top1": table,
        "chosen": best,
        "run_seconds": {os.path.basename(w): t for w, t in walls.items()},
    }


def curves(workdir: str) -> dict[str, list]:
    rows = _runs.read_metrics(workdir)
    steps, top1 = _runs.series(rows["eval"], "top1")
    rates = _runs.series(rows["train"], "steps_per_sec")[1]
    out = {"steps": steps, "top1": top1, "train_steps_per_sec_median": float(np.median(rates))}
    act_steps = sorted(rows["sigmoid"])
    assert act_steps == steps, f"{workdir}: eval and sigmoid steps differ"
    for key in PERCENTILES:
        out[key] = _runs.series(rows["sigmoid"], key)[1]
    return out


def at_step(c: dict, key: str, step: int) -> float:
    return c[key][c["steps"].index(step)]


def stats(values: list[float]) -> dict:
    v = np.asarray(values, np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "values": [float(x) for x in v],
    }


def drift(by_seed: dict, start: int, end: int) -> dict:
    """How the plotted unit's sigmoid input moved from ``start`` to ``end``, over seeds."""
    median_change, spread_start, spread_end = [], [], []
    for c in by_seed.values():
        median_change.append(at_step(c, "p50", end) - at_step(c, "p50", start))
        spread_start.append(at_step(c, "p85", start) - at_step(c, "p15", start))
        spread_end.append(at_step(c, "p85", end) - at_step(c, "p15", end))
    return {
        "median_change": stats(median_change),
        "spread_15_85_start": stats(spread_start),
        "spread_15_85_end": stats(spread_end),
        "spread_15_85_change": stats(np.subtract(spread_end, spread_start).tolist()),
    }


def summarize(runs: dict[str, dict[int, dict]], num_steps: int) -> dict:
    """Accuracy at the table's steps and the drift of the sigmoid input, mean/std/min/max
    over seeds, per network."""
    logged = next(iter(next(iter(runs.values())).values()))["steps"]
    table_steps = [s for s in TABLE_STEPS if s in logged] or [logged[-1]]
    # The drift is measured from step 1,000 (the table's first row) when the run is longer,
    # and once more from step 10,000 (after the early phase).
    start = TABLE_STEPS[0] if TABLE_STEPS[0] in logged[:-1] else logged[0]
    end = logged[-1]
    out = {"table_steps": table_steps, "drift_from": start, "drift_to": end}
    late = TABLE_STEPS[2] if TABLE_STEPS[2] in logged[:-1] else None
    if late:
        out["late_drift_from"] = late
    for network, by_seed in runs.items():
        net = {"top1": {}, "drift": drift(by_seed, start, end)}
        for step in table_steps:
            net["top1"][str(step)] = stats([at_step(c, "top1", step) for c in by_seed.values()])
        if late:
            net["late_drift"] = drift(by_seed, late, end)
        out[network] = net
    return out


def unit_analysis(args, lr: float, seeds: list[int], index: dict) -> dict:
    """Every unit of the last hidden layer, not only the plotted one: each network's
    per-unit 15/50/85th percentiles (same fixed test images) at step 1,000 and at the
    end, and for BN the learned scale gamma and shift beta of those units. The step-1,000
    states come from twin runs trained to step 1,000 (same seed: the same first 1,000
    steps, the schedule being constant), restored with the library's run builder."""
    from cnn_arch import run as run_lib
    from cnn_arch.evaluators.activations import Activations

    start = TABLE_STEPS[0]
    jobs, twins = [], {}
    for seed in seeds:
        for network in NETWORKS:
            workdir = os.path.join(args.work_root, f"{network}_lr{lr:g}_s{seed}_n{start}")
            config = network_config(network, args, seed=seed, lr=lr, steps=start, sweep=False)
            jobs.append((workdir, config))
            twins[(network, seed)] = workdir
    print(f"every unit: {len(jobs)} twin runs of {start} steps")
    _runs.train_all(jobs, args.workers, compilation_cache=args.compilation_cache)
    _runs.use_compilation_cache(args.compilation_cache)

    def percentiles(workdir: str, network: str):
        run, state = run_lib.from_workdir(workdir)
        module = bn_mnist.SIGMOID_INPUT[network]
        probe = Activations(name="all", run=run, module=module, num_images=args.num_images)
        p = np.percentile(probe.features(state.variables), [15, 50, 85], axis=0)  # (3, units)
        norm = state.params[module] if network == "bn" else None  # gamma and beta
        return p, norm

    out: dict = {"from_step": start, "to_step": args.num_steps}
    for network in NETWORKS:
        per_seed = []
        for seed in seeds:
            p0, norm0 = percentiles(twins[(network, seed)], network)
            p1, norm1 = percentiles(index[(network, seed)], network)
            spread0, spread1 = p0[2] - p0[0], p1[2] - p1[0]
            row = {
                "mean_abs_median_change": float(np.mean(np.abs(p1[1] - p0[1]))),
                "mean_spread_start": float(np.mean(spread0)),
                "mean_spread_end": float(np.mean(spread1)),
                "median_spread_ratio": float(np.median(spread1 / spread0)),
                "fraction_units_spread_grew": float(np.mean(spread1 > spread0)),
            }
            if norm1 is not None:
                row["mean_gamma_start"] = float(np.mean(np.abs(norm0["scale"])))
                row["mean_gamma_end"] = float(np.mean(np.abs(norm1["scale"])))
                row["mean_abs_beta_end"] = float(np.mean(np.abs(norm1["bias"])))
            per_seed.append(row)
        out[network] = {
            key: {
                "mean": float(np.mean([r[key] for r in per_seed])),
                "std": float(np.std([r[key] for r in per_seed], ddof=1)) if len(seeds) > 1 else 0.0,
                "values": [r[key] for r in per_seed],
            }
            for key in per_seed[0]
        }
    return out


def plot(runs: dict, path: str, seed_shown: int) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for network, color in zip(NETWORKS, ("tab:blue", "tab:red"), strict=True):
        by_seed = runs[network]
        steps = next(iter(by_seed.values()))["steps"]
        acc = np.array([c["top1"] for c in by_seed.values()])
        ax.plot(steps, acc.mean(0), color=color, label=f"{LABELS[network]} (mean of {len(acc)})")
        ax.fill_between(steps, acc.min(0), acc.max(0), color=color, alpha=0.25, lw=0)
    ax.set_ylim(0.7, 1.0)
    ax.set_xlabel("training steps")
    ax.set_ylabel("test accuracy")
    ax.set_title("(a) test accuracy (band: min-max over seeds)")
    ax.legend(loc="lower right")
    limits = []
    for ax, network, letter in zip(axes[1:], NETWORKS, "bc", strict=True):
        c = runs[network][seed_shown]
        for key, style in zip(PERCENTILES, (":", "-", ":"), strict=True):
            ax.plot(c["steps"], c[key], style, color="k", label=f"{key[1:]}th percentile")
            limits += c[key]
        ax.set_xlabel("training steps")
        ax.set_title(f"({letter}) {LABELS[network]}: input to one sigmoid (seed {seed_shown})")
        ax.legend(loc="lower right", fontsize=8)
    lo, hi = min(limits), max(limits)
    pad = 0.05 * (hi - lo)
    for ax in axes[1:]:
        ax.set_ylim(lo - pad, hi + pad)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pm(s: dict, scale: float = 1.0, digits: int = 2) -> str:
    return f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"


def timing_line(report: dict) -> str:
    """This invocation's wall time and the training runs' own recorded times (runs
    trained by an earlier invocation are reused and report the times they took then)."""
    runs = dict(report["run_seconds"])
    runs.update(report.get("lr_sweep", {}).get("run_seconds", {}))
    walls = [t["wall_s"] for t in runs.values()]
    cpus = [t["cpu_s"] for t in runs.values() if t["cpu_s"] is not None]
    reused = sum(t.get("reused", False) for t in runs.values())
    text = (
        f"the {len(runs)} training runs took {sum(walls) / 60:.1f} min of wall time in all "
        f"({report['workers']} at a time on the shared machine) and "
        f"{sum(cpus) / 60:.1f} min of CPU time ({len(cpus)} of them measured)"
    )
    if reused:
        text += f"; {reused} were trained by an earlier invocation and reused"
    return text + f"; this invocation: {report['wall_seconds'] / 60:.1f} min wall."


def write_markdown(report: dict, path: str) -> None:
    summary = report["summary"]
    seeds = report["seeds"]
    lines = [
        "# Figure 1 of the BN paper (Ioffe & Szegedy 2015, Sec. 4.1): MNIST MLP, with and "
        "without BN",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; seeds {', '.join(map(str, seeds))}; "
        f"{report['workers']} runs at a time.  ",
        f"Time: {timing_line(report)}",
        "",
        "Network: 784-100-100-100-10, sigmoid, weights N(0, 0.1^2), softmax cross-entropy, "
        f"plain SGD, {report['num_steps']:,} steps of 60, learning rate "
        f"{report['learning_rate']:g} for both networks; BN before each sigmoid in the "
        "second network (no hidden bias there). Test accuracy over all 10,000 test digits; "
        f"sigmoid input = unit {report['unit']} of the last hidden layer (its pre-activation: "
        "`hidden3` output without BN, `hidden3_norm` output with BN), percentiles over the "
        f"first {report['num_images']:,} test digits; both every {report['eval_every']} steps.",
        "",
    ]
    sweep = report.get("lr_sweep")
    if sweep:
        lines += [
            "## Learning rate (the paper gives none)",
            "",
            f"Each rate trained both networks for {sweep['steps']:,} steps on "
            f"{sweep['train_split']} (seed 0); validation accuracy on {sweep['eval_split']}. "
            f"Chosen: the best mean of the two, **{sweep['chosen']:g}**.",
            "",
            "| learning rate | without BN | with BN | mean |",
            "| --- | --- | --- | --- |",
        ]
        for lr, row in sweep["validation_top1"].items():
            lines.append(
                f"| {lr} | {100 * row['baseline']:.2f}% | {100 * row['bn']:.2f}% | "
                f"{100 * row['mean']:.2f}% |"
            )
        lines.append("")
    lines += [
        f"## (a) Test accuracy (%), mean ± std over {len(seeds)} seeds [min, max]",
        "",
        "| steps | " + " | ".join(LABELS[n] for n in NETWORKS) + " |",
        "| --- | --- | --- |",
    ]
    for step in summary["table_steps"]:
        cells = []
        for n in NETWORKS:
            s = summary[n]["top1"][str(step)]
            cells.append(f"{pm(s, 100)} [{100 * s['min']:.2f}, {100 * s['max']:.2f}]")
        lines.append(f"| {step:,} | " + " | ".join(cells) + " |")
    a, b = summary["drift_from"], summary["drift_to"]
    lines += [
        "",
        f"## (b, c) The sigmoid's input from step {a:,} to step {b:,}, mean ± std over seeds",
        "",
        "| | " + " | ".join(LABELS[n] for n in NETWORKS) + " |",
        "| --- | --- | --- |",
    ]
    for key, label in (
        ("median_change", f"median at {b:,} minus median at {a:,}"),
        ("spread_15_85_start", f"15-85 spread at {a:,}"),
        ("spread_15_85_end", f"15-85 spread at {b:,}"),
        ("spread_15_85_change", "change of the 15-85 spread"),
    ):
        cells = [pm(summary[n]["drift"][key], digits=3) for n in NETWORKS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if "late_drift_from" in summary:
        c = summary["late_drift_from"]
        for key, label in (
            ("median_change", f"median at {b:,} minus median at {c:,}"),
            ("spread_15_85_change", f"change of the 15-85 spread from {c:,}"),
        ):
            cells = [pm(summary[n]["late_drift"][key], digits=3) for n in NETWORKS]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    units = report.get("all_units")
    if units:
        lines += [
            "",
            f"## Every unit of the last hidden layer, step {units['from_step']:,} to "
            f"{units['to_step']:,} (mean ± std over seeds)",
            "",
            "Per unit: percentiles over the same test digits; then averaged over the 100 "
            "units. Step-1,000 states from twin runs of 1,000 steps (same seed, same steps).",
            "",
            "| | " + " | ".join(LABELS[n] for n in NETWORKS) + " |",
            "| --- | --- | --- |",
        ]
        for key, label in (
            ("mean_abs_median_change", "mean over units of abs(median change)"),
            ("mean_spread_start", f"mean 15-85 spread at {units['from_step']:,}"),
            ("mean_spread_end", f"mean 15-85 spread at {units['to_step']:,}"),
            ("median_spread_ratio", "median over units of spread ratio end / start"),
            ("fraction_units_spread_grew", "fraction of units whose spread grew"),
            ("mean_gamma_start", f"BN: mean abs(gamma) at {units['from_step']:,}"),
            ("mean_gamma_end", f"BN: mean abs(gamma) at {units['to_step']:,}"),
        ):
            cells = [pm(units[n][key], digits=3) if key in units[n] else "-" for n in NETWORKS]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Paper vs ours", "", *report["comparison"], ""]
    lines += [f"![Figure 1]({NAME}.png)", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def comparison(summary: dict, units: dict | None) -> list[str]:
    """Sentences that state what the paper shows and what we measured, side by side."""
    last = str(summary["table_steps"][-1])
    base, bn = summary["baseline"], summary["bn"]
    out = [
        "- Paper, Fig. 1(a): the BN network reaches higher test accuracy and converges "
        "faster (curves only, no numbers in the text; read off the plot, about 0.98+ with "
        f"BN vs about 0.97 without at 50k steps). Ours at {int(last):,} steps: "
        f"{pm(bn['top1'][last], 100)}% with BN vs {pm(base['top1'][last], 100)}% without.",
    ]
    early = [s for s in summary["table_steps"] if s < int(last)]
    if early:
        s = str(early[0])
        out.append(
            f"  At {int(s):,} steps: {pm(bn['top1'][s], 100)}% with BN vs "
            f"{pm(base['top1'][s], 100)}% without."
        )
    out.append(
        "- Paper, Fig. 1(b, c): without BN the distribution of the sigmoid input drifts "
        "over training (mean and variance change); with BN it stays much more stable. "
        f"Ours, the plotted unit from step {summary['drift_from']:,} to "
        f"{summary['drift_to']:,} (median change / 15-85 spread change): without BN "
        f"{pm(base['drift']['median_change'], digits=3)} / "
        f"{pm(base['drift']['spread_15_85_change'], digits=3)}; with BN "
        f"{pm(bn['drift']['median_change'], digits=3)} / "
        f"{pm(bn['drift']['spread_15_85_change'], digits=3)}."
    )
    if units:
        b, n = units["baseline"], units["bn"]
        text = (
            "  Over all 100 units of the last hidden layer: mean abs(median change) "
            f"{pm(b['mean_abs_median_change'], digits=3)} without BN vs "
            f"{pm(n['mean_abs_median_change'], digits=3)} with BN; mean 15-85 spread "
            f"{b['mean_spread_start']['mean']:.2f} -> {b['mean_spread_end']['mean']:.2f} without "
            f"BN vs {n['mean_spread_start']['mean']:.2f} -> {n['mean_spread_end']['mean']:.2f} "
            "with BN"
        )
        if "mean_gamma_end" in n:
            g0, g1 = n["mean_gamma_start"]["mean"], n["mean_gamma_end"]["mean"]
            text += (
                f"; BN's learned scale gamma (mean abs) {g0:.2f} -> {g1:.2f}, a factor "
                f"{g1 / g0:.2f} beside the BN network's median per-unit spread ratio "
                f"{n['median_spread_ratio']['mean']:.2f} (without BN: "
                f"{b['median_spread_ratio']['mean']:.2f}). BN keeps the normalized "
                "pre-activation fixed; what reaches the sigmoid is gamma times it plus beta, "
                "and gamma is learned (here without weight decay)"
            )
        out.append(text + ".")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default=str(_runs.ROOT / "experiments" / "results"))
    parser.add_argument("--work_root", default="/tmp/cnn_arch_bn_mnist")
    parser.add_argument("--data_dir", default=_runs.default_data_dir())
    parser.add_argument("--num_steps", type=int, default=50_000, help="scale: steps per run")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--learning_rate", type=float, default=0.0, help="0: sweep --lr_grid")
    parser.add_argument("--lr_grid", default="0.1,0.3,1,3")
    parser.add_argument("--sweep_steps", type=int, default=5_000)
    parser.add_argument("--eval_every", type=int, default=500)
    parser.add_argument("--log_every", type=int, default=500)
    parser.add_argument("--num_images", type=int, default=10_000, help="for the percentiles")
    parser.add_argument("--shuffle_buffer", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2, help="runs trained at a time")
    parser.add_argument("--compilation_cache", default=None, help="default: WORK_ROOT/jax_cache")
    args = parser.parse_args(argv)
    if args.compilation_cache is None:
        args.compilation_cache = os.path.join(args.work_root, "jax_cache")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.lr_grid = [float(x) for x in args.lr_grid.split(",") if x.strip()]
    if not seeds or args.num_steps < args.eval_every or args.num_steps % args.eval_every:
        parser.error("--seeds must be non-empty and --num_steps a multiple of --eval_every")
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.perf_counter()

    report: dict = {
        "command": _runs.command_line("bn_mnist.py", argv),
        "machine": _runs.MACHINE,
        "workers": args.workers,
        "seeds": seeds,
        "num_steps": args.num_steps,
        "eval_every": args.eval_every,
        "num_images": args.num_images,
        "unit": bn_mnist.get_config("bn").evals.sigmoid.unit,
    }
    lr = args.learning_rate
    if lr <= 0:
        lr, report["lr_sweep"] = sweep_learning_rate(args)
        print(f"chosen learning rate {lr:g}")
    report["learning_rate"] = lr

    jobs, index = [], {}
    for seed in seeds:
        for network in NETWORKS:
            workdir = os.path.join(args.work_root, f"{network}_lr{lr:g}_s{seed}_n{args.num_steps}")
            config = network_config(
                network, args, seed=seed, lr=lr, steps=args.num_steps, sweep=False
            )
            jobs.append((workdir, config))
            index[(network, seed)] = workdir
    print(f"training {len(jobs)} runs of {args.num_steps} steps, {args.workers} at a time")
    walls = _runs.train_all(jobs, args.workers, compilation_cache=args.compilation_cache)
    report["run_seconds"] = {os.path.basename(w): t for w, t in walls.items()}

    runs = {n: {s: curves(index[(n, s)]) for s in seeds} for n in NETWORKS}
    report["curves"] = {n: {str(s): c for s, c in by_seed.items()} for n, by_seed in runs.items()}
    report["summary"] = summarize(runs, args.num_steps)
    if args.num_steps > TABLE_STEPS[0] and TABLE_STEPS[0] % args.eval_every == 0:
        report["all_units"] = unit_analysis(args, lr, seeds, index)
    report["comparison"] = comparison(report["summary"], report.get("all_units"))
    report["wall_seconds"] = time.perf_counter() - t0

    with open(os.path.join(args.out_dir, f"{NAME}.json"), "w") as f:
        json.dump(report, f, indent=1)
    write_markdown(report, os.path.join(args.out_dir, f"{NAME}.md"))
    plot(runs, os.path.join(args.out_dir, f"{NAME}.png"), seeds[0])
    print(open(os.path.join(args.out_dir, f"{NAME}.md")).read())
    return report


if __name__ == "__main__":
    _runs.run_main(main)
