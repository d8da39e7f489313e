"""ShuffleNet v2 (Ma et al. 2018, Sec. 4, Fig. 3(c)/(d), Table 5), torchvision's build.

conv 3x3/2 (24) -> max-pool 3x3/2 -> stages of 4, 8, 4 units -> conv 1x1 -> global
average pool -> FC. A stride-1 unit splits the channels in two halves (channel
split), keeps the first and sends the second through 1x1 conv-BN-ReLU, depthwise
3x3 conv-BN, 1x1 conv-BN-ReLU; a stride-2 unit feeds the whole input to both
branches (the left one depthwise 3x3/2-BN, 1x1-BN-ReLU). The halves are
concatenated and channel-shuffled with 2 groups. No conv biases (BN follows),
the FC keeps its bias. torchvision counts at 1000 classes: x0_5 1,366,792; x1_0
2,278,604; x1_5 3,503,624; x2_0 7,393,996 (Table 5: 1.4M, 2.3M, 3.5M, 7.4M).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnn_arch.models import layers
from cnn_arch.models.blocks import conv_norm_act, squeeze_excite
from cnn_arch.models.registry import register

# Output channels of conv1, stages 2-4 and conv5 per width (Table 5).
STAGES_OUT_CHANNELS = {
    "x0_5": (24, 48, 96, 192, 1024),
    "x1_0": (24, 116, 232, 464, 1024),
    "x1_5": (24, 176, 352, 704, 1024),
    "x2_0": (24, 244, 488, 976, 2048),
}


def channel_shuffle(x, groups: int):
    """NHWC channel shuffle (Zhang et al. 2018, Sec. 3.1): (g, c/g) -> (c/g, g)."""
    *lead, c = x.shape
    x = x.reshape((*lead, groups, c // groups))
    return jnp.swapaxes(x, -1, -2).reshape((*lead, c))


class ShuffleNetV2(nn.Module):
    num_classes: int = 1000
    stages_out_channels: Sequence[int] = STAGES_OUT_CHANNELS["x1_0"]
    stages_repeats: Sequence[int] = (4, 8, 4)
    norm: str = "batch"
    se_ratio: int = 0  # > 0: an SE gate on each unit's right (computed) branch, Hu et al. 2018
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        norm = layers.make_norm(self.norm, train=train, dtype=self.dtype)
        conv = layers.make_conv(
            self.dtype,
            use_bias=not layers.is_normalized(self.norm),
            kernel_init=layers.kaiming_normal_fan_out,
        )

        def cbr(x, feats, name, kernel=1, stride=1, depthwise=False, relu=True):
            groups = feats if depthwise else 1
            act = nn.relu if relu else None
            return conv_norm_act(
                x, conv, norm, act, feats, kernel, stride, groups=groups, name=name
            )

        def unit(x, out, stride, name):
            branch = out // 2
            if stride == 1:
                left, right = jnp.split(x, 2, axis=-1)
            else:
                left = cbr(x, x.shape[-1], f"{name}_b1_dw", 3, stride, True, False)
                left = cbr(left, branch, f"{name}_b1_pw")
                right = x
            right = cbr(right, branch, f"{name}_b2_pw1")
            right = cbr(right, branch, f"{name}_b2_dw", 3, stride, True, False)
            right = cbr(right, branch, f"{name}_b2_pw2")
            right = squeeze_excite(right, self.se_ratio, self.dtype, f"{name}_se")
            return channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)

        x = cbr(x.astype(self.dtype), self.stages_out_channels[0], "conv1", 3, 2)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for s, (repeats, out) in enumerate(
            zip(self.stages_repeats, self.stages_out_channels[1:-1], strict=True)
        ):
            for u in range(repeats):
                x = unit(x, out, 2 if u == 0 else 1, f"stage{s + 2}_unit{u + 1}")
        x = cbr(x, self.stages_out_channels[-1], "conv5")
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)


for _width, _channels in STAGES_OUT_CHANNELS.items():
    register(f"shufflenet_v2_{_width}", ShuffleNetV2, stages_out_channels=_channels)
