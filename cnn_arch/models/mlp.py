"""The BN paper's MNIST network (Ioffe & Szegedy 2015, Sec. 4.1).

28x28 input flattened, 3 fully-connected hidden layers of 100 units, sigmoid by
default, optional normalization before each nonlinearity, and weights drawn from
a small Gaussian ("initialized to small random Gaussian values"). Hidden layers
directly followed by a norm have no bias (the norm's beta replaces it, Sec. 3.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from cnn_arch.models import layers, options
from cnn_arch.models.registry import register


class MLP(nn.Module):
    num_classes: int = 10
    hidden: Sequence[int] = (100, 100, 100)
    activation: str = "sigmoid"
    norm: str = "none"
    norm_position: str = "before"  # see layers.NORM_POSITIONS
    init_stddev: float = 0.1
    dropout_rate: float = 0.0
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
        use_bias = layers.layer_bias(self.norm, self.norm_position)
        init = nn.initializers.normal(self.init_stddev)
        x = x.reshape((x.shape[0], -1)).astype(self.dtype)
        x = layers.input_norm(x, norm, self.norm_position)  # the 784 input features
        for i, width in enumerate(self.hidden):
            name = f"hidden{i + 1}"
            if self.norm_position == "layer_input":
                x = norm(name=f"{name}_norm")(x)
            x = nn.Dense(width, use_bias=use_bias, kernel_init=init, dtype=self.dtype, name=name)(x)
            x = layers.norm_act(x, norm, act, self.norm_position, f"{name}_norm")
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, kernel_init=init, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)


register("mlp", MLP, input_shape=(28, 28, 1))
