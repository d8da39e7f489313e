"""Batch Normalization, Algorithm 1 of Ioffe & Szegedy (2015), as our own linen module.

Over a mini-batch B = {x_1..x_m} of one feature (for a conv feature map: every batch
element *and* spatial position, Sec. 3.2, so m = N*H*W):

    mu_B     = 1/m sum_i x_i
    sigma2_B = 1/m sum_i (x_i - mu_B)^2          (biased: it normalizes *this* batch)
    xhat_i   = (x_i - mu_B) / sqrt(sigma2_B + eps)
    y_i      = gamma * xhat_i + beta

``BatchNorm`` is a drop-in for ``flax.linen.BatchNorm``: the same variable names
('params': 'scale', 'bias'; 'batch_stats': 'mean', 'var'), the same momentum
semantics (ra = momentum * ra + (1 - momentum) * batch_stat), the same dtype
promotion, and ``axis_name`` for a ``lax.pmean`` of the statistics under shard_map.
Like flax, the running variance is updated with the *biased* batch variance
sigma2_B; Algorithm 2's unbiased m/(m-1) correction is applied when population
statistics are re-estimated (``cnn_arch.norm.population``), not here.

``backward='manual'`` replaces autodiff by the paper's hand-derived gradients
(Sec. 3, the chain rule below Algorithm 1) through ``jax.custom_vjp``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any
Axes = tuple[int, ...]

BACKWARDS = ("autodiff", "manual")


def _global_mean(v: jax.Array, axes: Axes, axis_name: str | None) -> jax.Array:
    """Mean over ``axes`` (kept as size-1 dims), and over devices when ``axis_name`` is set."""
    mean = jnp.mean(v, axes, keepdims=True)
    return mean if axis_name is None else lax.pmean(mean, axis_name)


def _global_sum(v: jax.Array, axes: Axes, axis_name: str | None) -> jax.Array:
    total = jnp.sum(v, axes, keepdims=True)
    return total if axis_name is None else lax.psum(total, axis_name)


def batch_moments(
    x: jax.Array, axes: Axes, axis_name: str | None = None
) -> tuple[jax.Array, jax.Array]:
    """Mini-batch mean and *biased* variance over ``axes`` (Alg. 1, lines 1-2), keepdims.

    Two passes (variance of the centred values, as written in the paper) rather than
    flax's E[x^2] - E[x]^2: equal in exact arithmetic, and no cancellation when the
    mean is large. Under ``axis_name`` the statistics are those of the global batch.
    """
    mean = _global_mean(x, axes, axis_name)
    var = _global_mean(jnp.square(x - mean), axes, axis_name)
    return mean, var


def batch_norm_train(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    axes: Axes,
    epsilon: float,
    axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Algorithm 1 (autodiff backward): returns ``(y, mu_B, sigma2_B)``, stats with keepdims.

    ``scale`` and ``bias`` broadcast against ``x`` (shape 1 on the reduced axes).
    """
    mean, var = batch_moments(x, axes, axis_name)
    inv = lax.rsqrt(var + epsilon)
    y = (x - mean) * inv * scale + bias
    return y, mean, var


