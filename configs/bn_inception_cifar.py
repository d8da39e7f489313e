"""The networks of Sec. 4.2.2 of the BN paper (Ioffe & Szegedy 2015), scaled to CIFAR-10.

    python -m cnn_arch.main --config=configs/bn_inception_cifar.py:bn_x5 --workdir=runs/x5
    python -m cnn_arch.main --config=configs/bn_inception_cifar.py:bn_baseline+no_lrn ...
    python -m cnn_arch.main --config=configs/bn_inception_cifar.py:bn_x5-thorough_shuffle ...

BN-Inception with the 32x32 stem (``stem='cifar'``: modules at 16/8/4 instead of
28/14/7) and ``width`` x the table's channels; SGD with momentum 0.9 on mini-batches of
32 and the paper's learning rates (Sec. 4.2). Each Sec. 4.2.1 change is one switch of
``CHANGES``; a network is a norm, an activation and a set of switches (``NETWORKS``).
``VARIANT+change`` adds one switch, ``VARIANT-change`` removes one (the ablations).

| switch           | without it (the Inception recipe)         | with it (Sec. 4.2.1)            |
| lr_x5 / lr_x30   | learning rate 0.0015                      | x5 / x30                        |
| no_dropout       | dropout 0.4 before the classifier         | none                            |
| l2_div5          | weight decay 2e-4                         | 4e-5                            |
| decay_x6         | x0.96 every 8 epochs                      | every 8/6 epochs                |
| no_lrn           | GoogLeNet's LRN after conv1 and conv2     | none                            |
| thorough_shuffle | a 512-example shuffle buffer              | the whole training set          |
| less_distortion  | pad-4 crops, flips and colour jitter      | pad-4 crops and flips           |

The paper's Inception weight decay and decay period are not stated: we take GoogLeNet's
(``configs/bn_inception.py``). CIFAR-10's stored order is already mixed, so the
coarse-shuffle recipe is a milder handicap than on ImageNet's class-grouped shards; the
colour jitter stands in for the "photometric distortions" the paper does not specify.
Defaults are a full-length study for an accelerator (100 epochs, width 1);
``experiments/bn_inception_cifar.py`` runs it at the scale a CPU affords.
"""

import ml_collections

from configs import base

BASE_LEARNING_RATE = 0.0015  # Sec. 4.2, Inception and BN-Baseline
BASE_WEIGHT_DECAY = 2e-4  # GoogLeNet (BVLC); /5 with l2_div5
BASE_DECAY_EVERY_EPOCHS = 8.0  # GoogLeNet Sec. 6: 4% every 8 epochs; /6 with decay_x6
COARSE_SHUFFLE_BUFFER = 512
CIFAR_RECIPE = "pad_crop(4)|flip_lr|normalize"
DISTORTED_RECIPE = "pad_crop(4)|flip_lr|color_jitter(0.4, 0.4, 0.4, 0.1)|normalize"

CHANGES = (
    "lr_x5",
    "lr_x30",
    "no_dropout",
    "l2_div5",
    "decay_x6",
    "no_lrn",
    "thorough_shuffle",
    "less_distortion",
)
ACCELERATED = ("no_dropout", "l2_div5", "decay_x6", "no_lrn", "thorough_shuffle", "less_distortion")
# Sec. 4.2.2's networks, plus Inception with sigmoid ("never achieved better than chance").
NETWORKS = {
    "inception": dict(norm="none", activation="relu", changes=()),
    "bn_baseline": dict(norm="batch", activation="relu", changes=()),
    "bn_x5": dict(norm="batch", activation="relu", changes=("lr_x5", *ACCELERATED)),
    "bn_x30": dict(norm="batch", activation="relu", changes=("lr_x30", *ACCELERATED)),
    "bn_x5_sigmoid": dict(norm="batch", activation="sigmoid", changes=("lr_x5", *ACCELERATED)),
    "inception_sigmoid": dict(norm="none", activation="sigmoid", changes=()),
}


def parse(variant: str) -> tuple[str, tuple[str, ...]]:
    """'bn_x5-no_lrn' -> ('bn_x5', changes of bn_x5 without no_lrn); ValueError if unknown."""
    name, edits = variant, []
    for sign in "+-":
        if sign in name:
            name, change = name.split(sign, 1)
            edits.append((sign, change))
    if name not in NETWORKS:
        raise ValueError(f"network {name!r} is not known; choose one of {list(NETWORKS)}")
    changes = list(NETWORKS[name]["changes"])
    for sign, change in edits:
        if change not in CHANGES:
            raise ValueError(f"change {change!r} is not known; choose one of {list(CHANGES)}")
        if sign == "+" and change not in changes:
            changes.append(change)
        elif sign == "-" and change in changes:
            changes.remove(change)
        else:
            raise ValueError(
                f"{variant!r}: {name} already {'has' if sign == '+' else 'lacks'} {change}"
            )
    return name, tuple(changes)


def get_config(variant: str = "bn_x5", width: float = 1.0):
    name, changes = parse(variant)
    net = NETWORKS[name]
    c = base.get_config()
    c.model = "bn_inception"
    c.model_kwargs = ml_collections.ConfigDict(
        {
            "stem": "cifar",
            "width": width,
            "norm": net["norm"],
            "activation": net["activation"],
            "lrn": "no_lrn" not in changes,
            "dropout_rate": 0.0 if "no_dropout" in changes else 0.4,
        }
    )
    c.dataset = "cifar10"
    c.batch_size = 32  # Sec. 4.2
    c.num_epochs = 100
    c.optimizer = "sgd"
    c.momentum = 0.9
    multiplier = 30 if "lr_x30" in changes else 5 if "lr_x5" in changes else 1
    c.learning_rate = BASE_LEARNING_RATE * multiplier
    c.weight_decay = BASE_WEIGHT_DECAY / (5 if "l2_div5" in changes else 1)
    c.schedule = "exponential"
    c.lr_decay_factor = 0.96
    c.lr_decay_every_epochs = BASE_DECAY_EVERY_EPOCHS / (6 if "decay_x6" in changes else 1)
    c.shuffle_buffer = 50_000 if "thorough_shuffle" in changes else COARSE_SHUFFLE_BUFFER
    c.train_pp = CIFAR_RECIPE if "less_distortion" in changes else DISTORTED_RECIPE
    c.log_every_steps = 500
    c.checkpoint_every_steps = 5_000
    return c
