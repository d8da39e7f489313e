"""Wide ResNet-28-10 on CIFAR-10, Zagoruyko & Komodakis 2016 Sec. 3 (experimental setup).

SGD with Nesterov momentum 0.9 (dampening 0), cross-entropy, batch 128, learning rate
0.1 multiplied by 0.2 at epochs 60, 120 and 160, 200 epochs, weight decay 5e-4.
Augmentation: flips and random crops of the image padded by 4 pixels (the paper pads
by reflection, here with zeros), mean/std normalization. Dropout 0.3 between the two
3x3 convs of each block (Sec. 2.4, Table 6: "WRN-28-10-dropout", 3.89% error; 4.00%
without, --config.model_kwargs.dropout_rate=0). The authors' Torch code decays every
parameter; here BN and biases are not decayed.
"""

import ml_collections

from configs import base


def get_config():
    c = base.get_config()
    c.model = "wrn28_10"
    c.model_kwargs = ml_collections.ConfigDict({"dropout_rate": 0.3, "norm": "batch"})
    c.dataset = "cifar10"
    c.augment = "default"  # pad 4 + random crop + flip
    c.batch_size = 128
    c.eval_batch_size = 1000

    c.optimizer = "sgd"
    c.momentum = 0.9
    c.nesterov = True
    c.learning_rate = 0.1
    c.schedule = "step"
    c.lr_decay_epochs = (60.0, 120.0, 160.0)
    c.lr_decay_factor = 0.2
    c.num_epochs = 200.0
    c.weight_decay = 5e-4

    c.log_every_steps = 100
    c.checkpoint_every_steps = 3900  # every 10 epochs
    return c
