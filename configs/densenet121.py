"""DenseNet-121 on ImageNet, Huang et al. 2017 Sec. 4.2 ("Training").

SGD with Nesterov momentum 0.9 (no dampening), batch 256, 90 epochs, learning rate 0.1
lowered 10 times at epochs 30 and 60, weight decay 1e-4; no dropout on ImageNet (the
paper uses dropout 0.2 only on the un-augmented CIFAR/SVHN). Augmentation: the
fb.resnet.torch scheme (scale + aspect jitter, flips, colour jitter and lighting);
here the Inception random-resized crop + flip. fb.resnet.torch decays every parameter,
BN and biases included; here they are not decayed (weight_decay_on_norm_and_bias).
Paper: 25.02% top-1 error, single crop (Table 3). densenet161/169/201 share the recipe.
"""

import ml_collections

from configs import _imagenet, base


def get_config():
    c = base.get_config()
    c.model = "densenet121"
    c.model_kwargs = ml_collections.ConfigDict({"drop_rate": 0.0, "norm": "batch"})
    _imagenet.use_imagenet(c, batch_size=256)

    c.optimizer = "sgd"
    c.momentum = 0.9
    c.nesterov = True
    c.learning_rate = 0.1
    c.schedule = "step"
    c.lr_decay_epochs = (30.0, 60.0)
    c.lr_decay_factor = 0.1
    c.num_epochs = 90.0
    c.weight_decay = 1e-4
    return c
