"""Shared layers: the norm / activation / conv factories every model uses, and the
parameter-free operations several families share (PyTorch-shaped pooling, local
response normalization, padding to a minimum size).

Models never instantiate ``nn.BatchNorm`` or pick an activation directly; they ask
these factories, so every architecture gets every option (``norm='batch'|'layer'|
'group'|'instance'|'none'``, any activation) without copies. Blocks with parameters
built from these (conv-norm-act, squeeze-excite, the Inception module) are in
``blocks.py``.

Small inputs (the size rule shared by the classic ImageNet nets): a pooling window
larger than its (padded) input is clipped to the input, so a pool never makes a map
smaller than 1x1 (``pool2d``); the flatten before the FCs of AlexNet and VGG is
preceded by an adaptive average pool (``adaptive_avg_pool``, PyTorch's rule, which
also works when the map is smaller than the target by repeating cells).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax

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
    """``nn.GroupNorm`` whose group count fits the layer: gcd(32, C) unless told otherwise
    (``max_groups`` replaces the 32).

    The paper's G=32 does not divide narrow layers (16, 24, 144 channels); gcd(32, C),
    the largest power of two up to 32 that divides C, does (C=16: 16 groups of 1,
    C=24: 8 of 3, C=144: 16 of 9), and it is 32 whenever 32 divides C, so wide layers
    keep the paper's grouping. An explicit ``num_groups``
    (or ``group_size``) is used as given and must divide C. The inner layer shares this
    module's scope, so the parameters are ``<name>/scale`` and ``<name>/bias``, the
    same tree as a plain ``nn.GroupNorm`` named ``<name>``.
    """

    num_groups: int | None = None  # None: gcd(max_groups, channels)
    group_size: int | None = None  # channels per group; excludes num_groups
    max_groups: int = GROUP_NORM_GROUPS  # the G of the gcd rule
    epsilon: float = 1e-6
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True

    @nn.compact
    def __call__(self, x):
        num_groups = self.num_groups
        if num_groups is None and self.group_size is None:
            num_groups = math.gcd(self.max_groups, x.shape[-1])
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


class LayerNorm(nn.Module):
    """Layer normalization (Ba et al. 2016, Sec. 3): mean and variance per example over all
    of its hidden units -- (H, W, C) of a conv map, the features of a dense layer -- then a
    gain and a bias per channel (as LN = GN with one group, Wu & He 2018, Sec. 3.1).

    ``nn.LayerNorm``'s default reduces over the last axis only, which on a conv map
    normalizes each pixel's channel vector on its own: not layer normalization. The
    inner layer shares this module's scope: parameters ``<name>/scale``, ``<name>/bias``.
    """

    epsilon: float = 1e-6
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True

    @nn.compact
    def __call__(self, x):
        inner = nn.LayerNorm(
            epsilon=self.epsilon,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            use_bias=self.use_bias,
            use_scale=self.use_scale,
            reduction_axes=tuple(range(1, x.ndim)),  # every axis but the batch
            feature_axes=-1,
        )
        nn.share_scope(self, inner)
        return inner(x)


class InstanceNorm(nn.Module):
    """Instance normalization (Ulyanov et al. 2016): per example and channel over (H, W),
    i.e. GroupNorm with one channel per group. A dense (N, C) input has no spatial axes
    to average over (every output would be the bias), so it is an error."""

    epsilon: float = 1e-6
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True

    @nn.compact
    def __call__(self, x):
        if x.ndim < 3:
            raise ValueError(
                f"norm='instance' needs spatial axes to normalize over; got shape {x.shape} "
                "(a dense layer): use 'layer', 'group' or 'batch' there"
            )
        inner = nn.GroupNorm(
            num_groups=None,
            group_size=1,
            epsilon=self.epsilon,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            use_bias=self.use_bias,
            use_scale=self.use_scale,
        )
        nn.share_scope(self, inner)
        return inner(x)


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
    return functools.partial(LayerNorm, epsilon=epsilon, dtype=dtype, **kw)


def _group(*, train: bool, momentum: float, epsilon: float, dtype: Dtype, axis_name, **kw):
    del train, momentum, axis_name
    return functools.partial(GroupNorm, epsilon=epsilon, dtype=dtype, **kw)


def _instance(*, train: bool, momentum: float, epsilon: float, dtype: Dtype, axis_name, **kw):
    del train, momentum, axis_name
    return functools.partial(InstanceNorm, epsilon=epsilon, dtype=dtype, **kw)


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
# GN with gcd(4, C) groups (4 wherever 4 divides C): in narrow nets (ResNet-20's 16/32/64
# channels and less) the default gcd(32, C) gives one channel per group, i.e. instance
# norm; G=4 keeps GN between IN (G=C) and LN (G=1), as in Wu & He (2018, Sec. 3.1, Table 3).
NORMS["group4"] = functools.partial(_group, max_groups=4)
# The BatchNorm lab (cnn_arch/norm): 'batch_alg1', 'batch_alg1_manual', 'ghost_batch',
# 'ghost_batch<k>' for fixed sub-batch sizes k.
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


# Where the norm layers go (``norm_position``; the BN slides' three Keras placements + two):
# 'before' the nonlinearity (the BN paper, Sec. 3.2), 'after' it, 'layer_input': on every
# layer's input (before its conv / dense), 'network_input': one norm on the raw input and
# none inside (the slides' "normalize the input only"), 'none': no norm layer at all (the
# network of norm='none').
NORM_POSITIONS = ("before", "after", "layer_input", "network_input", "none")


def norm_act(x, norm: ModuleDef, act: Callable, position: str, name: str):
    """Normalization and nonlinearity after a layer, in the order ``position`` asks for:
    norm then act ('before'), act then norm ('after'), or act only (the positions whose
    norms sit elsewhere or nowhere)."""
    if position == "before":
        return act(norm(name=name)(x))
    if position == "after":
        return norm(name=name)(act(x))
    if position in NORM_POSITIONS:
        return act(x)
    raise ValueError(f"norm_position={position!r} is not known; choose one of {NORM_POSITIONS}")


def input_norm(x, norm: ModuleDef, position: str):
    """The 'network_input' norm (named ``input_norm``) on the raw input; ``x`` otherwise."""
    return norm(name="input_norm")(x) if position == "network_input" else x


def body_norm_kind(kind: str, position: str) -> str:
    """The norm kind of the hidden layers: none when ``position`` keeps them norm-free."""
    return "none" if position in ("network_input", "none") else kind


def layer_bias(kind: str, position: str) -> bool:
    """Whether a conv / dense layer needs its bias: not when a norm follows it directly,
    whose shift replaces it (Ioffe & Szegedy 2015, Sec. 3.2)."""
    return not (is_normalized(kind) and position == "before")


# --- parameter-free operations shared by several families ------------------------------


def _adaptive_weights(n_in: int, n_out: int) -> np.ndarray:
    """Row i averages input cells [floor(i*n_in/n_out), ceil((i+1)*n_in/n_out))."""
    w = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        w[i, lo:hi] = 1.0 / (hi - lo)
    return w


def adaptive_avg_pool(x, size: int | tuple[int, int]):
    """PyTorch's ``AdaptiveAvgPool2d`` on NHWC ``x``: output cell i averages input cells
    [floor(i*H/out), ceil((i+1)*H/out)). Defined for any H, including H < out (cells
    repeat) and out=1 (global mean). Exact for static shapes; identity when H == out."""
    oh, ow = (size, size) if isinstance(size, int) else size
    h, w = x.shape[1:3]
    if (h, w) == (oh, ow):
        return x
    # Weights like 1/3 must not be rounded: average in float32 at full matmul precision.
    hp = lax.Precision.HIGHEST
    wh, ww = (jnp.asarray(_adaptive_weights(n, o)) for n, o in ((h, oh), (w, ow)))
    y = jnp.einsum("ih,nhwc->niwc", wh, x.astype(jnp.float32), precision=hp)
    return jnp.einsum("jw,niwc->nijc", ww, y, precision=hp).astype(x.dtype)


def _pool_pads(size: int, window: int, stride: int, pad: int, ceil_mode: bool):
    span = size + 2 * pad
    if ceil_mode:  # PyTorch/Caffe ceil mode: the last window must start inside input+left pad
        out = -(-(span - window) // stride) + 1
        if (out - 1) * stride >= size + pad:
            out -= 1
    else:
        out = (span - window) // stride + 1
    out = max(out, 1)  # small-input rule: a window larger than the map is clipped to it
    return pad, max(pad, (out - 1) * stride + window - size - pad)


def pool2d(x, kind: str, window: int, stride: int, pad: int = 0, ceil_mode: bool = False):
    """PyTorch-shaped ``MaxPool2d`` / ``AvgPool2d`` (incl. ``ceil_mode``) on NHWC ``x``.

    Windows reaching past the input (padding, ceil mode, or a window larger than the
    map) only see real pixels: max pools pad with -inf, average pools divide by the
    number of real pixels. Hence an input smaller than the window gives a 1x1 map
    (its global max/mean) instead of an error.
    """
    pads = [_pool_pads(n, window, stride, pad, ceil_mode) for n in x.shape[1:3]]
    if kind == "max":
        return nn.max_pool(x, (window, window), (stride, stride), padding=pads)
    if kind == "avg":
        return nn.avg_pool(
            x, (window, window), (stride, stride), padding=pads, count_include_pad=False
        )
    raise ValueError(f"pool kind={kind!r} is not known; choose 'max' or 'avg'")


def local_response_norm(x, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
    """Local response normalization across channels (Krizhevsky et al. 2012, Sec. 3.3):
    b_i = a_i / (k + alpha * sum_{|j-i| <= size//2} a_j^2)^beta.

    ``alpha`` multiplies the plain sum as in the paper; Caffe and PyTorch divide it
    by ``size`` (pass ``alpha / size`` to reproduce them). Computed in float32.
    """
    xf = x.astype(jnp.float32)
    pads = ((0, 0), (0, 0), (0, 0), (size // 2, (size - 1) // 2))
    sq = lax.reduce_window(xf * xf, 0.0, lax.add, (1, 1, 1, size), (1, 1, 1, 1), pads)
    return (xf / (k + alpha * sq) ** beta).astype(x.dtype)


def caffe_lrn(x):
    """The LRN of the Caffe GoogLeNet reference (local_size 5, alpha 1e-4 over the window),
    used by GoogLeNet's and BN-Inception's stems; the papers give no values."""
    return local_response_norm(x, size=5, alpha=1e-4 / 5, beta=0.75, k=1.0)


def pad_to(x, size: int):
    """Edge-pads NHWC ``x`` to at least ``size`` x ``size``, keeping it centred (LeNet's
    28x28 digits in a 32x32 field, LeCun et al. 1998 Sec. II.B)."""
    ph, pw = max(0, size - x.shape[1]), max(0, size - x.shape[2])
    if ph == 0 and pw == 0:
        return x
    pads = ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0))
    return jnp.pad(x, pads, mode="edge")
