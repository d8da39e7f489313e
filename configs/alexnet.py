"""AlexNet on ImageNet, Krizhevsky, Sutskever & Hinton 2012 Sec. 5 (the paper's net).

SGD with batch 128, momentum 0.9 and weight decay 5e-4 (the update of Sec. 5:
v <- 0.9 v - 5e-4 * lr * w - lr * grad, i.e. a coupled L2 term); learning rate 0.01,
divided by 10 when the validation error stopped improving, three times before the end,
about 90 passes over the 1.2M images. The paper decays on plateaus; the epochs below
(every 30, then 80) are our fixed stand-in, as torchvision's AlexNet recipe decays every 30.
Dropout 0.5 in the first two FC layers (Sec. 4.2); LRN, grouped convs and the paper's
init (N(0, 0.01), bias 1 in conv2/4/5 and the FCs) are in the model ('alexnet_paper').
Inputs are 227x227 (the size the Fig. 2 arithmetic needs; the paper says 224).

Not expressible here: the paper's augmentation (random 224 crops of 256x256 images +
flips, and PCA colour noise, Sec. 4.1); the default is the Inception crop + flip.
--config.model=alexnet (torchvision's single-tower variant) with image_size=224.
"""

import ml_collections

from configs import _imagenet, base


def get_config():
    c = base.get_config()
    c.model = "alexnet_paper"
    c.model_kwargs = ml_collections.ConfigDict({"dropout_rate": 0.5, "norm": "none"})
    _imagenet.use_imagenet(c, batch_size=128, image_size=227)

    c.optimizer = "sgd"
    c.momentum = 0.9
    c.learning_rate = 0.01
    c.schedule = "step"
    c.lr_decay_epochs = (30.0, 60.0, 80.0)  # 3 decays by 10 (the paper: on plateaus)
    c.lr_decay_factor = 0.1
    c.num_epochs = 90.0
    c.weight_decay = 5e-4
    c.weight_decay_mode = "l2"
    return c
