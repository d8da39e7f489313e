"""MobileNet v1 (Howard et al. 2017, Table 1, Fig. 3).

A 3x3 stride-2 conv to 32 channels, then 13 depthwise separable convs: depthwise
3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU (Fig. 3 right), global average pool, FC.
Table 1 lists the 14th row's depthwise conv as "s2" on a 7x7 map; it is stride 1
(the output stays 7x7), as in every reference implementation. Convs have no bias
(BN follows), the FC keeps its bias: 4,231,976 parameters at 1000 classes (Table
8: 4.2M). ``width_multiplier`` is the paper's alpha (Sec. 3.3), channels
max(8, int(alpha * c)) as in TF-slim; the resolution multiplier is the input size.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnn_arch.models import layers
from cnn_arch.models.blocks import conv_norm_act
from cnn_arch.models.registry import register

# (pointwise output channels, depthwise stride) of the 13 separable blocks, Table 1.
CONFIG = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    *((512, 1),) * 5, (1024, 2), (1024, 1),
)  # fmt: skip


class MobileNetV1(nn.Module):
    num_classes: int = 1000
    width_multiplier: float = 1.0
    norm: str = "batch"
    activation: str = "relu"  # the paper's ReLU (later versions use ReLU6)
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        norm = layers.make_norm(self.norm, train=train, dtype=self.dtype)
        act = layers.make_act(self.activation)
        conv = layers.make_conv(
            self.dtype,
            use_bias=not layers.is_normalized(self.norm),
            kernel_init=layers.kaiming_normal_fan_out,
        )

        def width(c):
            return max(8, int(c * self.width_multiplier))

        cna = functools.partial(conv_norm_act, conv=conv, norm=norm, act=act)
        x = cna(x.astype(self.dtype), features=width(32), kernel=3, stride=2, name="conv1")
        for i, (feats, stride) in enumerate(CONFIG):
            c = x.shape[-1]  # depthwise 3x3, then pointwise 1x1 (Fig. 3)
            x = cna(x, features=c, kernel=3, stride=stride, groups=c, name=f"block{i + 1}_dw")
            x = cna(x, features=width(feats), name=f"block{i + 1}_pw")
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(
            self.num_classes, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype,
            name="head",
        )(x)  # fmt: skip
        return x.astype(jnp.float32)


register("mobilenet_v1", MobileNetV1)
