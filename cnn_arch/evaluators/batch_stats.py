"""BN at inference with the statistics of the evaluation batch itself.

Ioffe & Szegedy (2015, Sec. 3.1) normalize at inference with fixed population statistics
so that "the output depends only on the input, deterministically"; keeping BN in training
mode at inference instead (the notes' "randomization during use") makes every prediction
depend on the other examples of its batch. ``batch_stats`` measures that network: every
BN layer normalizes with the mean and *biased* variance of the current evaluation batch
of ``batch_size`` examples (over the N*H*W positions per channel of a conv map, Sec. 3.2),
then applies its gamma and beta; nothing is written back and everything else runs in
inference mode (no dropout). Ghost BN layers use the whole evaluation batch too, not
their training sub-batch, so ``batch_size`` is the number of examples per BN batch at
evaluation whatever BN kind the network was trained with.

Batches: the split is read in order and regrouped into batches of exactly
``batch_size``; the last one is filled up with the split's first examples, which enter
the statistics but not the metrics (mask 0). Every example is scored once and every BN
batch holds ``batch_size`` real images (zero padding would change the statistics).

``batch_size=1``: a conv BN then averages over the H*W positions of one image per
channel (instance normalization with BN's gamma and beta), so the output still depends on
the input; a BN on a dense (N, C) input has one value per feature, x - mu_B = 0, and
outputs beta whatever the input, so a network with such a layer predicts one constant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax

from cnn_arch import data, metrics, parallel
from cnn_arch.evaluators.base import Evaluator, register
from cnn_arch.norm.batchnorm import batch_moments, compute_dtype
from cnn_arch.norm.population import feature_axis, is_batch_norm


def _normalize_with_own_statistics(module: nn.Module, x: jax.Array) -> jax.Array:
    """What a BN layer outputs in training mode when its statistics are those of all of
    ``x`` (Alg. 1 lines 1-4): (x - mu_B) / sqrt(sigma2_B + eps) * gamma + beta."""
    f = feature_axis(module, x.ndim)
    cdtype = compute_dtype(x, getattr(module, "dtype", None))
    xc = x.astype(cdtype)
    mean, var = batch_moments(xc, tuple(i for i in range(x.ndim) if i != f))
    y = (xc - mean) * lax.rsqrt(var + module.epsilon)
    shape = [1] * x.ndim
    shape[f] = x.shape[f]
    if module.use_scale:
        y = y * module.get_variable("params", "scale").reshape(shape).astype(cdtype)
    if module.use_bias:
        y = y + module.get_variable("params", "bias").reshape(shape).astype(cdtype)
    return y.astype(jnp.promote_types(cdtype, module.param_dtype))


def batch_statistics_predict(model: nn.Module) -> Callable:
    """``predict(variables, images)``: ``model`` in inference mode except that every BN
    layer (flax's, Algorithm 1's, ghost BN) normalizes with the statistics of ``images``."""

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and is_batch_norm(context.module):
            return _normalize_with_own_statistics(context.module, args[0])
        return next_fun(*args, **kwargs)

    def predict(variables, images):
        with nn.intercept_methods(interceptor):
            return model.apply(variables, images, train=False)

    return predict


def regroup(batches: Iterable[dict], size: int) -> Iterator[dict]:
    """The real (mask > 0) examples of ``batches``, in order, in batches of exactly
    ``size``; the last batch is filled up with the first examples of the stream (repeated
    if the stream is shorter than ``size``) at mask 0."""
    pending: dict[str, np.ndarray] | None = None
    head: dict[str, np.ndarray] | None = None  # the stream's first ``size`` real examples

    def cat(a, b):
        return b if a is None else {k: np.concatenate([a[k], b[k]]) for k in a}

    for batch in batches:
        batch = {k: np.asarray(v) for k, v in batch.items()}
        n = len(batch["mask"])
        real = batch["mask"].reshape(n, -1).max(axis=1) > 0
        part = {k: v[real] for k, v in batch.items()}
        if head is None or len(head["mask"]) < size:
            head = cat(head, part)
            head = {k: v[:size] for k, v in head.items()}
        pending = cat(pending, part)
        while len(pending["mask"]) >= size:
            yield {k: v[:size] for k, v in pending.items()}
            pending = {k: v[size:] for k, v in pending.items()}
    left = 0 if pending is None else len(pending["mask"])
    if left:
        fill = np.arange(size - left) % len(head["mask"])
        filler = {k: v[fill] for k, v in head.items()}
        filler["mask"] = np.zeros_like(filler["mask"])
        yield cat(pending, filler)


@register("batch_stats")
@dataclasses.dataclass
class BatchStats(Evaluator):
    batch_size: int = 0  # examples per evaluation (and BN) batch; 0 = config.eval_batch_size
    split: str = ""  # '' = config.eval_split

    @staticmethod
    def check_options(name, spec, config) -> None:
        size = spec.get("batch_size", 0)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(
                f"config.evals.{name}.batch_size={size!r}: it must be an integer >= 1 "
                "(0 = config.eval_batch_size)"
            )

    def __post_init__(self):
        self.check_options(self.name, {"batch_size": self.batch_size}, self.run.config)
        if jax.process_count() > 1:
            raise ValueError("batch_stats evaluates in one process only (batches span the split)")
        predict = batch_statistics_predict(self.run.model)
        task = self.run.task
        replicated = parallel.replicated(self.run.mesh)
        # The whole batch on every device: its statistics must be of all its examples, and
        # batch_size may be smaller than the device count.
        self._eval_fn = jax.jit(
            lambda variables, batch: task.eval_sums(predict(variables, batch["image"]), batch),
            in_shardings=(replicated, replicated),
            out_shardings=replicated,
        )

    def __call__(self, state):
        if not jax.tree.leaves(state.batch_stats):
            raise ValueError(
                f"model {self.run.config.model!r} with model_kwargs "
                f"{self.run.config.model_kwargs.to_dict()} has no BatchNorm layer; "
                "batch statistics would change nothing (use kind 'running')"
            )
        config = self.run.config
        info = self.run.info
        if self.split and self.split != config.eval_split:
            config = ml_collections.ConfigDict(config.to_dict())
            config.eval_split = self.split
            info = data.dataset_info(config, self.run.task.data_kind)
        size = self.batch_size or config.eval_batch_size
        totals = None
        reads = data.eval_batches(config, info, local_batch_size=config.eval_batch_size)
        for batch in regroup(reads, size):
            sums = self._eval_fn(state.variables, batch)
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        return metrics.averages(jax.device_get(totals))
