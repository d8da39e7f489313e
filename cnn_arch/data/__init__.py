"""Input pipelines (TFDS + tf.data on the host), the pp spec and its ops, the offline set.

The names below are imported from their submodules on first use (PEP 562): importing
TensorFlow and TFDS costs ~3 CPU-seconds, and ``from cnn_arch import data`` happens in
every command-line entry, so a bad config or workdir is reported before the data stack
loads; only building a pipeline or reading a dataset's metadata pays for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from cnn_arch.errors import DataError  # defined there so catching it loads no TensorFlow

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from cnn_arch.data.benchmark import benchmark_input
    from cnn_arch.data.info import DataInfo
    from cnn_arch.data.pipeline import (
        data_dir_for,
        dataset_info,
        eval_batches,
        num_eval_batches,
        preprocess_images,
        train_batches,
    )

# Public name -> the submodule that defines it.
_LAZY = {
    "benchmark_input": "benchmark",
    "DataInfo": "info",
    "data_dir_for": "pipeline",
    "dataset_info": "pipeline",
    "eval_batches": "pipeline",
    "num_eval_batches": "pipeline",
    "preprocess_images": "pipeline",
    "train_batches": "pipeline",
}
_SUBMODULES = frozenset(
    {
        "benchmark",
        "faults",
        "image_folder",
        "info",
        "offline",
        "ops",
        "pipeline",
        "pp",
        "preprocess",
    }
)

__all__ = [
    "DataError",
    "DataInfo",
    "benchmark_input",
    "data_dir_for",
    "dataset_info",
    "eval_batches",
    "num_eval_batches",
    "preprocess_images",
    "train_batches",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    elif name in _SUBMODULES:  # ``data.pipeline`` without importing it by name first
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # the next access is an ordinary attribute lookup
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})
