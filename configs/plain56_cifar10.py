"""Plain-56 on CIFAR-10: the deepest plain net of He et al. 2016 Fig. 6, full recipe.

``resnet56_cifar10`` without the shortcuts (the ResNet-20 recipe unchanged). Fig. 6
(left): its training error stays above plain-20's for the whole run, the degradation
problem of Sec. 4.2; the paper gives no table figure for the plain nets.
"""

from configs import resnet20_cifar10


def get_config():
    c = resnet20_cifar10.get_config()
    c.model = "plain56"
    return c
