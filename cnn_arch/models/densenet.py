"""Densely connected networks (Huang et al. 2017).

Every layer of a dense block gets the concatenation of all earlier feature maps and
adds ``growth_rate`` (k) channels (Sec. 3). Layers are BN-ReLU-Conv ("composite
function", Sec. 3), with a 1x1 bottleneck of ``bn_size * k`` channels before the 3x3
conv (DenseNet-B); transitions between blocks are BN-ReLU-1x1 conv-2x2 avg-pool and
keep ``compression`` (theta = 0.5, DenseNet-C) of the channels.

ImageNet models match torchvision exactly (Table 1 configurations, convs without
bias, a final norm5-ReLU before pooling, kaiming-normal fan_in conv init as torchvision
uses for DenseNet). At 1000 classes: densenet121 7,978,856; densenet161 28,681,000;
densenet169 14,149,480; densenet201 20,013,928.

``densenet_bc100`` is the CIFAR DenseNet-BC with L=100, k=12 (Table 2: 0.8M): one
3x3 stem conv of 2k channels, 3 blocks of (L-4)/6 = 16 layers, no stem pooling
(Sec. 3, "Implementation Details"); 769,162 parameters at 10 classes, convs without
bias as in the PyTorch port bamos/densenet.pytorch.

Transitions pool like torchvision's ``AvgPool2d(2, 2)``: no padding, floor of odd
sizes (a 50x65 map becomes 25x32), so converted torchvision weights give its outputs at
any input size. A map smaller than the 2x2 window becomes 1x1 (``layers.pool2d``'s
small-input rule, where torchvision would fail), so small inputs such as 28x28 keep a
non-empty map down to the last block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from cnn_arch.models import layers, options
from cnn_arch.models.blocks import squeeze_excite
from cnn_arch.models.registry import register

ModuleDef = Any

# torchvision initialises DenseNet convs with kaiming_normal_ in its default fan_in mode.
kaiming_normal_fan_in = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class DenseLayer(nn.Module):
    """[norm-act-1x1 conv (bn_size*k)] -> norm-act-3x3 conv (k), concatenated to the input."""

    growth_rate: int
    bn_size: int
    conv: ModuleDef
    norm: ModuleDef
    act: Callable
    drop_rate: float = 0.0
    se_ratio: int = 0  # > 0: SE gate on the layer's k new maps before they join (Hu et al.)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        y = x
        if self.bn_size:  # bottleneck layer (DenseNet-B, Sec. 3)
            y = self.act(self.norm(name="norm1")(y))
            y = self.conv(self.bn_size * self.growth_rate, (1, 1), name="conv1")(y)
        y = self.act(self.norm(name="norm2")(y))
        y = self.conv(self.growth_rate, (3, 3), padding=1, name="conv2")(y)
        if self.drop_rate:
            y = nn.Dropout(self.drop_rate, deterministic=not train)(y)
        y = squeeze_excite(y, self.se_ratio, self.dtype)
        return jnp.concatenate([x, y], axis=-1)


class DenseNet(nn.Module):
    """Stem -> dense blocks joined by transitions -> norm-act -> global pool -> 'classifier'."""

    block_sizes: Sequence[int] = (6, 12, 24, 16)
    growth_rate: int = 32
    num_init_features: int = 64
    bn_size: int = 4  # 0: no bottleneck (plain DenseNet)
    compression: float = 0.5  # 1.0: no compression
    stem: str = "imagenet"  # 7x7/2 conv-norm-act-3x3/2 max-pool; 'cifar': one 3x3 conv
    drop_rate: float = 0.0
    se_ratio: int = 0  # > 0: an SE gate on each dense layer's new maps (Hu et al. 2018)
    num_classes: int = 1000
    norm: str = "batch"
    activation: str = "relu"
    dtype: Any = jnp.float32

    CHOICES: ClassVar[dict[str, options.Choices]] = {"stem": ("imagenet", "cifar")}

    @nn.compact
    def __call__(self, x, *, train: bool):
        options.check_fields(self)
        norm = layers.make_norm(self.norm, train=train, dtype=self.dtype)
        act = layers.make_act(self.activation)
        conv = layers.make_conv(
            self.dtype,
            use_bias=not layers.is_normalized(self.norm),
            kernel_init=kaiming_normal_fan_in,
        )

        x = x.astype(self.dtype)
        if self.stem == "imagenet":
            x = conv(self.num_init_features, (7, 7), (2, 2), padding=3, name="conv0")(x)
            x = act(norm(name="norm0")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        else:
            x = conv(self.num_init_features, (3, 3), padding=1, name="conv0")(x)

        for b, n in enumerate(self.block_sizes, start=1):
            for i in range(1, n + 1):
                x = DenseLayer(
                    self.growth_rate,
                    self.bn_size,
                    conv=conv,
                    norm=norm,
                    act=act,
                    drop_rate=self.drop_rate,
                    se_ratio=self.se_ratio,
                    dtype=self.dtype,
                    name=f"denseblock{b}_layer{i}",
                )(x, train=train)
            if b < len(self.block_sizes):
                x = act(norm(name=f"transition{b}_norm")(x))
                x = conv(int(x.shape[-1] * self.compression), (1, 1), name=f"transition{b}_conv")(x)
                x = layers.pool2d(x, "avg", 2, 2)  # floor mode, as torchvision's AvgPool2d(2, 2)
        x = act(norm(name="norm5")(x))
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
        return x.astype(jnp.float32)


# Table 1 configurations: (block sizes, growth rate, stem width).
for _depth, (_blocks, _k, _init) in {
    121: ((6, 12, 24, 16), 32, 64),
    161: ((6, 12, 36, 24), 48, 96),
    169: ((6, 12, 32, 32), 32, 64),
    201: ((6, 12, 48, 32), 32, 64),
}.items():
    register(
        f"densenet{_depth}", DenseNet, block_sizes=_blocks, growth_rate=_k, num_init_features=_init
    )
register(
    "densenet_bc100",
    DenseNet,
    input_shape=(32, 32, 3),
    num_classes=10,
    block_sizes=(16, 16, 16),
    growth_rate=12,
    num_init_features=24,
    stem="cifar",
)
