"""GoogLeNet / Inception v1 (Szegedy et al. 2014, "Going deeper with convolutions").

Table 1 of the paper: a conv stem, nine Inception modules (3a-5b) with max pools
3x3/2 between stages, global average pooling, dropout and one linear classifier.
Two forms of the Inception module (Sec. 4, Fig. 2): ``reduction=False`` is the
naive module (1x1, 3x3, 5x5 convs and a 3x3 max pool side by side on the input,
the pool passing all input channels through); ``reduction=True`` puts 1x1
dimension reductions before the 3x3 and 5x5 convs and after the pool.

``inception_v1`` is the paper's form: 5x5 branch, ReLU convs with biases and no BN,
local response normalization in the stem (Fig. 3; size 5, alpha 1e-4/5, beta 0.75,
k 1, the values of the BVLC Caffe reference model since the paper gives none),
dropout 0.4, auxiliary heads with the paper's 5x5/3 average pool (Sec. 5).
``googlenet`` (``torchvision=True``) reproduces torchvision's variant: BN (eps 1e-3)
after every bias-free conv, 3x3 instead of 5x5 in the "5x5" branch, a 2x2/2 last
stem pool, adaptive 4x4 pooling in the aux heads, dropout 0.2; 6,624,904 parameters
without and 13,004,888 with the auxiliary heads at 1000 classes, exactly as
torchvision (whose ``transform_input`` only serves its ported weights and is left out).

Auxiliary classifiers (``aux_logits=True``, Sec. 5, on 4a and 4d): training returns
``(logits, aux1, aux2)``, evaluation only ``logits``. Their parameters exist in both
modes so ``init(train=False)`` gives the full tree; jit drops their unused eval compute.

Small inputs: pools use Caffe/PyTorch ceil mode and never shrink a map below 1x1
(``layers.pool2d``); the head is a global mean; the aux heads end in an adaptive
4x4 average pool (identity after the paper's 5x5/3 pool at 224 input), so 28x28
and 32x32 inputs work with the same parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnn_arch.models import layers
from cnn_arch.models.blocks import ConvNormAct, Inception
from cnn_arch.models.layers import adaptive_avg_pool, caffe_lrn, pool2d
from cnn_arch.models.registry import register

ModuleDef = Any

# Table 1: name, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj; one tuple per stage.
STAGES = (
    (("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64)),
    (
        ("4a", 192, 96, 208, 16, 48, 64),
        ("4b", 160, 112, 224, 24, 64, 64),
        ("4c", 128, 128, 256, 24, 64, 64),
        ("4d", 112, 144, 288, 32, 64, 64),
        ("4e", 256, 160, 320, 32, 128, 128),
    ),
    (("5a", 256, 160, 320, 32, 128, 128), ("5b", 384, 192, 384, 48, 128, 128)),
)
AUX_AFTER = ("4a", "4d")  # Sec. 5


def v1_branches(c1, c3r, c3, c5r, c5, *, k5: int = 5, reduction: bool = True):
    """The three conv branches of a GoogLeNet module, naive or with 1x1 reductions."""
    if not reduction:
        return ((c1, 1, 1),), ((c3, 3, 1),), ((c5, k5, 1),)
    return ((c1, 1, 1),), ((c3r, 1, 1), (c3, 3, 1)), ((c5r, 1, 1), (c5, k5, 1))


class AuxHead(nn.Module):
    """Auxiliary classifier (Sec. 5): avg pool to 4x4, 1x1 conv 128, FC 1024, dropout 0.7."""

    num_classes: int
    unit: ModuleDef
    paper_pool: bool = True  # the paper's 5x5/3 average pool before the adaptive 4x4
    dropout_rate: float = 0.7
    activation: str = "relu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        if self.paper_pool:
            x = pool2d(x, "avg", 5, 3)
        x = adaptive_avg_pool(x, 4)
        x = self.unit(128, name="conv")(x, train=train).reshape((x.shape[0], -1))
        x = layers.make_act(self.activation)(nn.Dense(1024, dtype=self.dtype, name="fc1")(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc2")(x).astype(jnp.float32)


class GoogLeNet(nn.Module):
    """GoogLeNet; ``torchvision=True`` is torchvision's variant, False the paper's (Table 1)."""

    num_classes: int = 1000
    torchvision: bool = True
    reduction: bool = True
    aux_logits: bool = False
    lrn: bool = False
    norm: str = "batch"
    activation: str = "relu"
    dropout_rate: float = 0.2
    aux_dropout_rate: float = 0.7
    # Table 1's modules per stage (pools between stages); a shorter table is a shallower net
    # with the same code paths (the 8-device test uses 3a / 4a, 4d / 5b).
    stages: Sequence[Sequence[tuple]] = STAGES
    se_ratio: int = 0  # > 0: SE-Inception, an SE gate on each module's output (Hu et al. 2018)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        tv = self.torchvision
        unit = functools.partial(
            ConvNormAct,
            norm=self.norm,
            norm_epsilon=1e-3 if tv else layers.BN_EPSILON,
            activation=self.activation,
            dtype=self.dtype,
        )
        lrn = caffe_lrn if self.lrn else lambda y: y
        x = unit(64, 7, 2, 3, name="conv1")(x.astype(self.dtype), train=train)
        x = lrn(pool2d(x, "max", 3, 2, ceil_mode=True))
        x = unit(64, 1, name="conv2")(x, train=train)
        x = lrn(unit(192, 3, 1, 1, name="conv3")(x, train=train))
        aux = []
        present = {row[0] for stage in self.stages for row in stage}
        if self.aux_logits and not present >= set(AUX_AFTER):
            raise ValueError(f"aux_logits=True needs the modules {AUX_AFTER} in stages")
        for s, stage in enumerate(self.stages):
            window = 2 if tv and s == 2 else 3  # torchvision's maxpool4 is 2x2/2
            x = pool2d(x, "max", window, 2, ceil_mode=True)
            for name, c1, c3r, c3, c5r, c5, pp in stage:
                branches = v1_branches(
                    c1, c3r, c3, c5r, c5, k5=3 if tv else 5, reduction=self.reduction
                )
                pp = pp if self.reduction else 0
                x = Inception(
                    branches, "max", 1, pp, unit, self.se_ratio, self.dtype, name=f"inception{name}"
                )(x, train=train)
                if self.aux_logits and name in AUX_AFTER:
                    head = AuxHead(
                        self.num_classes,
                        unit,
                        paper_pool=not tv,
                        dropout_rate=self.aux_dropout_rate,
                        activation=self.activation,
                        dtype=self.dtype,
                        name=f"aux{len(aux) + 1}",
                    )
                    aux.append(head(x, train=train))
        x = jnp.mean(x, axis=(1, 2))  # the 7x7/1 average pool at 224 input; global for any size
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)
        return (x, *aux) if self.aux_logits and train else x


register("googlenet", GoogLeNet)
register("inception_v1", GoogLeNet, torchvision=False, norm="none", lrn=True, dropout_rate=0.4)
