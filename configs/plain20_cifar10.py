"""Plain-20 on CIFAR-10: the degradation experiment of He et al. 2016 (Sec. 4.2, Fig. 6).

The ResNet-20 recipe unchanged (``resnet20_cifar10``) on the same net without shortcuts.
Fig. 6 (left): the deeper plain nets (32, 44, 56) have higher training error than the
shallower ones; run --config.model=plain56 next to this to see it.
"""

from configs import resnet20_cifar10


def get_config():
    c = resnet20_cifar10.get_config()
    c.model = "plain20"  # 20/32/44/56/110
    return c
