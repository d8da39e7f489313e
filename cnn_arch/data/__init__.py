"""Input pipelines (TFDS + tf.data on the host), augmentation, the offline dataset."""

from cnn_arch.data.pipeline import (
    DataInfo,
    data_dir_for,
    dataset_info,
    eval_batches,
    num_eval_batches,
    train_batches,
)

__all__ = [
    "DataInfo",
    "data_dir_for",
    "dataset_info",
    "eval_batches",
    "num_eval_batches",
    "train_batches",
]
