"""Loss, top-k accuracy and the metric writers (TensorBoard, log, metrics.jsonl)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import optax
from clu import metric_writers


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Per-example softmax cross-entropy with optional label smoothing."""
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def correct_topk(logits, labels, k: int):
    """1.0 where the label is among the k highest logits."""
    k = min(k, logits.shape[-1])
    topk = jax.lax.top_k(logits, k)[1]
    return jnp.any(topk == labels[:, None], axis=-1).astype(jnp.float32)


def per_pixel(logits, labels, mask=None):
    """Segmentation outputs (N, H, W, C) as N*H*W rows of logits, so one loss and one
    accuracy serve both tasks. Label maps larger than the logits (the unpadded U-Net
    loses a border) are centre-cropped to them. Classification passes through."""
    if logits.ndim == 2:
        return logits, labels, mask
    n, h, w, c = logits.shape
    top, left = (labels.shape[1] - h) // 2, (labels.shape[2] - w) // 2
    labels = labels[:, top : top + h, left : left + w]
    if mask is not None:
        mask = jnp.broadcast_to(mask[:, None, None], (n, h, w)).reshape(-1)
    return logits.reshape(-1, c), labels.reshape(-1), mask


def summed_metrics(logits, labels, mask) -> dict[str, jax.Array]:
    """Sums over the (masked) batch, so batches and hosts add up exactly. For
    segmentation every pixel counts as one example (top1 = pixel accuracy)."""
    logits, labels, mask = per_pixel(logits, labels, mask)
    return {
        "loss": jnp.sum(cross_entropy(logits, labels) * mask),
        "top1": jnp.sum(correct_topk(logits, labels, 1) * mask),
        "top5": jnp.sum(correct_topk(logits, labels, 5) * mask),
        "count": jnp.sum(mask),
    }


def averages(sums: dict[str, float]) -> dict[str, float]:
    """Divides each summed metric by the number of examples."""
    n = max(float(sums["count"]), 1.0)
    return {k: float(v) / n for k, v in sums.items() if k != "count"}


class Writer:
    """TensorBoard events (clu's SummaryWriter) and metrics.jsonl, one JSON object per
    line. Only process 0 writes; on other processes ``write`` does nothing. The
    human-readable progress line is logged by the training loop."""

    def __init__(self, workdir: str):
        self.active = jax.process_index() == 0
        self._tb = metric_writers.SummaryWriter(workdir) if self.active else None
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a") if self.active else None

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.active:
            return
        self._tb.write_scalars(step, {f"{split}/{k}": v for k, v in values.items()})
        self._tb.flush()
        self._jsonl.write(json.dumps({"step": step, "split": split, **values}) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        if self.active:
            self._tb.close()
            self._jsonl.close()
