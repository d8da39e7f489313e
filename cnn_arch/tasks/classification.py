"""Classification: softmax cross-entropy on integer or soft labels, top-1 / top-5."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from cnn_arch.tasks.base import Task, register

# Weight of each auxiliary classifier's loss (GoogLeNet, Szegedy et al. 2014, Sec. 5).
AUX_LOSS_WEIGHT = 0.3


def targets(labels, num_classes: int, label_smoothing: float = 0.0):
    """Probability targets: one-hot of integer labels, or soft labels (mixup) as given."""
    if labels.ndim == 1:
        labels = jax.nn.one_hot(labels, num_classes)
    if label_smoothing:
        labels = optax.smooth_labels(labels, label_smoothing)
    return labels


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Per-example softmax cross-entropy, in float32 whatever the compute dtype."""
    logits = logits.astype(jnp.float32)
    return optax.softmax_cross_entropy(logits, targets(labels, logits.shape[-1], label_smoothing))


def correct_topk(logits, labels, k: int):
    """1.0 where the label (the largest soft target) is among the k highest logits."""
    if labels.ndim == 2:
        labels = jnp.argmax(labels, axis=-1)
    if k == 1:  # argmax fuses with its neighbours; top_k is a library call of its own
        return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    k = min(k, logits.shape[-1])
    topk = jax.lax.top_k(logits, k)[1]
    return jnp.any(topk == labels[:, None], axis=-1).astype(jnp.float32)


def split_aux(outputs):
    """Models with auxiliary heads return (main, aux1, ...) in training."""
    if isinstance(outputs, tuple):
        return outputs[0], outputs[1:]
    return outputs, ()


@register("classification")
@dataclasses.dataclass(frozen=True)
class Classification(Task):
    label_smoothing: float = 0.0
    aux_weight: float = AUX_LOSS_WEIGHT

    @classmethod
    def from_config(cls, config) -> Classification:
        return cls(label_smoothing=config.label_smoothing)

    def loss(self, outputs, batch):
        logits, aux = split_aux(outputs)
        labels = batch["label"]
        loss = cross_entropy(logits, labels, self.label_smoothing).mean()
        for aux_logits in aux:
            loss += self.aux_weight * cross_entropy(aux_logits, labels).mean()
        return loss, {"top1": correct_topk(logits, labels, 1).mean()}

    def eval_sums(self, outputs, batch):
        logits, labels, mask = outputs, batch["label"], batch["mask"]
        return {
            "loss": jnp.sum(cross_entropy(logits, labels) * mask),
            "top1": jnp.sum(correct_topk(logits, labels, 1) * mask),
            "top5": jnp.sum(correct_topk(logits, labels, 5) * mask),
            "count": jnp.sum(mask),
        }
