"""BN-Inception: the Inception variant of the Batch Normalization paper (Ioffe &
Szegedy 2015, Sec. 4.2 and Appendix, Figure 5).

Changes to GoogLeNet listed in the Appendix: each 5x5 conv becomes two stacked 3x3
convs ("double 3x3"); three 28x28 modules (3a-3c); average or max pooling inside
each module as the table says; no pooling layers between modules: modules 3c and 4e
reduce the grid with stride-2 convs and a stride-2 max pool passing its input
through (no 1x1 branch, no projection); the first conv is separable with depth
multiplier 8 (``separable_stem``). Global average pooling and one linear layer.

The branch widths are the table's. Its output column says 576 for 4c/4d and 1024
for 4e, but the widths there sum to 608 and 1056; the widths are what the released
Caffe model (and its PyTorch ports) use, so they are kept and the column is off.

The five networks of Sec. 4.2 are configurations of this one model (``PAPER_NETWORKS``):
'Inception' = no BN, LRN as in GoogLeNet, dropout; 'BN-Baseline' = BN before every
nonlinearity; 'BN-x5' / 'BN-x30' add the Sec. 4.2.1 changes (no dropout, no LRN,
learning rate x5 / x30); 'BN-x5-Sigmoid' uses sigmoid. The other Sec. 4.2.1 changes
(weight decay / 5, faster decay, less distortion) belong to the training config.
Convs followed by BN have no bias (Sec. 3.2); without BN they have one.

Parameters: 11,278,528 at 1000 classes; the paper's Appendix says 13.6M for a network
"other than the top softmax layer" without fully-connected layers. Counting the
variants the text leaves open (``tests/test_models_classic.py`` recounts them): the
plain 7x7 stem instead of the separable one +6,696; biases instead of BN -10,016; one
5x5 conv in place of each double 3x3 at the table's widths +953,216 (12,231,744: at
these widths two 3x3 convs are smaller than one 5x5; the paper's "+25%" compares with
GoogLeNet's narrower 5x5 branches); GoogLeNet's auxiliary heads (1x1 conv 128, FC
1024, FC 1000) after 4a and 4d +3,197,160 and +3,201,256. No subset of these is
within 0.5M of 13.6M (the nearest: 12,231,744 and one head, 14,475,688, which the
quoted sentence rules out), so the 2.3M gap is not explained by Figure 5 as printed.

Padding: stride-1 layers keep the size; stride-2 layers inside modules use TF 'SAME'
(output ceil(H/2), so conv and pool branches agree at any size); stem pools use
Caffe/PyTorch ceil mode and never shrink a map below 1x1. The head is a global mean,
so 28x28x1 and 32x32x3 inputs work unchanged.

CIFAR-sized study (``experiments/bn_inception_cifar.py``): ``stem='cifar'`` replaces the
7x7/2 conv1 and the first max pool by a 3x3/1 conv1, so a 32x32 input reaches the
modules at 16x16 (then 8x8 after 3c, 4x4 after 4e), the ImageNet network's 28/14/7
progression at about half the size; ``width`` multiplies every conv's channels (the
table's widths x width, rounded). The defaults leave the ImageNet network unchanged.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from cnn_arch.models import layers, options
from cnn_arch.models.blocks import ConvNormAct, Inception
from cnn_arch.models.layers import caffe_lrn, pool2d
from cnn_arch.models.registry import register

# Figure 5: name, #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool, pool proj,
# stride (0 #1x1 / 0 proj: no 1x1 branch / pass-through).
MODULES = (
    ("3a", 64, 64, 64, 64, 96, "avg", 32, 1),
    ("3b", 64, 64, 96, 64, 96, "avg", 64, 1),
    ("3c", 0, 128, 160, 64, 96, "max", 0, 2),
    ("4a", 224, 64, 96, 96, 128, "avg", 128, 1),
    ("4b", 192, 96, 128, 96, 128, "avg", 128, 1),
    ("4c", 160, 128, 160, 128, 160, "avg", 128, 1),
    ("4d", 96, 128, 192, 160, 192, "avg", 128, 1),
    ("4e", 0, 128, 192, 192, 256, "max", 0, 2),
    ("5a", 352, 192, 320, 160, 224, "avg", 128, 1),
    ("5b", 352, 192, 320, 192, 224, "max", 128, 1),
)

STEMS = ("imagenet", "cifar")

# Sec. 4.2: model overrides and initial learning rate of the five compared networks.
PAPER_NETWORKS: dict[str, dict[str, Any]] = {
    "inception": dict(norm="none", lrn=True, dropout_rate=0.4, learning_rate=0.0015),
    "bn_baseline": dict(norm="batch", lrn=True, dropout_rate=0.4, learning_rate=0.0015),
    "bn_x5": dict(norm="batch", lrn=False, dropout_rate=0.0, learning_rate=0.0075),
    "bn_x30": dict(norm="batch", lrn=False, dropout_rate=0.0, learning_rate=0.045),
    "bn_x5_sigmoid": dict(
        norm="batch", activation="sigmoid", lrn=False, dropout_rate=0.0, learning_rate=0.0075
    ),
}


class BNInception(nn.Module):
    num_classes: int = 1000
    norm: str = "batch"
    activation: str = "relu"
    lrn: bool = False  # GoogLeNet's stem LRNs; the 'Inception' baseline keeps them
    separable_stem: bool = True  # Appendix: separable first conv, depth multiplier 8
    dropout_rate: float = 0.0  # removed in the BN-x networks (Sec. 4.2.1)
    se_ratio: int = 0  # > 0: an SE gate on each module's output (SE-Inception, Hu et al. 2018)
    # 'cifar': for 32x32 inputs, one 2x downsampling in the stem instead of ImageNet's 8x
    # (3x3/1 conv1, no first max pool), so the modules see 16/8/4 grids (ImageNet: 28/14/7).
    stem: str = "imagenet"
    width: float = 1.0  # multiplies every conv's output channels (rounded, at least 1)
    dtype: Any = jnp.float32

    CHOICES: ClassVar[dict[str, options.Choices]] = {"stem": STEMS}

    @nn.compact
    def __call__(self, x, *, train: bool):
        options.check_fields(self)
        unit = functools.partial(
            ConvNormAct, norm=self.norm, activation=self.activation, dtype=self.dtype
        )
        lrn = caffe_lrn if self.lrn else lambda y: y

        def w(c: int) -> int:
            return max(1, round(c * self.width)) if c else 0

        x = x.astype(self.dtype)
        if self.stem == "cifar":  # 32x32: conv1 3x3/1, conv2 at full size, one pool
            x = lrn(unit(w(64), 3, 1, 1, name="conv1")(x, train=train))
        elif self.separable_stem:  # depthwise 7x7/2 (x8 channels), pointwise 64 with norm
            c = x.shape[-1]
            x = layers.make_conv(self.dtype, use_bias=False, feature_group_count=c)(
                8 * c, (7, 7), 2, 3, name="conv1_depthwise"
            )(x)
            x = unit(w(64), name="conv1")(x, train=train)
        else:
            x = unit(w(64), 7, 2, 3, name="conv1")(x, train=train)
        if self.stem != "cifar":
            x = lrn(pool2d(x, "max", 3, 2, ceil_mode=True))
        x = unit(w(64), name="conv2_reduce")(x, train=train)
        x = lrn(unit(w(192), 3, 1, 1, name="conv2")(x, train=train))
        x = pool2d(x, "max", 3, 2, ceil_mode=True)
        for name, c1, c3r, c3, d3r, d3, pool, pp, s in MODULES:
            c1, c3r, c3, d3r, d3, pp = map(w, (c1, c3r, c3, d3r, d3, pp))
            branches = ((c3r, 1, 1), (c3, 3, s)), ((d3r, 1, 1), (d3, 3, 1), (d3, 3, s))
            branches = (((c1, 1, 1),), *branches) if c1 else branches
            x = Inception(
                branches, pool, s, pp, unit, self.se_ratio, self.dtype, name=f"inception{name}"
            )(x, train=train)
        x = jnp.mean(x, axis=(1, 2))  # the table's 7x7 average pool, global for any size
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


register("bn_inception", BNInception)
