"""The SE-ResNets of Squeeze-and-Excitation Networks (Hu et al. 2018).

The SE block (``blocks.SqueezeExcite``, Sec. 3, Fig. 3) rescales the channels of a
residual branch before the addition, with reduction r = 16 (Sec. 6.1, Table 10). Any
ResNet gets it with ``se_ratio=r``; so do GoogLeNet, BN-Inception, DenseNet, SqueezeNet
and ShuffleNet v2 (on their concat blocks, see ``blocks.SqueezeExcite``). This file only
registers the paper's SE-ResNets; it imports ``resnet.py``, never the other way.

The registered SE-ResNets match the Cadene ``pretrainedmodels`` implementation
(a port of the authors' Caffe models) exactly: its SE FCs are 1x1 convs *with*
biases (same parameters as the Dense layers here) and its bottlenecks put the stride
in the first 1x1 conv (``version='v1'``). Parameter counts at 1000 classes:
se_resnet50 28,088,024; se_resnet101 49,326,872; se_resnet152 66,821,848;
se_resnext50_32x4d 27,559,896. The only difference is the stem max-pool: Cadene uses
``ceil_mode=True`` without padding, torchvision (used here) pads by 1; both give
56x56 at 224x224.
"""

from __future__ import annotations

from cnn_arch.models.registry import register
from cnn_arch.models.resnet import IMAGENET_DEPTHS, ResNet

for _depth in (50, 101, 152):
    register(f"se_resnet{_depth}", ResNet, **IMAGENET_DEPTHS[_depth], se_ratio=16, version="v1")
# Cadene's SE-ResNeXt keeps the stride in the 3x3 grouped conv (the v1.5 position).
register(
    "se_resnext50_32x4d", ResNet, **IMAGENET_DEPTHS[50], se_ratio=16, groups=32, width_per_group=4
)
