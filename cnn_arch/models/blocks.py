"""Blocks with parameters that several families share: conv -> norm -> activation, the
squeeze-and-excitation gate, and the Inception module (a concat block).

Each block names its sub-layers as the families always have, so parameter trees do
not depend on where the code lives: ``conv_norm_act`` creates ``<name>`` and
``<name>_norm`` in the calling module (MobileNet, ShuffleNet), ``ConvNormAct`` is the
same as its own module with children ``conv`` and ``norm`` (GoogLeNet, BN-Inception,
SqueezeNet), ``SqueezeExcite`` has ``fc1`` and ``fc2``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnn_arch.models import layers

ModuleDef = Any


def conv_norm_act(
    x,
    conv: ModuleDef,
    norm: ModuleDef,
    act: Callable | None,
    features: int,
    kernel: int = 1,
    stride: int = 1,
    *,
    padding: Any = None,
    groups: int = 1,
    name: str,
    norm_name: str | None = None,
):
    """conv (``name``) -> norm (``norm_name``, default ``<name>_norm``) -> ``act`` (None:
    none), built in the calling module's scope. ``padding`` None is kernel // 2 on each
    side (size-preserving at stride 1, PyTorch's convention); ``groups`` = ``features`` =
    input channels makes the conv depthwise."""
    pad = kernel // 2 if padding is None else padding
    x = conv(features, (kernel, kernel), stride, pad, feature_group_count=groups, name=name)(x)
    x = norm(name=norm_name or f"{name}_norm")(x)
    return act(x) if act is not None else x


class ConvNormAct(nn.Module):
    """``conv_norm_act`` as a module (children ``conv``, ``norm``); the conv has a bias
    only without a norm (Ioffe & Szegedy 2015, Sec. 3.2)."""

    features: int
    kernel: int = 1
    stride: int = 1
    padding: Any = 0  # int (symmetric, PyTorch style) or "SAME"
    groups: int = 1
    norm: str = "none"
    norm_epsilon: float = layers.BN_EPSILON
    activation: str = "relu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        norm = layers.make_norm(self.norm, train=train, dtype=self.dtype, epsilon=self.norm_epsilon)
        conv = layers.make_conv(self.dtype, use_bias=not layers.is_normalized(self.norm))
        act = layers.make_act(self.activation)
        return conv_norm_act(
            x, conv, norm, act, self.features, self.kernel, self.stride,
            padding=self.padding, groups=self.groups, name="conv", norm_name="norm",
        )  # fmt: skip


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018, Sec. 3, Fig. 2-3): global average pool
    ("squeeze", Sec. 3.1) -> FC C/r -> ReLU -> FC C -> sigmoid ("excitation", Sec. 3.2)
    -> channel-wise scale of the input. The paper's r is 16 (Sec. 6.1, Table 10).

    A family takes it with ``se_ratio=r`` (0: none) on what a block computes, before it
    merges with what the block passes through: the residual branch before the addition
    (SE-ResNet, Fig. 3), the concatenated output of an Inception module (SE-Inception,
    Fig. 2) or a Fire module, the new features of a dense layer, the computed branch of
    a ShuffleNet unit.
    """

    reduction: int = 16
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        s = jnp.mean(x, axis=(1, 2))  # squeeze: global average pooling (Sec. 3.1)
        s = nn.Dense(max(1, channels // self.reduction), dtype=self.dtype, name="fc1")(s)
        s = nn.Dense(channels, dtype=self.dtype, name="fc2")(nn.relu(s))
        return x * nn.sigmoid(s)[:, None, None, :].astype(x.dtype)


def squeeze_excite(x, se_ratio: int, dtype: Any, name: str = "se"):
    """``SqueezeExcite(se_ratio)`` named ``name`` in the calling module, or ``x`` if 0."""
    return SqueezeExcite(se_ratio, dtype=dtype, name=name)(x) if se_ratio else x


class Inception(nn.Module):
    """Parallel branches concatenated on channels (GoogLeNet Sec. 4, BN paper Fig. 5).

    ``branches``: per conv branch, its (features, kernel, stride) layers in order;
    then a 3x3 ``pool`` branch with ``pool_stride``, projected by a 1x1 conv to
    ``pool_proj`` channels, or passing its input channels through when 0.
    'SAME' padding everywhere so all branches agree in size (ceil(H/stride)).
    ``se_ratio`` > 0 gates the concatenated output (SE-Inception, Hu et al. Fig. 2).
    """

    branches: Sequence[Sequence[tuple[int, int, int]]]
    pool: str = "max"
    pool_stride: int = 1
    pool_proj: int = 0
    unit: ModuleDef = ConvNormAct
    se_ratio: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        outs = []
        for b, convs in enumerate(self.branches):
            y = x
            for j, (features, kernel, stride) in enumerate(convs):
                y = self.unit(features, kernel, stride, "SAME", name=f"branch{b + 1}_{j + 1}")(
                    y, train=train
                )
            outs.append(y)
        s = self.pool_stride  # avg pools count the zero padding, as Caffe and PyTorch do
        y = getattr(nn, f"{self.pool}_pool")(x, (3, 3), (s, s), "SAME")
        if self.pool_proj:
            y = self.unit(self.pool_proj, name="pool_proj")(y, train=train)
        return squeeze_excite(jnp.concatenate([*outs, y], axis=-1), self.se_ratio, self.dtype)
