"""Evaluate a training workdir with any evaluators, without touching it.

    python -m cnn_arch.evaluate --workdir=W --evals=running,alg2,folded_alg2 \\
        [--num_batches=100] [--batch_size=M] [--data_dir=DIR]
    python -m cnn_arch.evaluate --workdir=W1 --workdirs=W2,W3 --evals=144crop,ensemble_144crop

Restores the latest checkpoint (finished or still training) into the run its
``config.json`` describes (``cnn_arch.run.from_workdir``), runs each evaluator on the
eval split, prints a table and writes ``W/evaluate.json``. An ``--evals`` entry is a
name from the workdir's ``config.evals`` or one of the shorthands below; the
population evaluators also report how far each BN layer's running averages are from
its population statistics.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only feeds data here

from absl import app, flags, logging  # noqa: E402

from cnn_arch import evaluators, parallel  # noqa: E402
from cnn_arch import run as run_lib  # noqa: E402
from cnn_arch import workdir as workdir_lib  # noqa: E402
from cnn_arch.errors import UserError  # noqa: E402
from cnn_arch.evaluators.bn import layer_shifts  # noqa: E402

SHORTHANDS = {
    "running": {"kind": "running"},
    "alg2": {"kind": "population"},
    "folded": {"kind": "folded"},
    "folded_alg2": {"kind": "folded", "statistics": "population"},
    "flip": {"kind": "multicrop", "views": "flip"},
    "10crop": {"kind": "multicrop", "views": "10crop"},
    "144crop": {"kind": "multicrop", "views": "144crop"},
    "ensemble": {"kind": "ensemble"},  # with the networks of --workdirs
    "ensemble_flip": {"kind": "ensemble", "views": "flip"},
    "ensemble_10crop": {"kind": "ensemble", "views": "10crop"},
    "ensemble_144crop": {"kind": "ensemble", "views": "144crop"},
}
OUTPUT_NAME = "evaluate.json"

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir (config.json, checkpoints/).")
_EVALS = flags.DEFINE_list(
    "evals",
    ["running"],
    f"Evaluators: {', '.join(SHORTHANDS)} or names from the workdir's config.evals.",
)
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 100, "Algorithm 2: training mini-batches N.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 0, "Algorithm 2: mini-batch size m (0: the config's)."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Overrides the config's data_dir.")
_WORKDIRS = flags.DEFINE_list(
    "workdirs", [], "Ensembles: the other members' training workdirs (same dataset)."
)


def resolve(
    names: list[str], config, *, num_batches: int, batch_size: int, workdirs: list[str] = ()
) -> dict[str, dict]:
    """``--evals`` entries -> evaluator specs; Algorithm 2 options applied where they fit."""
    specs = {}
    for name in names:
        if name in config.evals:
            spec = config.evals[name].to_dict()
        elif name in SHORTHANDS:
            spec = dict(SHORTHANDS[name])
        else:
            raise UserError(
                f"--evals: {name!r} is neither a shorthand ({', '.join(SHORTHANDS)}) nor in the "
                f"workdir's config.evals ({', '.join(config.evals)})"
            )
        if spec["kind"] == "population" or spec.get("statistics") == "population":
            spec.update(num_batches=num_batches, batch_size=batch_size)
        if spec["kind"] == "ensemble" and workdirs:
            spec["workdirs"] = list(workdirs)
        if spec["kind"] == "ensemble" and not spec.get("workdirs"):
            raise UserError(f"--evals={name}: an ensemble needs the other members' --workdirs")
        spec.pop("every_steps", None)
        specs[name] = spec
    try:
        evaluators.check(specs, config)
    except ValueError as e:
        raise UserError(str(e)) from None
    return specs


def evaluate_workdir(
    workdir: str,
    names: list[str],
    *,
    num_batches: int = 100,
    batch_size: int = 0,
    data_dir: str | None = None,
    workdirs: list[str] = (),
    mesh=None,
) -> dict[str, Any]:
    """Each named evaluator's metrics on the latest checkpoint of ``workdir`` (ensembles:
    with the networks of ``workdirs``)."""
    run, state = run_lib.from_workdir(workdir, data_dir=data_dir, mesh=mesh)
    specs = resolve(
        names, run.config, num_batches=num_batches, batch_size=batch_size, workdirs=workdirs
    )
    report: dict[str, Any] = {
        "workdir": str(workdir_lib.path(workdir)),
        "checkpoint_step": int(state.step),
        "model": run.config.model,
        "model_kwargs": run.config.model_kwargs.to_dict(),
        "dataset": run.config.dataset,
        "eval_split": run.config.eval_split,
        "evals": specs,
        "results": {},
    }
    for evaluator in evaluators.build_all(run, specs):
        try:
            report["results"][evaluator.name] = evaluator(state)
        except ValueError as e:  # e.g. Algorithm 2 on a network without BN
            raise UserError(f"--evals={evaluator.name}: {e}") from None
        stats = getattr(evaluator, "last_batch_stats", None)
        if stats is not None:
            report.setdefault("bn_layers", layer_shifts(state.batch_stats, stats))
        folded = getattr(evaluator, "last_folded", None)
        if folded is not None:
            report["folded_pairs"] = [list(p) for p in folded.pairs]
            report["unfolded"] = list(folded.unfolded)
    return report


def format_table(report: dict[str, Any]) -> str:
    rows = report["results"]
    width = max(len(name) for name in rows)
    n = next(iter(rows.values()))["num_examples"]
    lines = [
        f"{report['model']} {report['model_kwargs']} on {report['dataset']} "
        f"{report['eval_split']} ({n} examples), checkpoint step {report['checkpoint_step']}",
        f"{'':{width}}  {'loss':>8}  {'top-1':>8}  {'errors':>6}",
    ]
    for name, m in rows.items():
        errors = round((1.0 - m["top1"]) * m["num_examples"])
        lines.append(f"{name:{width}}  {m['loss']:8.4f}  {100 * m['top1']:7.2f}%  {errors:6d}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # Orbax and TFDS narrate every read at INFO
    parallel.initialize_distributed()
    try:
        report = evaluate_workdir(
            _WORKDIR.value,
            _EVALS.value,
            num_batches=_NUM_BATCHES.value,
            batch_size=_BATCH_SIZE.value,
            data_dir=_DATA_DIR.value,
            workdirs=_WORKDIRS.value,
        )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    print(format_table(report))
    path = workdir_lib.path(_WORKDIR.value) / OUTPUT_NAME
    workdir_lib.write_atomic(path, json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    app.run(main)
