"""Algorithm 2 (Ioffe & Szegedy 2015), step 10: population statistics for inference.

After training, every BN layer's E[x] and Var[x] are re-estimated from N training
mini-batches of size m, with the network in *training* mode (so each layer sees the
inputs it saw while training):

    E[x]   <- E_B[mu_B]
    Var[x] <- m/(m-1) E_B[sigma2_B]          (unbiased; sigma2_B is the biased batch var)

and written over the exponential running averages in 'batch_stats'. For a conv
feature map m = N*H*W (the effective mini-batch, Sec. 3.2); for ghost BN it is the
sub-batch k*H*W.

How the raw statistics are obtained: ``nn.intercept_methods`` wraps every BN layer's
``__call__`` during a training-mode forward pass; the interceptor computes the
layer's own mini-batch moments of the input it receives (the same reduction the
layer performs) and records them under the layer's path, then lets the layer run
normally. This is exact (no momentum inversion, no model changes) and works for any
architecture built from ``flax.linen.BatchNorm``, ``cnn_arch.norm.BatchNorm`` or
``GhostBatchNorm``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import meta

from cnn_arch.norm.batchnorm import BatchNorm, batch_moments, compute_dtype
from cnn_arch.norm.ghost import GhostBatchNorm, ghost_split

Path = tuple[str, ...]
BATCH_NORM_TYPES = (nn.BatchNorm, BatchNorm, GhostBatchNorm)


def is_batch_norm(module: nn.Module) -> bool:
    """True for the BN layers this lab understands (flax's, Algorithm 1's and ghost BN)."""
    return isinstance(module, BATCH_NORM_TYPES)


def feature_axis(module: nn.Module, ndim: int) -> int:
    """The (non-negative) feature axis of a BN layer applied to a rank-``ndim`` input."""
    axis = getattr(module, "axis", -1)
    if not isinstance(axis, int):
        raise ValueError(f"BN layer {module.path} normalizes over several feature axes {axis}")
    return axis % ndim


def uses_batch_statistics(module: nn.Module, args: tuple, kwargs: dict) -> bool:
    """Whether this BN call normalizes with mini-batch statistics (training mode)."""
    call_value = kwargs.get("use_running_average", args[1] if len(args) > 1 else None)
    return not nn.merge_param("use_running_average", module.use_running_average, call_value)


def layer_moments(module: nn.Module, x: jax.Array) -> tuple[jax.Array, jax.Array, int]:
    """A BN layer's mini-batch ``(mu_B, sigma2_B, m)`` for input ``x``, per feature.

    For ghost BN the mean and variance are averaged over the sub-batches (as its running
    averages are) and m is the sub-batch's element count per feature.
    """
    x = x.astype(compute_dtype(x, getattr(module, "dtype", None)))
    if isinstance(module, GhostBatchNorm):
        x = ghost_split(x, module.ghost_batch_size)
        axes = tuple(range(1, x.ndim - 1))
        mean, var = batch_moments(x, axes)
        c = x.shape[-1]
        return mean.reshape(-1, c).mean(0), var.reshape(-1, c).mean(0), math.prod(x.shape[1:-1])
    f = feature_axis(module, x.ndim)
    axes = tuple(i for i in range(x.ndim) if i != f)
    mean, var = batch_moments(x, axes)
    return mean.reshape(-1), var.reshape(-1), math.prod(x.shape[a] for a in axes)


def batch_statistics(apply_fn: Callable[..., Any], variables: Any, batch: Any) -> dict:
    """``{layer path: (mu_B, sigma2_B, m)}`` for every training-mode BN call on ``batch``.

    ``apply_fn(variables, batch)`` must run the model in training mode, e.g.
    ``functools.partial(model.apply, train=True, mutable=['batch_stats'])``.
    Traceable (use it under ``jax.jit`` with ``apply_fn`` static).
    """
    stats: dict[Path, tuple[jax.Array, jax.Array, int]] = {}

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if (
            context.method_name == "__call__"
            and is_batch_norm(module)
            and uses_batch_statistics(module, args, kwargs)
        ):
            path = tuple(module.path)
            if path in stats:
                raise ValueError(
                    f"BN layer {'/'.join(path)} is called more than once per forward pass; "
                    "its population statistics are ambiguous"
                )
            stats[path] = layer_moments(module, args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        apply_fn(variables, batch)
    return stats


def population_statistics(
    apply_fn: Callable[..., Any],
    variables: Any,
    batches: Iterable[Any],
    *,
    jit: bool = True,
) -> Any:
    """Algorithm 2, step 10: replaces every BN layer's running mean/var by population estimates.

    ``apply_fn(variables, batch)`` runs the model in *training* mode (batch statistics),
    e.g. ``functools.partial(model.apply, train=True, mutable=['batch_stats'])``;
    ``batches`` yields N training mini-batches (whatever ``apply_fn`` takes as input).
    Returns new variables whose ``batch_stats`` hold E[x] = mean over batches of mu_B and
    Var[x] = mean over batches of m/(m-1) sigma2_B (the paper's m/(m-1) E_B[sigma2_B]
    when all batches have the same m). BN layers not called in training mode keep their
    running averages. Parameters are unchanged.
    """
    step = jax.jit(batch_statistics, static_argnums=0) if jit else batch_statistics
    sums: dict[Path, list] = {}
    count = 0
    for batch in batches:
        for path, (mean, var, m) in step(apply_fn, variables, batch).items():
            if m < 2:
                raise ValueError(f"BN layer {'/'.join(path)} sees m={m} < 2 values per feature")
            unbiased = var * (m / (m - 1))
            if path in sums:
                sums[path][0] += mean
                sums[path][1] += unbiased
            else:
                sums[path] = [mean, unbiased]
        count += 1
    if count == 0:
        raise ValueError("population_statistics needs at least one mini-batch")

    variables = meta.unbox(variables)
    batch_stats = jax.tree.map(lambda v: v, dict(variables["batch_stats"]))  # a fresh copy
    for path, (mean_sum, var_sum) in sums.items():
        node = batch_stats
        for name in path:
            node[name] = dict(node[name])
            node = node[name]
        node["mean"] = jnp.asarray(mean_sum / count, node["mean"].dtype)
        node["var"] = jnp.asarray(var_sum / count, node["var"].dtype)
    return {**variables, "batch_stats": batch_stats}
