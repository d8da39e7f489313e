"""Semantic segmentation: per-pixel cross-entropy (U-Net, Ronneberger et al. 2015, Eq. 1).

Every pixel counts as one example: eval's top1 is pixel accuracy. The unpadded U-Net
loses a border, so label maps are centre-cropped to its output.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from cnn_arch.models.unet import center_crop_to, segmentation_loss
from cnn_arch.tasks.base import Task, register
from cnn_arch.tasks.classification import correct_topk, cross_entropy


def _pixels(logits, labels):
    """(N, H, W, C) logits and (N, H', W') maps cropped to them -> N*H*W rows."""
    labels = center_crop_to(labels, logits.shape)
    return logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)


@register("segmentation")
@dataclasses.dataclass(frozen=True)
class Segmentation(Task):
    data_kind = "segmentation"
    unit = "pixels"

    def loss(self, outputs, batch):
        labels = center_crop_to(batch["label"], outputs.shape)
        loss = segmentation_loss(outputs, labels)
        logits, flat = _pixels(outputs, batch["label"])
        return loss, {"top1": correct_topk(logits, flat, 1).mean()}

    def eval_sums(self, outputs, batch):
        logits, labels = _pixels(outputs, batch["label"])
        n, h, w = outputs.shape[:3]
        mask = jnp.broadcast_to(batch["mask"][:, None, None], (n, h, w)).reshape(-1)
        return {
            "loss": jnp.sum(cross_entropy(logits, labels) * mask),
            "top1": jnp.sum(correct_topk(logits, labels, 1) * mask),
            "count": jnp.sum(mask),
        }
