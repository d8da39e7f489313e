"""VGG (Simonyan & Zisserman 2015), configurations A, B, D, E of Table 1 as
``vgg11``, ``vgg13``, ``vgg16``, ``vgg19`` and their ``_bn`` variants, matching
torchvision's ``models/vgg.py`` layer for layer and parameter for parameter.

3x3 convs (stride 1, pad 1) in five stages, each closed by a 2x2/2 max pool
(Sec. 2.1), adaptive average pool to 7x7, FC 4096-4096 with dropout 0.5 and the
classifier (Sec. 2.1, 3.1). The ``_bn`` variants put BN after every conv; like
torchvision they keep the conv biases (``conv_bias=True``, redundant with BN's
beta, Ioffe & Szegedy 2015 Sec. 3.2; ``conv_bias=False`` drops the biases a norm
directly follows, i.e. with ``norm_position='before'``; elsewhere they are not
redundant and stay).
``norm`` takes any ``layers.NORMS`` kind and ``norm_position`` any of
``layers.NORM_POSITIONS`` ('before' = torchvision's conv-BN-ReLU).

Scaled-down VGGs (e.g. on CIFAR-10 on a CPU): ``width_multiplier`` scales every conv
width (at least 1 channel), ``fc_width`` the two hidden FCs (0: none, the flattened map
goes straight to the classifier, as in the common CIFAR VGG; narrow hidden FCs with
torchvision's N(0, 0.01) init shrink the signal ~10x each and a short run barely
moves), and ``pool_size`` the adaptive pool before them (1: the 1x1 map a 32x32 input
has after five pools); the defaults are the paper's net.

Small inputs: a pool on a 1x1 map keeps it 1x1 (``layers.pool2d``), and the
adaptive pool to 7x7 (PyTorch's rule) repeats cells of maps smaller than 7x7, so
28x28 and 32x32 inputs reach the same 25088-wide FC as 224x224 ones.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from cnn_arch.models import layers, options
from cnn_arch.models.layers import adaptive_avg_pool, pool2d
from cnn_arch.models.registry import register

# Table 1 of the paper; ints are 3x3 conv widths, "M" a 2x2/2 max pool (torchvision's cfgs).
CFGS: dict[str, tuple[int | str, ...]] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M")
    + (512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
    cfg: str = "D"
    num_classes: int = 1000
    norm: str = "none"
    norm_position: str = "before"  # see layers.NORM_POSITIONS
    conv_bias: bool = True  # torchvision keeps them even with BN; False: only where redundant
    activation: str = "relu"
    dropout_rate: float = 0.5
    width_multiplier: float = 1.0  # every conv width x this
    fc_width: int = 4096  # the two hidden FC layers; 0: no hidden FC layer
    pool_size: int = 7  # adaptive average pool before the FCs: pool_size x pool_size
    dtype: Any = jnp.float32

    CHOICES: ClassVar[dict[str, options.Choices]] = {
        "cfg": tuple(CFGS),
        "norm_position": layers.NORM_POSITIONS,
    }

    def _width(self, paper_width: int) -> int:
        return max(1, round(paper_width * self.width_multiplier))

    @nn.compact
    def __call__(self, x, *, train: bool):
        options.check_fields(self)
        if self.width_multiplier <= 0 or self.fc_width < 0 or self.pool_size < 1:
            raise ValueError(
                f"VGG needs width_multiplier > 0, fc_width >= 0 and pool_size >= 1; got "
                f"{self.width_multiplier}, {self.fc_width}, {self.pool_size}"
            )
        norm = layers.make_norm(self.norm, train=train, dtype=self.dtype)
        act = layers.make_act(self.activation)
        # torchvision's init: kaiming_normal(fan_out) convs, N(0, 0.01) linears, zero biases.
        conv = layers.make_conv(
            self.dtype,
            kernel_size=(3, 3),
            padding=1,
            use_bias=self.conv_bias or layers.layer_bias(self.norm, self.norm_position),
            kernel_init=layers.kaiming_normal_fan_out,
        )
        dense = functools.partial(
            nn.Dense, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype
        )
        x = layers.input_norm(x.astype(self.dtype), norm, self.norm_position)
        stage, i = 1, 1
        for v in CFGS[self.cfg]:
            if v == "M":
                x = pool2d(x, "max", 2, 2)
                stage, i = stage + 1, 1
                continue
            name = f"conv{stage}_{i}"
            if self.norm_position == "layer_input":
                x = norm(name=f"{name}_norm")(x)
            x = layers.norm_act(
                conv(self._width(v), name=name)(x), norm, act, self.norm_position, f"{name}_norm"
            )
            i += 1
        x = adaptive_avg_pool(x, self.pool_size).reshape((x.shape[0], -1))
        for j in (1, 2) if self.fc_width else ():
            x = act(dense(self.fc_width, name=f"fc{j}")(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return dense(self.num_classes, name="head")(x).astype(jnp.float32)


for _depth, _cfg in (("11", "A"), ("13", "B"), ("16", "D"), ("19", "E")):
    register(f"vgg{_depth}", VGG, cfg=_cfg)
    register(f"vgg{_depth}_bn", VGG, cfg=_cfg, norm="batch")
