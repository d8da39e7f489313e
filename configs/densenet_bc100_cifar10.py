"""DenseNet-BC (L=100, k=12) on CIFAR-10 with augmentation (C10+), Huang et al. 2017 Sec. 4.2.

SGD with Nesterov momentum 0.9 (no dampening), batch 64, 300 epochs, learning rate 0.1
divided by 10 at 50% and 75% of training (epochs 150 and 225), weight decay 1e-4.
Standard augmentation (4-pixel padding, random crop, flip; Sec. 4.1), hence no dropout:
the paper adds dropout 0.2 after each conv only on C10/C100/SVHN without augmentation
(set --config.augment=none --config.model_kwargs.drop_rate=0.2 for that).
Paper: 4.51% test error on C10+ (Table 2).
"""

import ml_collections

from configs import base


def get_config():
    c = base.get_config()
    c.model = "densenet_bc100"
    c.model_kwargs = ml_collections.ConfigDict({"drop_rate": 0.0, "norm": "batch"})
    c.dataset = "cifar10"
    c.augment = "default"  # pad 4 + random crop + flip
    c.batch_size = 64
    c.eval_batch_size = 1000

    c.optimizer = "sgd"
    c.momentum = 0.9
    c.nesterov = True
    c.learning_rate = 0.1
    c.schedule = "step"
    c.lr_decay_epochs = (150.0, 225.0)  # 50% and 75% of 300
    c.lr_decay_factor = 0.1
    c.num_epochs = 300.0
    c.weight_decay = 1e-4

    c.log_every_steps = 200
    c.checkpoint_every_steps = 7810  # every 10 epochs (781 steps each)
    return c
