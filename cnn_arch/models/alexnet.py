"""AlexNet (Krizhevsky, Sutskever & Hinton 2012) and the pooling / LRN helpers of the
classic ImageNet nets (VGG, GoogLeNet, BN-Inception and SqueezeNet import them).

``alexnet``: torchvision's single-tower form: convs 64/192/384/256/256, max pools
3x3/2, adaptive average pool to 6x6, dropout 0.5 before FC 4096-4096; 61,100,840
parameters at 1000 classes.

``alexnet_paper``: the paper's two-GPU net on 227x227 inputs (Sec. 3.5, Fig. 2):
convs 96/256/384/384/256 where conv2, conv4 and conv5 only see the kernel maps on
their own GPU (``feature_group_count=2``), ReLU then local response normalization
after conv1 and conv2 (k=2, n=5, alpha=1e-4, beta=0.75, Sec. 3.3), overlapping max
pools 3x3/2 (Sec. 3.4), FC 4096-4096 with dropout 0.5 (Sec. 4.2) and the paper's
init (N(0, 0.01) weights; bias 1 in conv2/4/5 and the hidden FCs, Sec. 5);
60,965,224 parameters at 1000 classes.

Small inputs (the size rule shared by the classic nets):
- a pooling window larger than its (padded) input is clipped to the input, so a
  pool never makes a map smaller than 1x1 (``pool2d``);
- the flatten before the FCs is preceded by an adaptive average pool to 6x6
  (``adaptive_avg_pool``, PyTorch's rule, which also works when the map is
  smaller than 6x6 by repeating cells). At the paper's 227 input the conv5 map is
  already 6x6, so there it is the identity.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnn_arch.models import layers
from cnn_arch.models.registry import register


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


# conv i: (features, kernel, stride, padding, groups); max pool after convs 1, 2, 5.
_VARIANTS = {
    "torchvision": dict(
        convs=(
            (64, 11, 4, 2, 1),
            (192, 5, 1, 2, 1),
            (384, 3, 1, 1, 1),
            (256, 3, 1, 1, 1),
            (256, 3, 1, 1, 1),
        ),
        lrn=False,
    ),
    "paper": dict(  # Sec. 3.5 / Fig. 2: conv2, 4, 5 connect only within a GPU
        convs=(
            (96, 11, 4, 0, 1),
            (256, 5, 1, 2, 2),
            (384, 3, 1, 1, 1),
            (384, 3, 1, 1, 2),
            (256, 3, 1, 1, 2),
        ),
        lrn=True,
    ),
}
_POOL_AFTER = (0, 1, 4)
_TORCH_DEFAULT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


class AlexNet(nn.Module):
    """AlexNet; ``variant='torchvision'`` (default) or ``'paper'`` (see module docstring).

    ``norm`` (default 'none', as both references) puts a norm layer between each conv
    and its ReLU and drops that conv's bias.
    """

    num_classes: int = 1000
    variant: str = "torchvision"
    norm: str = "none"
    activation: str = "relu"
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        if self.variant not in _VARIANTS:
            raise ValueError(f"variant={self.variant!r} is not known; choose {sorted(_VARIANTS)}")
        cfg = _VARIANTS[self.variant]
        paper = self.variant == "paper"
        norm = layers.make_norm(self.norm, train=train, dtype=self.dtype)
        act = layers.make_act(self.activation)
        use_bias = not layers.is_normalized(self.norm)
        # Paper init (Sec. 5): N(0, 0.01), bias 1 in conv2/4/5 and the hidden FCs; else
        # PyTorch's default (kaiming_uniform, a=sqrt(5)) with zero biases.
        kinit = nn.initializers.normal(0.01) if paper else _TORCH_DEFAULT
        one = nn.initializers.ones if paper else nn.initializers.zeros
        conv = layers.make_conv(self.dtype, use_bias=use_bias, kernel_init=kinit)
        x = x.astype(self.dtype)
        for i, (f, k, s, p, g) in enumerate(cfg["convs"]):
            binit = one if i in (1, 3, 4) else nn.initializers.zeros
            x = conv(
                f, (k, k), (s, s), p, feature_group_count=g, bias_init=binit, name=f"conv{i + 1}"
            )(x)
            x = act(norm(name=f"conv{i + 1}_norm")(x))
            if cfg["lrn"] and i < 2:  # after the ReLU of conv1 and conv2 (Sec. 3.3)
                x = local_response_norm(x)
            if i in _POOL_AFTER:
                x = pool2d(x, "max", 3, 2)
        x = adaptive_avg_pool(x, 6).reshape((x.shape[0], -1))
        drop = nn.Dropout(self.dropout_rate, deterministic=not train)
        dense = functools.partial(nn.Dense, kernel_init=kinit, dtype=self.dtype)
        for i in (1, 2):  # torchvision drops the FC inputs, the paper their outputs (Sec. 4.2)
            x = x if paper else drop(x)
            x = act(dense(4096, bias_init=one, name=f"fc{i}")(x))
            x = drop(x) if paper else x
        x = dense(self.num_classes, name="head")(x)
        return x.astype(jnp.float32)


register("alexnet", AlexNet, input_shape=(224, 224, 3))
register("alexnet_paper", AlexNet, input_shape=(227, 227, 3), variant="paper")
