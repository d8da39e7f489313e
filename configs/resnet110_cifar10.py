"""ResNet-110 on CIFAR-10: He et al. 2016 Sec. 4.2, full recipe with its warmup.

The ResNet-20 recipe (``resnet20_cifar10``) plus the paper's warmup for the 110-layer
net: "0.01 ... until the training error is below 80% (about 400 iterations), and then
go back to 0.1". Here a linear ramp over the first epoch (390 iterations) stands in for
that step. Paper: 6.43% test error (best of 5 runs; mean 6.61 +- 0.16, Table 6).
"""

from configs import resnet20_cifar10


def get_config():
    c = resnet20_cifar10.get_config()
    c.model = "resnet110"
    c.warmup_epochs = 1.0
    return c
