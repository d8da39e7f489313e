"""ResNet-20 on CIFAR-10, He et al. 2016 Sec. 4.2.

SGD, momentum 0.9, weight decay 1e-4, batch 128, learning rate 0.1 divided by 10 at
32k and 48k iterations, stop at 64k. At 50,000 // 128 = 390 steps per epoch those are
epochs 82, 123 and 164 (the paper chose them on a 45k/5k split and trains on all 50k).
Augmentation: 4-pixel zero padding, random 32x32 crop and horizontal flip; per-channel
mean/std normalization (the paper subtracts the per-pixel mean). No dropout. BN and
biases are not decayed (the project default; the paper does not say).
ResNet-110 adds a warmup: 0.01 for 400 iterations (~1 epoch) then 0.1 (Sec. 4.2); with
--config.model=resnet110 use --config.warmup_epochs=1 (a linear ramp, not a step).
Paper: 8.75% test error for ResNet-20 (Table 6).
"""

import ml_collections

from configs import base


def get_config():
    c = base.get_config()
    c.model = "resnet20"  # 20/32/44/56/110 share the recipe (Table 6)
    c.model_kwargs = ml_collections.ConfigDict({"norm": "batch"})  # e.g. "group", "none"
    c.dataset = "cifar10"
    c.augment = "default"  # pad 4 + random crop + flip
    c.batch_size = 128
    c.eval_batch_size = 1000

    c.optimizer = "sgd"
    c.momentum = 0.9
    c.nesterov = False
    c.learning_rate = 0.1
    c.schedule = "step"
    c.lr_decay_epochs = (82.0, 123.0)  # 32k and 48k iterations
    c.lr_decay_factor = 0.1
    c.num_epochs = 164.0  # 64k iterations
    c.weight_decay = 1e-4

    c.log_every_steps = 100
    c.checkpoint_every_steps = 3900  # every 10 epochs
    return c
