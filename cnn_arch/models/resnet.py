"""Residual networks: ResNet (He et al. 2016), its plain twins, pre-activation ResNet,
Wide ResNet, ResNeXt and (with ``se_ratio``) SE-ResNet, all from one ``ResNet`` module.

A network is a stem, stages of residual units and global-average-pool + FC. A unit is
a branch of convs -- basic 3x3-3x3 or bottleneck 1x1-3x3-1x1 (Sec. 4.1, Fig. 5) --
plus a shortcut, as in Sec. 3.3 and 4.1: 'A' identity with zero-padded extra channels,
'B' projection (1x1 conv + norm) only where the shape changes, 'C' projection
everywhere, 'none' no shortcut (the plain nets of the degradation experiment, Sec. 4.1).

ImageNet models match torchvision exactly (convs without bias, BN after every conv,
projection shortcuts; ResNet v1.5 puts the bottleneck stride in the 3x3 conv,
``version='v1'`` puts it in the first 1x1 as in the paper). At 1000 classes:
resnet18 11,689,512; resnet34 21,797,672; resnet50 25,557,032; resnet101 44,549,160;
resnet152 60,192,808; resnext50_32x4d 25,028,904; resnext101_32x8d 88,791,336;
wide_resnet50_2 68,883,240; wide_resnet101_2 126,886,696. plain18/plain34 are those
nets minus the three projection shortcuts (11,515,688 / 21,623,848).

CIFAR ResNets follow Sec. 4.2: 3x3 stem with 16 filters, 3 stages of n basic units at
16/32/64 filters, depth 6n+2, option-A shortcuts; resnet20 has 269,722 parameters at
10 classes, matching the common PyTorch reference (akamaster/pytorch_resnet_cifar10);
resnet1202 (n = 200, Table 6: 19.4M) has 19,421,274.

``norm_position`` (the BN slides' placements): 'before' (default) is conv-BN-ReLU;
'after' swaps BN and ReLU wherever a ReLU follows a BN (the stem, the inner convs of a
branch; in pre-activation units ReLU-BN-conv), while the norm after the last conv of a
branch and after a projection, which no ReLU precedes, stays; convs followed by a ReLU
then keep their biases, the ones a norm follows directly (that last conv, a projection)
still drop them (Ioffe & Szegedy 2015, Sec. 3.2). 'network_input' normalizes only the
raw input (parameters ``input_norm``) and builds the body without norms (the network of
norm='none'); 'none' is that network without the input norm.

Pre-activation units (He et al. 2016b, "Identity Mappings", Fig. 4e) run
norm-act-conv and leave the sum untouched; where the shortcut is a projection, and in
the first unit of the net (its Appendix), the shortcut sees the pre-activated input,
the projection has no norm, and a final norm-act precedes pooling (as in the authors'
resnet-1k-layers code). Wide ResNet-28-10 (Zagoruyko & Komodakis 2016) is such a
CIFAR net with 160/320/640 filters and optional dropout between the convs (Sec. 2.4);
36,479,194 parameters at 10 classes, as xternalz/WideResNet-pytorch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from cnn_arch.models import layers, options
from cnn_arch.models.blocks import squeeze_excite
from cnn_arch.models.registry import register

ModuleDef = Any

SHORTCUTS = ("A", "B", "C", "none")
# layers.NORM_POSITIONS without 'layer_input' (a residual unit has no single layer input).
NORM_POSITIONS = ("before", "after", "network_input", "none")
STEMS = ("imagenet", "cifar")
VERSIONS = ("v1", "v1.5")


class ResidualUnit(nn.Module):
    """One residual unit; ``branch`` lists its convs as (features, kernel, stride, groups)."""

    branch: Sequence[tuple[int, int, int, int]]
    conv: ModuleDef
    norm: ModuleDef
    act: Callable
    shortcut: str = "B"
    preact: bool = False
    first: bool = False  # first unit of the network: shares its pre-activation
    se_ratio: int = 0  # 0: no SE block; r: SE with reduction r (Hu et al. 2018)
    dropout_rate: float = 0.0  # before the last conv of the branch (WRN, Sec. 2.4)
    zero_init_last: bool = False  # branch starts as zero: the unit starts as identity
    normalized: bool = True
    norm_position: str = "before"  # 'after': act then norm wherever an act follows a norm
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        features = self.branch[-1][0]
        stride = math.prod(s for _, _, s, _ in self.branch)
        changes = stride != 1 or x.shape[-1] != features
        project = self.shortcut == "C" or (self.shortcut == "B" and changes)
        zeros = nn.initializers.zeros
        # Post-activation units end the branch and the projection with a norm right after
        # the conv: its shift replaces the conv's bias whatever norm_position says.
        norm_next = {"use_bias": False} if self.normalized and not self.preact else {}
        y = x
        for i, (f, k, s, g) in enumerate(self.branch, start=1):
            last = i == len(self.branch)
            if self.preact:
                y = layers.norm_act(y, self.norm, self.act, self.norm_position, f"bn{i}")
                if i == 1 and (project or self.first):
                    x = y  # shared pre-activation (He et al. 2016b, Appendix)
            if last and self.dropout_rate:
                y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
            # Zero-init the last BN scale (Goyal et al. 2017), or the last conv where no
            # norm ends the branch (pre-activation / norm='none').
            zero_conv = last and self.zero_init_last and (self.preact or not self.normalized)
            init = {"kernel_init": zeros} if zero_conv else {}
            if last:
                init |= norm_next
            y = self.conv(
                f, (k, k), (s, s), padding=k // 2, feature_group_count=g, name=f"conv{i}", **init
            )(y)
            if not self.preact and not last:
                y = layers.norm_act(y, self.norm, self.act, self.norm_position, f"bn{i}")
            elif not self.preact:  # no act before the addition: the norm stays after the conv
                zero_bn = self.zero_init_last and self.normalized
                y = self.norm(name=f"bn{i}", **({"scale_init": zeros} if zero_bn else {}))(y)
        y = squeeze_excite(y, self.se_ratio, self.dtype)  # on the branch (Hu et al. Fig. 3)
        if self.shortcut != "none":
            if project:
                x = self.conv(
                    features, (1, 1), (stride, stride), name="downsample_conv", **norm_next
                )(x)
                if not self.preact:
                    x = self.norm(name="downsample_bn")(x)
            elif changes:  # option A: subsample, zero-pad the new channels (Sec. 3.3)
                extra = features - x.shape[-1]
                x = jnp.pad(
                    x[:, ::stride, ::stride, :],
                    ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)),
                )
            y = y + x
        return y if self.preact else self.act(y)


class ResNet(nn.Module):
    """Stem -> stages of residual units -> global average pool -> FC (named 'fc')."""

    stage_sizes: Sequence[int]
    bottleneck: bool = False
    num_classes: int = 1000
    widths: Sequence[int] = (64, 128, 256, 512)  # per stage; bottlenecks output 4x this
    stem: str = "imagenet"  # 7x7/2 conv + 3x3/2 max-pool; 'cifar': one 3x3 conv
    stem_width: int = 64
    shortcut: str = "B"  # see SHORTCUTS and the module docstring
    version: str = "v1.5"  # bottleneck stride in the 3x3 conv; 'v1': in the first 1x1
    preact: bool = False
    groups: int = 1  # ResNeXt cardinality
    width_per_group: int = 64  # bottleneck width = planes * width_per_group / 64 * groups
    se_ratio: int = 0
    zero_init_residual: bool = False  # torchvision's default
    dropout_rate: float = 0.0
    norm: str = "batch"
    norm_position: str = "before"  # see NORM_POSITIONS and the module docstring
    activation: str = "relu"
    dtype: Any = jnp.float32

    CHOICES: ClassVar[dict[str, options.Choices]] = {
        "stem": STEMS,
        "shortcut": SHORTCUTS,
        "version": VERSIONS,
        "norm_position": NORM_POSITIONS,
    }

    def _branch(self, planes: int, stride: int) -> tuple[tuple[int, int, int, int], ...]:
        if not self.bottleneck:
            return ((planes, 3, stride, 1), (planes, 3, 1, 1))
        width = int(planes * self.width_per_group / 64) * self.groups
        s1, s3 = (stride, 1) if self.version == "v1" else (1, stride)
        return ((width, 1, s1, 1), (width, 3, s3, self.groups), (planes * 4, 1, 1, 1))

    @nn.compact
    def __call__(self, x, *, train: bool):
        options.check_fields(self)
        position = self.norm_position
        # 'network_input' / 'none': the body is the norm-free net, position as 'before'
        kind = layers.body_norm_kind(self.norm, position)
        body_position = "after" if position == "after" else "before"
        norm = layers.make_norm(kind, train=train, dtype=self.dtype)
        act = layers.make_act(self.activation)
        normalized = layers.is_normalized(kind)
        conv = layers.make_conv(
            self.dtype,
            use_bias=layers.layer_bias(kind, body_position),
            kernel_init=layers.kaiming_normal_fan_out,
        )

        x = x.astype(self.dtype)
        input_norm = layers.make_norm(self.norm, train=train, dtype=self.dtype)
        x = layers.input_norm(x, input_norm, position)
        k, s = (7, 2) if self.stem == "imagenet" else (3, 1)
        x = conv(self.stem_width, (k, k), (s, s), padding=k // 2, name="conv1")(x)
        if not self.preact:  # pre-activation nets normalize in the first unit instead
            x = layers.norm_act(x, norm, act, body_position, "bn1")
        if self.stem == "imagenet":
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

        for i, (n, planes) in enumerate(zip(self.stage_sizes, self.widths, strict=True)):
            for j in range(n):
                x = ResidualUnit(
                    self._branch(planes, 2 if i > 0 and j == 0 else 1),
                    conv=conv,
                    norm=norm,
                    act=act,
                    shortcut=self.shortcut,
                    preact=self.preact,
                    first=i == 0 and j == 0,
                    se_ratio=self.se_ratio,
                    dropout_rate=self.dropout_rate,
                    zero_init_last=self.zero_init_residual,
                    normalized=normalized,
                    norm_position=body_position,
                    dtype=self.dtype,
                    name=f"layer{i + 1}_{j}",
                )(x, train=train)
        if self.preact:
            x = layers.norm_act(x, norm, act, body_position, "bn_final")
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
        return x.astype(jnp.float32)


# ImageNet depths (Table 1); se.py reuses these.
IMAGENET_DEPTHS: dict[int, dict[str, Any]] = {
    18: dict(stage_sizes=(2, 2, 2, 2), bottleneck=False),
    34: dict(stage_sizes=(3, 4, 6, 3), bottleneck=False),
    50: dict(stage_sizes=(3, 4, 6, 3), bottleneck=True),
    101: dict(stage_sizes=(3, 4, 23, 3), bottleneck=True),
    152: dict(stage_sizes=(3, 8, 36, 3), bottleneck=True),
}
# CIFAR nets (Sec. 4.2): 3x3 stem of 16 filters, 3 stages at 32x32 / 16x16 / 8x8.
CIFAR = dict(
    input_shape=(32, 32, 3), num_classes=10, stem="cifar", stem_width=16, widths=(16, 32, 64)
)

for _depth, _cfg in IMAGENET_DEPTHS.items():
    register(f"resnet{_depth}", ResNet, **_cfg)
for _depth in (18, 34):
    register(f"plain{_depth}", ResNet, **IMAGENET_DEPTHS[_depth], shortcut="none")
register("preact_resnet18", ResNet, **IMAGENET_DEPTHS[18], preact=True)
register("resnext50_32x4d", ResNet, **IMAGENET_DEPTHS[50], groups=32, width_per_group=4)
register("resnext101_32x8d", ResNet, **IMAGENET_DEPTHS[101], groups=32, width_per_group=8)
register("wide_resnet50_2", ResNet, **IMAGENET_DEPTHS[50], width_per_group=128)
register("wide_resnet101_2", ResNet, **IMAGENET_DEPTHS[101], width_per_group=128)

# Sec. 4.2 and Table 6; the paper trains plain nets up to 56 layers (Fig. 6), 110 here too.
for _depth in (20, 32, 44, 56, 110, 1202):
    _n = (_depth - 2) // 6
    register(f"resnet{_depth}", ResNet, **CIFAR, stage_sizes=(_n,) * 3, shortcut="A")
    if _depth <= 110:
        register(f"plain{_depth}", ResNet, **CIFAR, stage_sizes=(_n,) * 3, shortcut="none")
register("preact_resnet110", ResNet, **CIFAR, stage_sizes=(18,) * 3, shortcut="A", preact=True)
# ResNet-164 of "Identity Mappings" (Sec. 4): pre-activation bottlenecks, 16/64/128/256
# filters, stride in the first 1x1 and projections where the shape changes, as in
# KaimingHe/resnet-1k-layers.
register(
    "preact_resnet164",
    ResNet,
    **CIFAR,
    stage_sizes=(18,) * 3,
    bottleneck=True,
    preact=True,
    version="v1",
)
register(
    "wrn28_10", ResNet, **CIFAR | {"widths": (160, 320, 640)}, stage_sizes=(4,) * 3, preact=True
)
