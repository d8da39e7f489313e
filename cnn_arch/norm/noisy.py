""" "Noisy" BatchNorm (Santurkar et al. 2018, Sec. 2.1 and Appendix A): BN followed by a
random per-channel scale and shift drawn afresh at every training step.

Santurkar et al. inject "internal covariate shift" on purpose: after each BN layer
the activations are perturbed with noise of non-zero mean and non-unit variance whose
distribution changes at every step, so the distribution of each layer's input moves
from step to step however well BN normalized it. Our reading: at every step t and for
every channel c we draw a shift m_tc ~ U(-noise_shift, noise_shift) and a scale
s_tc ~ U(1, noise_scale), and the layer outputs s_tc * BN(x) + m_tc; the values of
``noise_shift`` / ``noise_scale`` are ours (``NOISE_SHIFT`` / ``NOISE_SCALE``).

The draw is stateless: it comes from the step's 'dropout' key (``steps.step_rng``,
folded in with this layer's path by Flax), so the same seed and step give the same
noise, a resumed run repeats it, and every layer draws its own. At eval
(``use_running_average``) the layer is plain BN with its running averages; the
variables are exactly those of ``flax.linen.BatchNorm`` (the running averages see the
normalized batch statistics before the noise, as in plain BN).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Shift bound and largest scale of the injected noise (ours; see the module docstring).
NOISE_SHIFT = 0.5
NOISE_SCALE = 1.5


def draw_noise(key: jax.Array, features: int, shift: float, scale: float):
    """(scale, shift) per channel: s ~ U(1, scale), m ~ U(-shift, shift), float32."""
    ks, km = jax.random.split(key)
    s = jax.random.uniform(ks, (features,), jnp.float32, 1.0, scale)
    m = jax.random.uniform(km, (features,), jnp.float32, -shift, shift)
    return s, m


class NoisyBatchNorm(nn.Module):
    """``flax.linen.BatchNorm`` (feature axis last) whose training output gets a random
    per-channel scale and shift that change every step; plain BN at eval."""

    use_running_average: bool | None = None
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any | None = None
    param_dtype: Any = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    axis_name: str | None = None
    noise_shift: float = NOISE_SHIFT
    noise_scale: float = NOISE_SCALE
    rng_name: str = "dropout"  # the stream the train step provides (steps.training_loss)

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None):
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        if self.noise_shift < 0 or self.noise_scale < 1:
            raise ValueError(
                f"noisy BN needs noise_shift >= 0 and noise_scale >= 1; got "
                f"{self.noise_shift}, {self.noise_scale}"
            )
        inner = nn.BatchNorm(
            use_running_average=use_running_average,
            momentum=self.momentum,
            epsilon=self.epsilon,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            use_bias=self.use_bias,
            use_scale=self.use_scale,
            axis_name=self.axis_name,
        )
        nn.share_scope(self, inner)  # the variables of a plain BN layer of this name
        y = inner(x)
        if use_running_average or self.is_initializing():
            return y
        s, m = draw_noise(
            self.make_rng(self.rng_name), x.shape[-1], self.noise_shift, self.noise_scale
        )
        return (y * s.astype(y.dtype) + m.astype(y.dtype)).astype(y.dtype)
