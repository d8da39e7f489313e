"""LeNet-5 in its modern form (LeCun et al. 1998, as taught today).

conv 6@5x5 -> avgpool 2 -> conv 16@5x5 -> avgpool 2 -> FC 120 -> FC 84 -> FC classes.
Inputs smaller than 32x32 are padded to 32x32 with their edge values (MNIST's
28x28 digits sit in a 32x32 field in the paper, Sec. II.B), so a 28x28 digit gives
the paper's 5x5x16 feature map. 61,706 parameters at 10 classes without norm.
Convs and FCs keep their biases unless a norm layer follows them directly.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from cnn_arch.models import layers, options
from cnn_arch.models.registry import register


class LeNet5(nn.Module):
    num_classes: int = 10
    activation: str = "relu"
    norm: str = "none"
    norm_position: str = "before"  # see layers.NORM_POSITIONS
    dropout_rate: float = 0.0  # on the FC layers; 0 as in the paper
    dtype: Any = jnp.float32

    CHOICES: ClassVar[dict[str, options.Choices]] = {
        "norm": options.dense_layer_norms,  # the FC layers are normalized too
        "norm_position": layers.NORM_POSITIONS,
    }

    @nn.compact
    def __call__(self, x, *, train: bool):
        options.check_fields(self)
        norm = layers.make_norm(self.norm, train=train, dtype=self.dtype)
        act = layers.make_act(self.activation)
        # Layers directly followed by a norm do not need a bias (BN paper, Sec. 3.2).
        use_bias = layers.layer_bias(self.norm, self.norm_position)

        def block(x, layer, name):
            if self.norm_position == "layer_input":
                x = norm(name=f"{name}_norm")(x)
            x = layer(x)
            return layers.norm_act(x, norm, act, self.norm_position, f"{name}_norm")

        x = layers.input_norm(x.astype(self.dtype), norm, self.norm_position)
        x = layers.pad_to(x, 32)
        conv = layers.make_conv(self.dtype, padding="VALID", use_bias=use_bias)
        x = block(x, conv(6, (5, 5), name="conv1"), "conv1")
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = block(x, conv(16, (5, 5), name="conv2"), "conv2")
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate((120, 84)):
            dense = nn.Dense(width, use_bias=use_bias, dtype=self.dtype, name=f"fc{i + 1}")
            x = block(x, dense, f"fc{i + 1}")
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)


register("lenet5", LeNet5, input_shape=(28, 28, 1))
