"""Evaluate a training workdir with any evaluators, without touching it.

    python -m cnn_arch.evaluate --workdir=W --evals=running,alg2,folded_alg2 \\
        [--num_batches=100] [--batch_size=M] [--data_dir=DIR]
    python -m cnn_arch.evaluate --workdir=W1 --workdirs=W2,W3 --evals=144crop,ensemble_144crop
    python -m cnn_arch.evaluate --workdir=W --evals=running,alg2,batch_stats_1,batch_stats_64
    python -m cnn_arch.evaluate --init_from=DIR --config=configs/resnet50.py [--output=FILE]

Restores the latest checkpoint (finished or still training) into the run its
``config.json`` describes (``cnn_arch.run.from_workdir``), runs each evaluator on the
eval split, prints a table and writes ``W/evaluate.json``. An ``--evals`` entry is a
name from the workdir's ``config.evals`` or one of the shorthands below; the
population evaluators also report how far each BN layer's running averages are from
its population statistics.

``--init_from=DIR`` evaluates other weights instead of a workdir: converted torchvision
weights (``python -m cnn_arch.convert``), a workdir or a checkpoint, in the run that
``--config`` (with ``--config.<key>=<value>`` overrides) describes; their classifier
must fit the config's number of classes. The table is printed, the JSON written to
``--output`` if given.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only feeds data here

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cnn_arch import evaluators, parallel  # noqa: E402
from cnn_arch import run as run_lib  # noqa: E402
from cnn_arch import workdir as workdir_lib  # noqa: E402
from cnn_arch.errors import UserError  # noqa: E402
from cnn_arch.evaluators.bn import layer_shifts  # noqa: E402
from cnn_arch.validate import validate_config  # noqa: E402

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
    "batch_stats": {"kind": "batch_stats"},  # BN statistics of each eval batch
}
# 'batch_stats_<B>': BN with the statistics of each evaluation batch of B examples
# (the network in BN training mode at inference; cnn_arch/evaluators/batch_stats.py).
BATCH_STATS_SHORTHAND = re.compile(r"batch_stats_(\d+)")
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
_INIT_FROM = flags.DEFINE_string(
    "init_from", None, "Instead of --workdir: converted weights, a workdir or a checkpoint."
)
_CONFIG = config_flags.DEFINE_config_file("config", None, "With --init_from: the run's config.")
_OUTPUT = flags.DEFINE_string("output", None, "With --init_from: write the JSON report here.")


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
        elif match := BATCH_STATS_SHORTHAND.fullmatch(name):
            spec = {"kind": "batch_stats", "batch_size": int(match.group(1))}
        else:
            raise UserError(
                f"--evals: {name!r} is neither a shorthand ({', '.join(SHORTHANDS)}, "
                f"batch_stats_<B>) nor in the "
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
    # --evals is checked against the saved config before the dataset is read (which
    # loads TensorFlow) and the checkpoint restored: a typo fails fast.
    saved = run_lib.load_config(workdir, data_dir=data_dir)
    resolve(names, saved, num_batches=num_batches, batch_size=batch_size, workdirs=workdirs)
    run, state = run_lib.from_workdir(workdir, data_dir=data_dir, mesh=mesh)
    source = {"workdir": str(workdir_lib.path(workdir)), "checkpoint_step": int(state.step)}
    return evaluate_state(run, state, names, source, num_batches, batch_size, workdirs)


def evaluate_init_from(
    config,
    names: list[str],
    *,
    num_batches: int = 100,
    batch_size: int = 0,
    workdirs: list[str] = (),
    mesh=None,
) -> dict[str, Any]:
    """Each named evaluator's metrics on the weights of ``config.init_from`` (converted
    or our own), in the run ``config`` describes; a head of another number of classes
    is an error here (a fresh head has nothing to evaluate)."""
    if not config.init_from:
        raise UserError("--init_from: name the weights to evaluate")
    # The config, then --evals, are checked before the dataset is read (which loads
    # TensorFlow): bad input fails fast. ``build`` validates again, at no cost.
    mesh = parallel.make_mesh() if mesh is None else mesh
    validate_config(config, device_count=mesh.devices.size)
    resolve(names, config, num_batches=num_batches, batch_size=batch_size, workdirs=workdirs)
    run = run_lib.build(config, mesh)
    state = run.init_state(warm_start=True, new_head=False)
    source = {"init_from": os.path.abspath(config.init_from), "checkpoint_step": None}
    return evaluate_state(run, state, names, source, num_batches, batch_size, workdirs)


def evaluate_state(
    run: run_lib.Run,
    state,
    names: list[str],
    source: dict[str, Any],
    num_batches: int = 100,
    batch_size: int = 0,
    workdirs: list[str] = (),
) -> dict[str, Any]:
    """The report of ``names``' evaluators on ``state``; ``source`` says where it came from."""
    specs = resolve(
        names, run.config, num_batches=num_batches, batch_size=batch_size, workdirs=workdirs
    )
    report: dict[str, Any] = {
        **source,
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
    weights = (
        f"weights {report['init_from']}"
        if "init_from" in report
        else f"checkpoint step {report['checkpoint_step']}"
    )
    lines = [
        f"{report['model']} {report['model_kwargs']} on {report['dataset']} "
        f"{report['eval_split']} ({n} examples), {weights}",
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
        if _INIT_FROM.value is not None:
            report = evaluate_init_from(
                _init_from_config(),
                _EVALS.value,
                num_batches=_NUM_BATCHES.value,
                batch_size=_BATCH_SIZE.value,
                workdirs=_WORKDIRS.value,
            )
        elif _WORKDIR.value is None:
            raise UserError("give --workdir (a training run) or --init_from with --config")
        else:
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
    if _INIT_FROM.value is not None:
        if _OUTPUT.value:
            with open(_OUTPUT.value, "w") as f:
                json.dump(report, f, indent=2)
            print(f"wrote {_OUTPUT.value}")
        return
    path = workdir_lib.path(_WORKDIR.value) / OUTPUT_NAME
    workdir_lib.write_atomic(path, json.dumps(report, indent=2))
    print(f"wrote {path}")


def _init_from_config():
    """--config with --init_from (and --data_dir) applied; a bad file is a UserError."""
    if _WORKDIR.value is not None:
        raise UserError("--init_from and --workdir exclude each other: evaluate one of them")
    try:
        config = _CONFIG.value
        if config is None:
            raise UserError("--init_from needs --config: the model, dataset and preprocessing")
        config.keys()  # a file that failed to load raises only when first used
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - config files are user code
        raise UserError(f"cannot load --config: {' '.join(str(e).split())[:300]}") from None
    with config.unlocked():
        config.init_from = _INIT_FROM.value
        if _DATA_DIR.value is not None:
            config.data_dir = _DATA_DIR.value
    return config


if __name__ == "__main__":
    app.run(main)
