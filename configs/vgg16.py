"""VGG-16 (configuration D) on ImageNet, Simonyan & Zisserman 2015 Sec. 3.1.

Mini-batch SGD with momentum 0.9, batch 256, L2 weight decay 5e-4, dropout 0.5 on the
first two FC layers, learning rate 1e-2 divided by 10 whenever the validation accuracy
stopped improving: 3 times in total, stopping after 370k iterations (74 epochs). The
paper decays on plateaus; the epochs below (30, 50, 65) are our fixed stand-in for them.

Differences from the paper, not expressible here: it initialises the deeper nets from
the trained net A (or with Glorot init, Sec. 3.1 footnote), trains on 224 crops of
isotropically rescaled images (S = 256, or S in [256, 512] for scale jittering) with
flips and the AlexNet RGB colour shift; here the model uses torchvision's init and
the ImageNet default augmentation is the Inception random-resized crop + flip.
--config.model=vgg16_bn trains the BN variant with the same recipe.
"""

import ml_collections

from configs import _imagenet, base


def get_config():
    c = base.get_config()
    c.model = "vgg16"
    c.model_kwargs = ml_collections.ConfigDict({"dropout_rate": 0.5, "norm": "none"})
    _imagenet.use_imagenet(c, batch_size=256)

    c.optimizer = "sgd"
    c.momentum = 0.9
    c.learning_rate = 1e-2
    c.schedule = "step"
    c.lr_decay_epochs = (30.0, 50.0, 65.0)  # 3 decays by 10 (the paper: on plateaus)
    c.lr_decay_factor = 0.1
    c.num_epochs = 74.0  # 370k iterations of 256
    c.weight_decay = 5e-4
    return c
