"""ShuffleNet v2 1.0x on ImageNet, Ma et al. 2018, which trains as ShuffleNet v1
(Zhang et al. 2018 Sec. 4): weight decay 4e-5, learning rate decreased linearly from
0.5 to 0, batch 1024, 300k iterations (= 240 epochs), less aggressive scale
augmentation. The authors' code (megvii-model/ShuffleNet-Series) adds SGD momentum 0.9,
label smoothing 0.1 and no weight decay on BN and biases (the default here).

Not expressible here: the linear decay (cosine decay to 0 over the same steps stands
in for it) and the milder scale augmentation (the default random-resized crop is used).
Paper: 30.6% top-1 error for 1.0x (Table 8); torchvision's weights 69.4% top-1.
"""

import ml_collections

from configs import _imagenet, base


def get_config():
    c = base.get_config()
    c.model = "shufflenet_v2_x1_0"  # x0_5 / x1_5 / x2_0 share the recipe
    c.model_kwargs = ml_collections.ConfigDict({"norm": "batch"})
    _imagenet.use_imagenet(c, batch_size=1024)

    c.optimizer = "sgd"
    c.momentum = 0.9
    c.learning_rate = 0.5
    c.schedule = "cosine"  # stands in for the linear decay from 0.5 to 0
    c.num_train_steps = 300_000
    c.weight_decay = 4e-5
    c.label_smoothing = 0.1
    return c
