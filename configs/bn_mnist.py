"""Figure 1 of the BN paper (Ioffe & Szegedy 2015, Sec. 4.1): the MNIST MLP with and
without BN, evaluated every 500 steps.

    python -m cnn_arch.main --config=configs/bn_mnist.py:bn --workdir=runs/bn_mnist_bn
    python -m cnn_arch.main --config=configs/bn_mnist.py:baseline --workdir=runs/bn_mnist_base

``configs/mlp_mnist.py`` (3 hidden layers of 100 sigmoid units, Gaussian init, 50,000
steps of 60, plain SGD) plus two evaluators every 500 steps: ``eval`` (test accuracy,
Fig. 1a) and ``sigmoid`` (the {15, 50, 85}th percentiles of the input to the first
sigmoid of the last hidden layer on the 10,000 test images, Fig. 1b,c). That input is
the output of ``hidden3`` without BN and of ``hidden3_norm`` with BN before the sigmoid.
``experiments/bn_mnist.py`` trains both for several seeds and chooses the learning rate
with a sweep on a held-out part of the training set.
"""

import ml_collections

from configs import mlp_mnist

EVAL_EVERY_STEPS = 500
# The module whose output is the sigmoid's input in the last hidden layer.
SIGMOID_INPUT = {"baseline": "hidden3", "bn": "hidden3_norm"}


def get_config(network: str = "bn"):
    if network not in SIGMOID_INPUT:
        raise ValueError(f"network={network!r} is not known; choose one of {list(SIGMOID_INPUT)}")
    c = mlp_mnist.get_config()
    c.model_kwargs.norm = "batch" if network == "bn" else "none"
    c.log_every_steps = EVAL_EVERY_STEPS
    c.steps_per_eval = EVAL_EVERY_STEPS
    c.checkpoint_every_steps = c.num_train_steps  # only the end: the MLP retrains in minutes
    c.keep_checkpoints = 1
    c.evals = ml_collections.ConfigDict(
        {
            "eval": {"kind": "running"},
            "sigmoid": {
                "kind": "activations",
                "module": SIGMOID_INPUT[network],
                "unit": 0,
                "num_images": 10_000,
                "percentiles": [15, 50, 85],
            },
        }
    )
    return c
