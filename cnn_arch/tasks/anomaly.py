"""Anomaly detectors trained on normal images only (issue 12), one task per detector.

Each task trains its network (``cnn_arch.models.anomaly``, in the zoo) on whatever the pipeline
gives (with ``config.normal_class`` set, the images of that class only) and adds
``scores(outputs, batch)``: one anomaly score per example, higher = more anomalous,
which the ``anomaly`` evaluator turns into AUROC. ``residual`` is the per-pixel
explanation where a detector has one.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cnn_arch.tasks.base import Task, register
from cnn_arch.tasks.classification import cross_entropy


class AnomalyTask(Task):
    """A detector: the model registered for this task's name fits, no other."""

    def scores(self, outputs, batch) -> jax.Array:
        raise NotImplementedError

    def residual(self, outputs, batch) -> jax.Array | None:
        """(N, H, W) squared error per pixel, or None for detectors without one."""
        return None

    @classmethod
    def check_model(cls, model: str, model_task: str) -> str | None:
        if model_task != cls.name:
            return f"model {model!r} is a {model_task} model, not a {cls.name} detector"
        return None

    def eval_sums(self, outputs, batch):
        mask = batch["mask"]
        return {"loss": jnp.sum(self.scores(outputs, batch) * mask), "count": jnp.sum(mask)}


def _pixel_error(prediction, image):
    """(N, H, W) squared error summed over channels, in float32."""
    return jnp.sum(jnp.square(prediction.astype(jnp.float32) - image.astype(jnp.float32)), -1)


@register("reconstruction")
@dataclasses.dataclass(frozen=True)
class Reconstruction(AnomalyTask):
    """Autoencoder: mean squared reconstruction error; score = the image's mean error."""

    def residual(self, outputs, batch):
        return _pixel_error(outputs, batch["image"])

    def scores(self, outputs, batch):
        return self.residual(outputs, batch).mean(axis=(1, 2))

    def loss(self, outputs, batch):
        loss = self.scores(outputs, batch).mean()
        return loss, {"mse": loss}


@register("continuation")
@dataclasses.dataclass(frozen=True)
class Continuation(AnomalyTask):
    """Predict the bottom half from the top half (the notes' "predict the continuation");
    error and score over the bottom half only (the model never sees it)."""

    def residual(self, outputs, batch):
        error = _pixel_error(outputs, batch["image"])
        bottom = jnp.arange(error.shape[1]) >= error.shape[1] // 2
        return error * bottom[None, :, None]

    def scores(self, outputs, batch):
        h = outputs.shape[1]
        return self.residual(outputs, batch)[:, h // 2 :].mean(axis=(1, 2))

    def loss(self, outputs, batch):
        loss = self.scores(outputs, batch).mean()
        return loss, {"mse": loss}


@register("one_class")
@dataclasses.dataclass(frozen=True)
class OneClass(AnomalyTask):
    """One-class Deep SVDD (Ruff et al. 2018, Eq. 4): mean squared distance of the
    representations to the fixed centre c; score = the distance (Eq. 6). The loss is
    zero during the network's centre pass (``DeepSVDD``); weight decay is the
    optimizer's (the paper's lambda term)."""

    def scores(self, outputs, batch):
        z, c, _ = outputs
        return jnp.sum(jnp.square(z - c[None]), axis=-1)

    def loss(self, outputs, batch):
        _, _, ready = outputs
        distance = self.scores(outputs, batch).mean()
        return ready * distance, {"distance": distance, "center_ready": ready}


@register("transformations")
@dataclasses.dataclass(frozen=True)
class Transformations(AnomalyTask):
    """Which transformation was applied (Golan & El-Yaniv 2018): cross-entropy of each
    transformed copy against its index; score = minus the mean log-probability of the
    right transformation over all of them (the simplified normality score of Golan &
    El-Yaniv Sec. 5.1 / Hendrycks et al. 2019, not the Dirichlet one)."""

    def _per_copy(self, outputs):
        k = outputs.shape[1]
        labels = jnp.broadcast_to(jnp.arange(k), outputs.shape[:2])
        return cross_entropy(outputs.reshape(-1, k), labels.reshape(-1)).reshape(outputs.shape[:2])

    def scores(self, outputs, batch):
        return self._per_copy(outputs).mean(axis=1)

    def loss(self, outputs, batch):
        correct = jnp.argmax(outputs, -1) == jnp.arange(outputs.shape[1])[None]
        return self._per_copy(outputs).mean(), {"top1": correct.mean()}
