"""Input pipelines (TFDS + tf.data on the host), the pp spec and its ops, the offline set."""

from cnn_arch.data.benchmark import benchmark_input
from cnn_arch.data.faults import DataError
from cnn_arch.data.pipeline import (
    DataInfo,
    data_dir_for,
    dataset_info,
    eval_batches,
    num_eval_batches,
    preprocess_images,
    train_batches,
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
