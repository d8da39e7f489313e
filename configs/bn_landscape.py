"""Santurkar et al. 2018 on a narrow VGG-11 (CIFAR-10): without BN, with BN, noisy BN.

The network is VGG configuration A (``vgg11``: 8 convs of 3x3) at an eighth of the
widths (8-16-32-32-64-64-64-64 channels), then a global average pool and the
classifier (no hidden FCs, the usual CIFAR VGG head), no dropout (so the only randomness of a
training-mode pass is BN's batch and the noisy BN's draw). BN goes after every conv,
before the ReLU, as in ``vgg11_bn``. SGD with momentum 0.9, constant learning rate
0.05 for all three networks, batch 128, no weight decay, no augmentation (the study is
about optimization). Every ``steps_per_eval`` steps the evaluators record the test
accuracy, the ICS of Definition 2.1 for ``ICS_LAYERS`` and the landscape along the
gradient (Sec. 3.1) on one fixed training batch.
"""

import ml_collections

from configs import base

NETWORKS = {"standard": "none", "bn": "batch", "noisy_bn": "noisy_batch"}
# The layers whose ICS is measured: an early, a middle and a late conv (Fig. 3 / 5).
ICS_LAYERS = ("conv2_1", "conv4_1", "conv5_2")
STEP_SIZES = (0.05, 0.1, 0.2, 0.3, 0.4)  # eta of the landscape, absolute (see README)


def get_config(network: str = "bn") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.model = "vgg11"
    c.model_kwargs = ml_collections.ConfigDict(
        {
            "norm": NETWORKS[network],
            "width_multiplier": 0.125,
            "pool_size": 1,
            "fc_width": 0,
            "dropout_rate": 0.0,
        }
    )
    c.dataset = "cifar10"
    c.augment = "none"
    c.batch_size = 128
    c.eval_batch_size = 1000
    c.optimizer = "sgd"
    c.momentum = 0.9
    c.learning_rate = 0.05
    c.schedule = "constant"
    c.num_train_steps = 2000
    c.log_every_steps = 50
    c.steps_per_eval = 100
    c.checkpoint_every_steps = 2000
    c.evals = ml_collections.ConfigDict(
        {
            "eval": {"kind": "running"},
            "ics": {"kind": "ics", "layers": list(ICS_LAYERS)},
            "landscape": {
                "kind": "landscape",
                "step_sizes": list(STEP_SIZES),
                "relative_to_lr": False,
            },
        }
    )
    return c
