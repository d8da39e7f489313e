"""Command line: python -m cnn_arch.main --config=configs/X.py --workdir=DIR [--config.key=v]."""

from __future__ import annotations

import logging as std_logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only feeds data here

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cnn_arch import parallel, train  # noqa: E402
from cnn_arch.errors import UserError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


class _OwnInfoOnly(std_logging.Filter):
    """INFO lines from cnn_arch only; libraries (Orbax, JAX) speak at WARNING and up."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or f"{os.sep}cnn_arch{os.sep}" in (
            record.pathname
        )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_OwnInfoOnly())
    parallel.initialize_distributed()
    try:
        train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
