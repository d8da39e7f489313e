"""ResNet-50 on ImageNet, the Flax ImageNet example's recipe (its TPU config).

SGD with Nesterov momentum 0.9, learning rate 0.1 x batch/256 (Goyal et al. 2017,
Sec. 2.1) = 0.4 at batch 1024, 5 epochs of linear warmup then cosine decay to 0 over
100 epochs, L2 weight decay 1e-4 on kernels only (the example's 0.5 * 1e-4 * ||w||^2
over params with ndim > 1), bfloat16 compute, no label smoothing (the example has none;
0.1 as in Szegedy et al. 2016 Sec. 7 is worth ~+0.5% top-1), last BN of every residual
branch zero-initialized (the example's ``scale_init=zeros``, Goyal et al. Sec. 5.1).
The example reports about 76% top-1. The model is torchvision's v1.5 (stride in the 3x3),
as the example's.

He et al. 2016's own recipe (Sec. 3.4) differs: batch 256, lr 0.1 divided by 10 when
the error plateaus (~epochs 30/60), 600k iterations (~120 epochs), weight decay 1e-4,
momentum 0.9 (no Nesterov), 224 crops of a [256, 480] scale-jittered image; set
schedule='step', lr_decay_epochs=(30, 60), num_epochs=90, nesterov=False,
warmup_epochs=0, batch_size=256 for the torchvision-reference equivalent.
"""

import ml_collections

from configs import _imagenet, base


def get_config():
    c = base.get_config()
    c.model = "resnet50"
    c.model_kwargs = ml_collections.ConfigDict(
        {"zero_init_residual": True, "norm": "batch"}  # declared so the CLI can change them
    )
    _imagenet.use_imagenet(c, batch_size=1024)
    c.half_precision = True  # bfloat16 activations; params and BN statistics stay float32

    c.optimizer = "sgd"
    c.momentum = 0.9
    c.nesterov = True
    c.learning_rate = 0.1  # per 256 examples
    c.lr_scaling = "linear"  # -> 0.4 at batch 1024
    c.schedule = "cosine"
    c.warmup_epochs = 5.0
    c.num_epochs = 100.0
    c.weight_decay = 1e-4
    c.weight_decay_mode = "l2"
    c.label_smoothing = 0.0
    return c
