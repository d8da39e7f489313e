"""LeNet-5 (modern form) on full MNIST: SGD + momentum, cosine decay, 20 epochs.

Not the 1998 schedule (hand-tuned per-pass rates with stochastic diagonal
Levenberg-Marquardt, Sec. II.B of LeCun et al.); a plain modern recipe that
reaches over 99% on the 10,000 test digits.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.model = "lenet5"
    c.dataset = "mnist"
    c.batch_size = 128
    c.num_epochs = 20.0
    c.learning_rate = 0.05
    c.momentum = 0.9
    c.schedule = "cosine"
    c.weight_decay = 5e-4
    c.log_every_steps = 200
    c.checkpoint_every_steps = 2000
    return c
