"""GoogLeNet (Inception v1) on ImageNet, Szegedy et al. 2014 Sec. 6 (the paper's net).

Sec. 6: asynchronous SGD with momentum 0.9 and a fixed schedule "decreasing the
learning rate by 4% every 8 epochs" (exponential, factor 0.96 per 8 epochs);
Inception-style crops of 8%-100% of the area with aspect ratio in [3/4, 4/3] and
flips, which is the ImageNet default augmentation here. Sec. 5: two auxiliary
classifiers (after 4a and 4d, dropout 0.7) whose losses are added with weight 0.3
(cnn_arch.train.AUX_LOSS_WEIGHT) and a dropout of 0.4 before the main classifier.

The paper gives no initial rate, batch size, weight decay or length. We take them from
the BVLC Caffe reference of this net (models/bvlc_googlenet/solver.prototxt): batch 32,
learning rate 0.01, weight decay 2e-4, 0.96 every 320k iterations (= 8 epochs at batch
32), 10M iterations (= 250 epochs). Not expressible here: Polyak averaging of the final
model and the photometric distortions (Sec. 6).
--config.model=googlenet trains torchvision's BN variant (set dropout_rate=0.2 as it has).
"""

import ml_collections

from configs import _imagenet, base


def get_config():
    c = base.get_config()
    c.model = "inception_v1"  # the paper's form: no BN, LRN in the stem, 5x5 branches
    c.model_kwargs = ml_collections.ConfigDict(
        {"aux_logits": True, "dropout_rate": 0.4, "aux_dropout_rate": 0.7}
    )
    _imagenet.use_imagenet(c, batch_size=32)

    c.optimizer = "sgd"
    c.momentum = 0.9
    c.learning_rate = 0.01
    c.schedule = "exponential"
    c.lr_decay_factor = 0.96  # "decreasing the learning rate by 4%"
    c.lr_decay_every_epochs = 8.0  # "every 8 epochs"
    c.num_epochs = 250.0
    c.weight_decay = 2e-4
    return c
