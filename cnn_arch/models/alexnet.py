"""AlexNet (Krizhevsky, Sutskever & Hinton 2012).

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

Small inputs follow the rule of ``layers.py``: pools never shrink a map below 1x1
and the flatten before the FCs is preceded by an adaptive average pool to 6x6 (at the
paper's 227 input the conv5 map is already 6x6, so there it is the identity).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from cnn_arch.models import layers, options
from cnn_arch.models.layers import adaptive_avg_pool, local_response_norm, pool2d
from cnn_arch.models.registry import register

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

    CHOICES: ClassVar[dict[str, options.Choices]] = {"variant": tuple(_VARIANTS)}

    @nn.compact
    def __call__(self, x, *, train: bool):
        options.check_fields(self)
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
