"""SE-ResNet-50 on ImageNet, Hu et al. ("Squeeze-and-Excitation Networks", TPAMI 2019
version, Sec. 5.1 "Image Classification").

Synchronous SGD with momentum 0.9, batch 1024, learning rate 0.6 divided by 10 every
30 epochs, 100 epochs from scratch, He (MSRA) initialization, reduction ratio r = 16
(in the model). Augmentation: random-size crops to 224 and flips (the authors' repo adds
+-10 degree rotations and pixel jitter; not available here). The paper does not state
the weight decay; 1e-4 as in ResNet (He et al. 2016 Sec. 3.4). 0.6 at batch 1024 is
0.15 per 256 examples, i.e. a little above linear scaling of ResNet's 0.1.
The model is the paper's v1 (stride in the first 1x1), as Cadene's port.
Paper: 23.29% top-1 error (journal Table 2; 22.37% with the repo's longer retraining).
"""

import ml_collections

from configs import _imagenet, base


def get_config():
    c = base.get_config()
    c.model = "se_resnet50"
    c.model_kwargs = ml_collections.ConfigDict({"se_ratio": 16, "norm": "batch"})
    _imagenet.use_imagenet(c, batch_size=1024)

    c.optimizer = "sgd"
    c.momentum = 0.9
    c.learning_rate = 0.6
    c.schedule = "step"
    c.lr_decay_epochs = (30.0, 60.0, 90.0)
    c.lr_decay_factor = 0.1
    c.num_epochs = 100.0
    c.weight_decay = 1e-4
    return c
