"""Algorithm 2 on a trained checkpoint: BN running averages vs population statistics.

Restores the latest checkpoint of a training workdir (finished or still running),
evaluates the test split with the BN running averages it was trained with, then
re-estimates every BN layer's population mean and unbiased variance over N training
mini-batches (Ioffe & Szegedy 2015, Alg. 2 step 10), evaluates again, and evaluates
the BN-free network folded from those statistics. Prints a table and writes
``<workdir>/bn_population_stats.json``.

    python experiments/bn_population_stats.py --workdir=runs/lenet5_bn_mnist
    python experiments/bn_population_stats.py --workdir=W --num_batches=200 --batch_size=60 \\
        --data_dir=../shared/tensorflow_datasets
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only feeds data here
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from absl import app, flags, logging  # noqa: E402

from cnn_arch import bn_population as checkpoint_stats  # noqa: E402
from cnn_arch.errors import UserError  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir (config.json, checkpoints/).")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 100, "Training mini-batches to average (N).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Mini-batch size m; default: the config's.")
_START_STEP = flags.DEFINE_integer("start_step", 0, "First training step whose batch is used.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Overrides the config's data_dir.")
flags.mark_flag_as_required("workdir")

OUTPUT_NAME = "bn_population_stats.json"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # Orbax and TFDS narrate every read at INFO
    try:
        run = checkpoint_stats.load_trained(_WORKDIR.value, data_dir=_DATA_DIR.value)
        report = checkpoint_stats.compare(
            run,
            num_batches=_NUM_BATCHES.value,
            batch_size=_BATCH_SIZE.value,
            start_step=_START_STEP.value,
        )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    print(checkpoint_stats.format_table(report))
    path = os.path.join(_WORKDIR.value, OUTPUT_NAME)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
