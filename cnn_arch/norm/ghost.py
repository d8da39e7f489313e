"""Ghost (virtual) Batch Normalization (Hoffer et al. 2017; Goyal et al. 2017, Sec. 5.1).

The batch is cut into fixed consecutive sub-batches of ``ghost_batch_size`` k examples
and every sub-batch is normalized with its own Algorithm-1 statistics (over its k
examples and all spatial positions). Training then sees the noise of a k-example
batch whatever the global batch is, and per-device BN on n devices is exactly ghost
BN with k = global batch / n (see ``per_device.py``). The running averages are
updated once per step with the mean over sub-batches of their mean and of their
(biased) variance; eval uses them like plain BN.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from cnn_arch.norm.batchnorm import compute_dtype, normalize_train

Dtype = Any

# The sub-batch size when ``norm='ghost_batch'`` is chosen without an explicit one:
# 32 examples per BN batch, the per-worker BN batch of Goyal et al. (2017).
DEFAULT_GHOST_BATCH_SIZE = 32


def ghost_split(x: jax.Array, k: int) -> jax.Array:
    """(N, ...) -> (N // k, k, ...): consecutive sub-batches; N must be a multiple of k."""
    n = x.shape[0]
    if k <= 0 or n % k:
        raise ValueError(
            f"ghost_batch_size={k} must divide the batch size {n} (sub-batches are equal)"
        )
    return x.reshape((n // k, k) + x.shape[1:])


class GhostBatchNorm(nn.Module):
    """BN whose training statistics come from consecutive sub-batches of ``ghost_batch_size``.

    Same variables as ``flax.linen.BatchNorm`` (feature axis last). ``axis_name`` does
    *not* merge the sub-batch statistics across devices (they are local by design); it
    only averages the running-average update over that axis so replicated state stays
    replicated. ``backward`` as in ``BatchNorm``. While initializing, a batch that
    ``ghost_batch_size`` does not divide is treated as one sub-batch (no state changes).
    """

    ghost_batch_size: int = DEFAULT_GHOST_BATCH_SIZE
    use_running_average: bool | None = None
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
        features = x.shape[-1]
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
        out_dtype = nn.dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype)
        xc = x.astype(cdtype)
        s = scale.astype(cdtype)
        b = bias.astype(cdtype)

        if use_running_average:
            y = (xc - ra_mean.value) * lax.rsqrt(ra_var.value + self.epsilon) * s + b
            return y.astype(out_dtype)

        k = self.ghost_batch_size
        if self.is_initializing() and x.shape[0] % k:
            k = x.shape[0]
        g = ghost_split(xc, k)  # (G, k, ..., C): statistics over all axes but 0 and -1
        axes = tuple(range(1, g.ndim - 1))
        y, mean, var = normalize_train(g, s, b, axes, self.epsilon, None, self.backward)
        if not self.is_initializing():
            mean = jnp.mean(mean.reshape(-1, features), axis=0)
            var = jnp.mean(var.reshape(-1, features), axis=0)
            if self.axis_name is not None:
                mean, var = lax.pmean((mean, var), self.axis_name)
            m = self.momentum
            ra_mean.value = m * ra_mean.value + (1 - m) * mean
            ra_var.value = m * ra_var.value + (1 - m) * var
        return y.reshape(x.shape).astype(out_dtype)
