"""SqueezeNet 1.0 (Iandola et al. 2016, Table 1) and 1.1 (the SqueezeNet v1.1 release:
3x3/64 first conv, pools moved earlier), matching torchvision's ``squeezenet.py``:
1,248,424 and 1,235,496 parameters at 1000 classes.

Fire module (Sec. 3.2): a 1x1 "squeeze" conv feeding parallel 1x1 and 3x3 "expand"
convs whose outputs are concatenated, all with ReLU. Max pools 3x3/2 in ceil mode;
classifier = dropout 0.5 (Sec. 3.3, after fire9) -> 1x1 conv to the classes -> ReLU
-> global average pool (no FC layer). ``norm`` (default 'none', as the paper) adds a
norm between each fire conv and its ReLU and drops that conv's bias.

Small inputs: pools never shrink a map below 1x1 (``layers.pool2d``) and the head
is a global mean, so 28x28 and 32x32 inputs work unchanged.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from cnn_arch.models import layers, options
from cnn_arch.models.blocks import ConvNormAct, squeeze_excite
from cnn_arch.models.layers import pool2d
from cnn_arch.models.registry import register

# version: (first conv features, kernel), then fires (squeeze, expand1x1, expand3x3) and
# "M" = max pool 3x3/2; the first conv is always followed by a pool.
CFGS: dict[str, tuple[tuple[int, int], tuple[Any, ...]]] = {
    "1_0": (
        (96, 7),
        ((16, 64, 64), (16, 64, 64), (32, 128, 128), "M", (32, 128, 128), (48, 192, 192))
        + ((48, 192, 192), (64, 256, 256), "M", (64, 256, 256)),
    ),
    "1_1": (
        (64, 3),
        ((16, 64, 64), (16, 64, 64), "M", (32, 128, 128), (32, 128, 128), "M", (48, 192, 192))
        + ((48, 192, 192), (64, 256, 256), (64, 256, 256)),
    ),
}


class SqueezeNet(nn.Module):
    version: str = "1_0"
    num_classes: int = 1000
    norm: str = "none"
    activation: str = "relu"
    dropout_rate: float = 0.5
    se_ratio: int = 0  # > 0: an SE gate on each Fire module's output (Hu et al. 2018)
    dtype: Any = jnp.float32

    CHOICES: ClassVar[dict[str, options.Choices]] = {"version": tuple(CFGS)}

    @nn.compact
    def __call__(self, x, *, train: bool):
        options.check_fields(self)
        (f0, k0), fires = CFGS[self.version]
        unit = functools.partial(
            ConvNormAct, norm=self.norm, activation=self.activation, dtype=self.dtype
        )
        x = unit(f0, k0, 2, name="conv1")(x.astype(self.dtype), train=train)
        x = pool2d(x, "max", 3, 2, ceil_mode=True)
        i = 2  # fire modules are numbered fire2..fire9 in the paper
        for v in fires:
            if v == "M":
                x = pool2d(x, "max", 3, 2, ceil_mode=True)
                continue
            s, e1, e3 = v
            x = unit(s, name=f"fire{i}_squeeze")(x, train=train)
            y1 = unit(e1, name=f"fire{i}_expand1x1")(x, train=train)
            y3 = unit(e3, 3, 1, 1, name=f"fire{i}_expand3x3")(x, train=train)
            x = jnp.concatenate([y1, y3], axis=-1)
            x, i = squeeze_excite(x, self.se_ratio, self.dtype, f"fire{i}_se"), i + 1
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        # torchvision initialises the final conv with N(0, 0.01).
        x = layers.make_conv(self.dtype, kernel_init=nn.initializers.normal(0.01))(
            self.num_classes, (1, 1), name="conv10"
        )(x)
        x = layers.make_act(self.activation)(x)
        return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


register("squeezenet1_0", SqueezeNet, version="1_0")
register("squeezenet1_1", SqueezeNet, version="1_1")
