"""MobileNet v1 (1.0, 224) on ImageNet, Howard et al. 2017 Sec. 3.4 ("Training").

Sec. 3.4: RMSprop with asynchronous gradient descent "similar to Inception V3", less
regularization and augmentation than large models: no side heads, no label smoothing,
smaller crops limited, "very little or no weight decay" on the depthwise filters. The
Inception-v3 settings it points to (Szegedy et al. 2016 Sec. 8): RMSProp decay 0.9,
epsilon 1.0, learning rate 0.045 decayed by 0.94 every 2 epochs, batch 32 per replica,
100 epochs; momentum 0.9 as TF-slim's RMSProp. Weight decay 4e-5 (TF-slim's
mobilenet_v1_arg_scope, which exempts depthwise kernels).

Not expressible here: exempting depthwise kernels from weight decay (every kernel is
decayed: 4e-5 on them is the paper's "very little"), the smaller-crop limit, TF's
RMSProp starting its mean square at 1 (optax starts at 0), asynchronous updates.
Paper: 70.6% top-1 (Table 8).
"""

import ml_collections

from configs import _imagenet, base


def get_config():
    c = base.get_config()
    c.model = "mobilenet_v1"
    c.model_kwargs = ml_collections.ConfigDict(
        {"width_multiplier": 1.0, "dropout_rate": 0.0, "norm": "batch"}
    )
    _imagenet.use_imagenet(c, batch_size=32)

    c.optimizer = "rmsprop"
    c.rmsprop_decay = 0.9
    c.momentum = 0.9
    c.optimizer_eps = 1.0
    c.learning_rate = 0.045
    c.schedule = "exponential"
    c.lr_decay_factor = 0.94
    c.lr_decay_every_epochs = 2.0
    c.num_epochs = 100.0
    c.weight_decay = 4e-5
    c.label_smoothing = 0.0
    return c
