"""ResNet-56 on CIFAR-10: the full recipe of He et al. 2016 Sec. 4.2, for accelerators.

The ResNet-20 recipe (``resnet20_cifar10``) unchanged: batch 128, SGD momentum 0.9,
weight decay 1e-4, learning rate 0.1 divided by 10 at 32k and 48k iterations, 64k
iterations (164 epochs). Paper: 6.97% test error (Table 6). Its plain twin is
``plain56_cifar10`` (Fig. 6: plain-56 has higher training error than plain-20).
About 125M multiply-adds per image: hours on one GPU, weeks on 2 CPU cores; the scaled
CPU version is ``python experiments/degradation.py``.
"""

from configs import resnet20_cifar10


def get_config():
    c = resnet20_cifar10.get_config()
    c.model = "resnet56"
    return c