def _sum_to(v: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Sums ``v`` down to ``shape``, which broadcasts against it (the adjoint of broadcasting)."""
    full = (1,) * (v.ndim - len(shape)) + tuple(shape)
    axes = tuple(i for i, (a, b) in enumerate(zip(v.shape, full, strict=True)) if b == 1 and a != 1)
    return jnp.sum(v, axes, keepdims=True).reshape(shape)


def _vma(v: jax.Array) -> frozenset:
    """The mesh axes along which ``v`` varies inside ``shard_map`` (empty outside it)."""
    aval = jax.typeof(v)
    mat = getattr(aval, "manual_axis_type", None)  # jax >= 0.9; older: ``aval.vma``
    return frozenset(mat.varying if mat is not None else getattr(aval, "vma", ()))


def _vary_like(v: jax.Array, x: jax.Array) -> jax.Array:
    """Marks a replicated ``v`` (gamma/beta) as varying along the mesh axes ``x`` varies on.

    Under ``shard_map`` autodiff broadcasts replicated parameters to every shard
    implicitly and transposes that into a ``psum`` of the per-shard gradients. A
    ``custom_vjp`` must return cotangents of its inputs' types, so the broadcast is made
    explicit here: the rule returns per-shard sums and ``pcast``'s transpose adds them up.
    """
    axes = tuple(sorted(_vma(x) - _vma(v)))
    return lax.pcast(v, axes, to="varying") if axes else v


def batch_norm_train_manual(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    axes: Axes,
    epsilon: float,
    axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``batch_norm_train`` with the paper's hand-derived backward pass (a ``custom_vjp``)."""
    scale, bias = _vary_like(scale, x), _vary_like(bias, x)
    return _batch_norm_train_manual(x, scale, bias, axes, epsilon, axis_name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _batch_norm_train_manual(x, scale, bias, axes, epsilon, axis_name):
    return batch_norm_train(x, scale, bias, axes, epsilon, axis_name)


def _manual_fwd(x, scale, bias, axes, epsilon, axis_name):
    mean, var = batch_moments(x, axes, axis_name)
    inv = lax.rsqrt(var + epsilon)
    xc = x - mean
    y = xc * inv * scale + bias
    return (y, mean, var), (xc, inv, scale)


def _manual_bwd(axes, epsilon, axis_name, res, cts):
    """The chain rule of Sec. 3 (below Algorithm 1), sums over the (global) mini-batch.

    dl/dxhat_i  = dl/dy_i * gamma
    dl/dsigma2  = sum_i dl/dxhat_i (x_i - mu) * -1/2 (sigma2 + eps)^(-3/2)
    dl/dmu      = sum_i dl/dxhat_i * -1/sqrt(sigma2 + eps)  [+ dl/dsigma2 * sum_i -2(x_i - mu)/m,
                  which is exactly 0 because mu is the mean of these x_i, so it is dropped]
    dl/dx_i     = dl/dxhat_i / sqrt(sigma2 + eps) + dl/dsigma2 * 2(x_i - mu)/m + dl/dmu / m
    dl/dgamma   = sum_i dl/dy_i * xhat_i,   dl/dbeta = sum_i dl/dy_i

    ``mu`` and ``sigma2`` are also outputs (they feed the running averages), so their
    cotangents are added to dl/dmu and dl/dsigma2 to keep the rule exact for any use.
    """
    del epsilon  # folded into ``inv``
    xc, inv, scale = res
    dy, dmean_out, dvar_out = cts
    m = math.prod(xc.shape[a] for a in axes)
    if axis_name is not None:
        m = m * lax.axis_size(axis_name)
    dxhat = dy * scale
    dvar = _global_sum(dxhat * xc, axes, axis_name) * (-0.5 * inv**3) + dvar_out
    dmean = _global_sum(dxhat, axes, axis_name) * -inv + dmean_out
    dx = dxhat * inv + dvar * (2.0 / m) * xc + dmean * (1.0 / m)
    dscale = _sum_to(dy * (xc * inv), scale.shape)
    dbias = _sum_to(dy, scale.shape)  # beta has gamma's shape and type
    return dx, dscale.astype(scale.dtype), dbias.astype(scale.dtype)


_batch_norm_train_manual.defvjp(_manual_fwd, _manual_bwd)


def normalize_train(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    axes: Axes,
    epsilon: float,
    axis_name: str | None = None,
    backward: str = "autodiff",
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Dispatches Algorithm 1 to the autodiff or the hand-derived backward pass."""
    if backward == "autodiff":
        return batch_norm_train(x, scale, bias, axes, epsilon, axis_name)
    if backward == "manual":
        return batch_norm_train_manual(x, scale, bias, axes, epsilon, axis_name)
    raise ValueError(f"backward={backward!r} is not known; choose one of {BACKWARDS}")


def compute_dtype(x: jax.Array, dtype: Dtype | None) -> Any:
    """Statistics and normalization run in at least float32, as in flax (half-precision safe)."""
    return jnp.promote_types(dtype if dtype is not None else x.dtype, jnp.float32)


class BatchNorm(nn.Module):
    """Algorithm 1 of the BN paper; a drop-in for ``flax.linen.BatchNorm``.

    Attributes mirror flax's (``use_running_average``, ``axis``, ``momentum``,
    ``epsilon``, ``dtype``, ``param_dtype``, ``use_bias``, ``use_scale``, inits,
    ``axis_name``) plus ``backward``: 'autodiff' (JAX differentiates the forward) or
    'manual' (the paper's hand-derived gradients as a ``jax.custom_vjp``).
    """

    use_running_average: bool | None = None
    axis: int = -1
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Any = nn.initializers.zeros
    scale_init: Any = nn.initializers.ones
    axis_name: str | None = None
    backward: str = "autodiff"

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None):
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        feature_axis = self.axis % x.ndim
        axes = tuple(i for i in range(x.ndim) if i != feature_axis)
        features = x.shape[feature_axis]
        bshape = [1] * x.ndim
        bshape[feature_axis] = features

        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        scale = (
            self.param("scale", self.scale_init, (features,), self.param_dtype)
            if self.use_scale
            else jnp.ones((features,), self.param_dtype)
        )
        bias = (
            self.param("bias", self.bias_init, (features,), self.param_dtype)
            if self.use_bias
            else jnp.zeros((features,), self.param_dtype)
        )
        cdtype = compute_dtype(x, self.dtype)
        xc = x.astype(cdtype)
        s = scale.reshape(bshape).astype(cdtype)
        b = bias.reshape(bshape).astype(cdtype)

        if use_running_average:
            mean = ra_mean.value.reshape(bshape)
            var = ra_var.value.reshape(bshape)
            y = (xc - mean) * lax.rsqrt(var + self.epsilon) * s + b
        else:
            # As in flax: no cross-device reduction while initializing (the axis may not exist).
            axis_name = None if self.is_initializing() else self.axis_name
            y, mean, var = normalize_train(xc, s, b, axes, self.epsilon, axis_name, self.backward)
            if not self.is_initializing():
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1 - m) * mean.reshape(features)
                ra_var.value = m * ra_var.value + (1 - m) * var.reshape(features)

        out_dtype = nn.dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype)
        return y.astype(out_dtype)
