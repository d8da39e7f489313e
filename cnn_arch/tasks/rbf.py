"""The 1998 LeNet-5's own criterion: Euclidean RBF outputs and the MAP loss (Eq. 9).

LeCun et al. 1998 Sec. II-C: the output layer's units are RBF distances y_i to fixed
prototypes; the model returns -y. Training minimizes Eq. 9 (``contrast=True``), which
also pushes up the penalties of the wrong classes; the class is the smallest y.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cnn_arch.models.lenet1998 import rbf_loss
from cnn_arch.tasks.base import Task, register
from cnn_arch.tasks.classification import correct_topk


@register("rbf")
@dataclasses.dataclass(frozen=True)
class RBF(Task):
    j: float = 1.0  # Eq. 9's constant; the paper only says j > 0
    contrast: bool = True  # False: Eq. 8

    @classmethod
    def check_model(cls, model: str, model_task: str) -> str | None:
        if model != "lenet5_1998":
            return "the RBF loss needs the RBF output layer of model 'lenet5_1998'"
        return None

    def loss(self, outputs, batch):
        loss = rbf_loss(outputs, batch["label"], j=self.j, contrast=self.contrast)
        return loss, {"top1": correct_topk(outputs, batch["label"], 1).mean()}

    def eval_sums(self, outputs, batch):
        labels, mask = batch["label"], batch["mask"]
        per_example = jax.vmap(
            lambda o, y: rbf_loss(o[None], y[None], j=self.j, contrast=self.contrast)
        )(outputs, labels)
        return {
            "loss": jnp.sum(per_example * mask),
            "top1": jnp.sum(correct_topk(outputs, labels, 1) * mask),
            "top5": jnp.sum(correct_topk(outputs, labels, 5) * mask),
            "count": jnp.sum(mask),
        }
