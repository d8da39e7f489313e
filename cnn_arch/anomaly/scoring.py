"""Anomaly scores of every example of a split, by one or more scoring methods.

Methods (higher = more anomalous):

- ``task``: the detector's own score (``cnn_arch.tasks.anomaly``: reconstruction or
  continuation error, distance to the Deep SVDD centre, transformation log-likelihood);
- ``knn``: mean Euclidean distance from the network's ``features`` to the ``k`` nearest
  features of normal training images (latent-space distance, the notes' approach 2);
- ``msp``: minus a classifier's maximum softmax probability (Hendrycks & Gimpel 2017).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_arch import data, parallel
from cnn_arch.errors import UserError

METHODS = ("task", "knn", "msp")


def with_split(config, split: str, dataset: str | None = None) -> ml_collections.ConfigDict:
    """A copy of ``config`` whose eval split (and dataset) is ``split`` (``dataset``)."""
    copy = ml_collections.ConfigDict(config.to_dict())
    copy.eval_split = split
    if dataset:
        copy.dataset = dataset
    return copy


def split_batches(run, config) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images, labels) of the real examples of ``config.eval_split``, in order."""
    if config.dataset == run.config.dataset and config.eval_pp == run.config.eval_pp:
        # Imported here, not at the top: the evaluator's config check reads METHODS,
        # and a bad config is reported before TensorFlow loads (cnn_arch.data).
        import tensorflow_datasets as tfds

        from cnn_arch.data import faults

        # The run's own data: only the split differs. num_train is zeroed so the eval
        # cache (keyed by the info) serves every normal class's run of one dataset.
        builder = tfds.builder(config.dataset, data_dir=data.data_dir_for(config))
        size = faults.split_size(builder, config.eval_split, "eval_split")
        info = dataclasses.replace(run.info, num_train=0, num_eval=size)
    else:
        info = data.dataset_info(config, run.task.data_kind)
    if info.image_shape != run.info.image_shape:
        raise UserError(
            f"{config.dataset!r} {config.eval_split!r} gives {info.image_shape} images; the "
            f"detector takes {run.info.image_shape}"
        )
    for batch in data.eval_batches(config, info, local_batch_size=config.eval_batch_size):
        real = batch["mask"] > 0
        yield batch["image"][real], batch["label"][real]


class Scorer:
    """Jitted outputs / features / scores of ``run``'s model for given variables."""

    def __init__(self, run, methods: Sequence[str] = ("task",), knn_k: int = 5):
        self.run, self.methods, self.knn_k = run, tuple(methods), knn_k
        model, task = run.model, run.task
        self._outputs = jax.jit(lambda v, x: model.apply(v, x, train=False))
        self._features = jax.jit(lambda v, x: model.apply(v, x, method="features"))
        self._task_scores = jax.jit(lambda outputs, x: task.scores(outputs, {"image": x}))
        self.bank: jax.Array | None = None  # kNN: features of normal training images

    def _device(self, images):
        return parallel.global_batch(self.run.mesh, {"image": images})["image"]

    def fit_bank(self, variables, images: np.ndarray, batch_size: int = 500) -> None:
        """The kNN reference set: features of ``images`` (normal training images)."""
        parts = [
            self._features(variables, self._device(images[i : i + batch_size]))
            for i in range(0, len(images), batch_size)
        ]
        self.bank = jnp.concatenate(parts)

    def knn(self, features) -> jax.Array:
        d2 = (
            jnp.sum(features**2, -1)[:, None]
            - 2 * features @ self.bank.T
            + jnp.sum(self.bank**2, -1)[None]
        )
        nearest = -jax.lax.top_k(-d2, min(self.knn_k, self.bank.shape[0]))[0]
        return jnp.sqrt(jnp.maximum(nearest, 0.0)).mean(-1)

    def scores(self, variables, images: np.ndarray) -> dict[str, np.ndarray]:
        """{method: (N,) scores} of a batch of preprocessed images."""
        x = self._device(images)
        out = {}
        if "task" in self.methods or "msp" in self.methods:
            outputs = self._outputs(variables, x)
            if "task" in self.methods:
                out["task"] = self._task_scores(outputs, x)
            if "msp" in self.methods:
                out["msp"] = -jnp.max(jax.nn.softmax(outputs, -1), -1)
        if "knn" in self.methods:
            out["knn"] = self.knn(self._features(variables, x))
        return {k: np.asarray(jax.device_get(v), np.float64) for k, v in out.items()}

    def score_split(self, variables, config) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """({method: scores}, labels) of every example of ``config.eval_split``."""
        parts, labels = [], []
        for images, y in split_batches(self.run, config):
            if len(y):
                parts.append(self.scores(variables, images))
                labels.append(y)
        scores = {m: np.concatenate([p[m] for p in parts]) for m in parts[0]}
        return scores, np.concatenate(labels)


def training_images(run, limit: int) -> np.ndarray:
    """Up to ``limit`` images of ``run``'s training batches (with ``normal_class`` set, of
    that class only; the anomaly configs train without augmentation, so these are the
    images as evaluated)."""
    kept, n = [], 0
    for batch in itertools.islice(run.train_batches(0), run.steps_per_epoch):  # one epoch
        kept.append(np.asarray(batch["image"])[: limit - n])
        n += len(kept[-1])
        if n >= limit:
            break
    return np.concatenate(kept)


def class_images(run, config, label: int, limit: int) -> np.ndarray:
    """Up to ``limit`` preprocessed images of class ``label`` from ``config.eval_split``,
    in the split's order."""
    kept, n = [], 0
    for images, y in split_batches(run, config):
        chosen = images[y == label][: limit - n]
        kept.append(chosen)
        n += len(chosen)
        if n >= limit:
            break
    return np.concatenate(kept) if kept else np.zeros((0, *run.info.image_shape), np.float32)
