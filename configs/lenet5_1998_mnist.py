"""The original LeNet-5 on MNIST, LeCun, Bottou, Bengio & Haffner 1998 (Sec. III.C, App. C).

The paper: 20 passes over the 60,000 training digits, online updates (one example at a
time) with the stochastic diagonal Levenberg-Marquardt method, global learning rate
0.0005 for 2 passes, 0.0002 for 3, 0.0001 for 3, 0.00005 for 4, then 0.00001; RBF
output units and the criterion of Eq. 9; 0.95% test error without distortions.

What this library can run instead, as close as it gets:
- plain SGD (no second-order diagonal): the paper's rates are scaled by 1/(mu + h_kk)
  per parameter and do not transfer; batch 32 with learning rate 0.02 (the largest
  stable one of {0.002, 0.005, 0.01, 0.02, 0.05, 0.1}; 4.9% test error after 1 pass);
- the paper's 20 passes with drops after passes 2, 5, 8 and 12; a constant factor 0.5
  (1, 1/2, 1/4, 1/8, 1/16) approximates its 1, 0.4, 0.2, 0.1, 0.02;
- softmax cross-entropy on the logits -y (y the RBF distances): Eq. 9 without its
  extra "rubbish" term (``lenet1998.rbf_loss`` has the paper's criterion);
- per-dataset mean/std normalization instead of the paper's background -0.1 / ink
  1.175 scaling; 28x28 digits are edge-padded to 32x32 by the model.
"""

import ml_collections

from configs import base


def get_config():
    c = base.get_config()
    c.model = "lenet5_1998"
    c.model_kwargs = ml_collections.ConfigDict()  # the 1998 net has no options
    c.dataset = "mnist"
    c.augment = "none"  # the 0.95% result is without distortions
    c.batch_size = 32
    c.eval_batch_size = 1000
    c.num_epochs = 20.0

    c.optimizer = "sgd"
    c.momentum = 0.0
    c.learning_rate = 0.02
    c.schedule = "step"
    c.lr_decay_epochs = (2.0, 5.0, 8.0, 12.0)
    c.lr_decay_factor = 0.5
    c.weight_decay = 0.0

    c.log_every_steps = 500
    c.checkpoint_every_steps = 5000
    return c
