"""Shared building blocks: the norm / activation / conv factories every model uses.

Models never instantiate ``nn.BatchNorm`` or pick an activation directly; they ask
these factories, so every architecture gets every option (``norm='batch'|'layer'|
'group'|'instance'|'none'``, any activation) without copies.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnn_arch.norm.kinds import NORM_KINDS as _BN_LAB_KINDS  # norm/ never imports models/

ModuleDef = Any
Dtype = Any

# Running-average momentum and epsilon of torchvision's BatchNorm (PyTorch's
# momentum=0.1 is Flax's 0.9), so reference recipes carry over unchanged.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


class Identity(nn.Module):
    """A no-op layer standing in for ``norm='none'``."""

    @nn.compact
    def __call__(self, x):
        return x


# Groups of Group Normalization (Wu & He 2018, Sec. 3.1 and Table 3: G=32 is the default).
GROUP_NORM_GROUPS = 32


class GroupNorm(nn.Module):
    """``nn.GroupNorm`` whose group count fits the layer: gcd(32, C) unless told otherwise.

    The paper's G=32 does not divide narrow layers (16, 24, 144 channels); gcd(32, C),
    the largest power of two up to 32 that divides C, does (C=16: 16 groups of 1,
    C=24: 8 of 3, C=144: 16 of 9), and it is 32 whenever 32 divides C, so wide layers
    keep the paper's grouping. An explicit ``num_groups``
    (or ``group_size``) is used as given and must divide C. The inner layer shares this
    module's scope, so the parameters are ``<name>/scale`` and ``<name>/bias``, the
    same tree as a plain ``nn.GroupNorm`` named ``<name>``.
    """

    num_groups: int | None = None  # None: gcd(GROUP_NORM_GROUPS, channels)
    group_size: int | None = None  # channels per group; excludes num_groups
    epsilon: float = 1e-6
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True

    @nn.compact
    def __call__(self, x):
        num_groups = self.num_groups
        if num_groups is None and self.group_size is None:
            num_groups = math.gcd(GROUP_NORM_GROUPS, x.shape[-1])
        inner = nn.GroupNorm(
            num_groups=num_groups,
            group_size=self.group_size,
            epsilon=self.epsilon,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            use_bias=self.use_bias,
            use_scale=self.use_scale,
        )
        nn.share_scope(self, inner)  # params live directly under this module's name
        return inner(x)


def _group_norm(**kwargs) -> nn.Module:
    return GroupNorm(**kwargs)


def _instance_norm(**kwargs) -> nn.Module:
    # InstanceNorm is GroupNorm with one channel per group (Ulyanov et al. 2016).
    return nn.GroupNorm(num_groups=None, group_size=1, **kwargs)


def _batch_norm(*, train: bool, momentum: float, epsilon: float, dtype: Dtype, axis_name, **kw):
    return functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=momentum,
        epsilon=epsilon,
        dtype=dtype,
        axis_name=axis_name,
        **kw,
    )


def _layer_norm(*, train: bool, momentum: float, epsilon: float, dtype: Dtype, axis_name, **kw):
    del train, momentum, axis_name
    return functools.partial(nn.LayerNorm, epsilon=epsilon, dtype=dtype, **kw)


def _group(*, train: bool, momentum: float, epsilon: float, dtype: Dtype, axis_name, **kw):
    del train, momentum, axis_name
    return functools.partial(_group_norm, epsilon=epsilon, dtype=dtype, **kw)


def _instance(*, train: bool, momentum: float, epsilon: float, dtype: Dtype, axis_name, **kw):
    del train, momentum, axis_name
    return functools.partial(_instance_norm, epsilon=epsilon, dtype=dtype, **kw)


def _none(**_):
    return Identity


# name -> builder(train=, momentum=, epsilon=, dtype=, axis_name=, **extra) -> ModuleDef.
# Other modules (e.g. the BatchNorm lab) register more kinds here.
NORMS: dict[str, Callable[..., ModuleDef]] = {
    "batch": _batch_norm,
    "layer": _layer_norm,
    "group": _group,
    "instance": _instance,
    "none": _none,
}
# The BatchNorm lab (cnn_arch/norm): 'batch_alg1', 'batch_alg1_manual', 'ghost_batch'.
NORMS.update(_BN_LAB_KINDS)


def make_norm(
    kind: str,
    *,
    train: bool,
    dtype: Dtype = jnp.float32,
    momentum: float = BN_MOMENTUM,
    epsilon: float = BN_EPSILON,
    axis_name: str | None = None,
    **extra,
) -> ModuleDef:
    """Returns a module constructor for normalization ``kind``; call it with ``name=...``."""
    if kind not in NORMS:
        raise ValueError(f"norm={kind!r} is not known; choose one of {sorted(NORMS)}")
    return NORMS[kind](
        train=train, momentum=momentum, epsilon=epsilon, dtype=dtype, axis_name=axis_name, **extra
    )


def is_normalized(kind: str) -> bool:
    """True when ``kind`` carries its own shift, so a preceding conv/dense needs no bias."""
    return kind != "none"


def scaled_tanh(x):
    """LeCun's squashing function 1.7159 tanh(2x/3) (LeCun et al. 1998, Appendix A)."""
    return 1.7159 * jnp.tanh(2.0 * x / 3.0)


ACTIVATIONS: dict[str, Callable] = {
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
    "tanh": jnp.tanh,
    "scaled_tanh": scaled_tanh,
    "gelu": nn.gelu,
    "swish": nn.swish,
    "identity": lambda x: x,
}


def make_act(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is not known; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# torchvision initialises convs with kaiming_normal(fan_out) in ResNet/VGG; Flax's
# ImageNet example uses the same. Models that follow a different paper say so.
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def make_conv(dtype: Dtype = jnp.float32, **kwargs) -> ModuleDef:
    """A ``nn.Conv`` partial with the compute dtype; ``param_dtype`` stays float32."""
    return functools.partial(nn.Conv, dtype=dtype, **kwargs)


NORM_POSITIONS = ("before", "after", "input")


def norm_act(x, norm: ModuleDef, act: Callable, position: str, name: str):
    """Normalization and nonlinearity in the order ``position`` asks for.

    'before': BN(x) then act, as in the BN paper (Sec. 3.2); 'after': act then BN;
    'input': only act here (the normalization is applied to the layer's input).
    """
    if position == "before":
        return act(norm(name=name)(x))
    if position == "after":
        return norm(name=name)(act(x))
    if position == "input":
        return act(x)
    raise ValueError(f"norm_position={position!r} is not known; choose one of {NORM_POSITIONS}")
