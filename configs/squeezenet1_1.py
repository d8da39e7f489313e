"""SqueezeNet v1.1 on ImageNet, Iandola et al. 2016 and its reference solver.

The paper defers the training protocol to its repository (forresti/SqueezeNet,
solver.prototxt): SGD with momentum 0.9, batch 512 (32 x iter_size 16), learning rate
0.04 decayed linearly to 0 ("poly", power 1) over 170k iterations (= 68 epochs),
weight decay 2e-4; dropout 0.5 after fire9 (paper Sec. 3.3; in the model), 227x227
crops in Caffe (224 here, as torchvision). v1.1 keeps v1.0's solver.

Not expressible here: the linear ("poly", power 1) decay; cosine decay to 0 over the
same steps stands in for it (both start at 0.04 and end at 0).
Reference: 58.2% top-1 (torchvision's weights), AlexNet-level accuracy (Table 2).
"""

import ml_collections

from configs import _imagenet, base


def get_config():
    c = base.get_config()
    c.model = "squeezenet1_1"
    c.model_kwargs = ml_collections.ConfigDict({"dropout_rate": 0.5, "norm": "none"})
    _imagenet.use_imagenet(c, batch_size=512)

    c.optimizer = "sgd"
    c.momentum = 0.9
    c.learning_rate = 0.04
    c.schedule = "cosine"  # stands in for Caffe's linear "poly" decay to 0
    c.num_train_steps = 170_000  # 68 epochs at batch 512
    c.weight_decay = 2e-4
    return c
