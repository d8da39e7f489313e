"""One detector, one normal class: train on it, score the whole test split, report AUROC.

    python -m cnn_arch.anomaly --config=configs/anomaly/deep_svdd_mnist.py \
        --config.normal_class=3 --workdir=W

Trains with the library's loop (``train.train_and_evaluate``) on the training images of
``config.normal_class`` only; the config's ``anomaly`` evaluator scores the eval split
at the end. Writes ``W/scores.npz`` (``score``, ``is_anomaly`` for every test example,
higher = more anomalous; see ``cnn_arch.evaluators.anomaly``) and ``W/auroc.json``.
Bad input (a class out of range, a dataset without labels, ...) is one ``error:`` line
and exit status 2, before anything compiles.
"""

from __future__ import annotations

import json
import sys

from absl import app, logging

from cnn_arch import parallel, train
from cnn_arch import workdir as workdir_lib
from cnn_arch.errors import UserError

SCORES = "scores.npz"
AUROC = "auroc.json"


def anomaly_evaluator(config) -> str:
    """The name of the config's ``anomaly`` evaluator (UserError when it has none)."""
    names = [n for n, spec in config.evals.items() if spec.get("kind") == "anomaly"]
    if not names:
        raise UserError(
            "config.evals has no evaluator of kind 'anomaly'; start from a config in "
            "configs/anomaly/"
        )
    return names[0]


def run(config, workdir: str) -> dict:
    """Trains ``config`` in ``workdir`` and writes scores.npz and auroc.json there."""
    name = anomaly_evaluator(config)
    with config.unlocked():
        config.evals[name].scores_path = str(workdir_lib.path(workdir) / SCORES)
        # The loop returns its first evaluator's metrics: put the anomaly one first.
        config.evals = {name: config.evals[name], **{k: v for k, v in config.evals.items()}}
    metrics = train.train_and_evaluate(config, workdir)
    result = {
        "dataset": config.dataset,
        "model": config.model,
        "task": config.task,
        "normal_class": config.normal_class,
        "ood_dataset": config.evals[name].get("ood_dataset", ""),
        **metrics,
    }
    workdir_lib.write_atomic(workdir_lib.path(workdir) / AUROC, json.dumps(result, indent=1))
    return result


def main(argv):
    from cnn_arch import main as train_cli  # see the __main__ block

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    parallel.initialize_distributed()
    try:
        result = run(train_cli._load_config(), train_cli._WORKDIR.value)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    logging.info("AUROC %.4f (%s)", result["auroc"], train_cli._WORKDIR.value)
    print(f"auroc {result['auroc']:.4f}")


if __name__ == "__main__":
    # The training CLI's flags (--config, --workdir, --config.model_kwargs.X) are defined
    # when cnn_arch.main is imported; importing it only here keeps run() importable in a
    # process that also imports cnn_arch.evaluate, whose flags share those names.
    from cnn_arch import main as train_cli

    app.run(main, flags_parser=train_cli.parse_flags)
