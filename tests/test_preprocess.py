"""The default recipes, now pp specs, give bitwise the images the fixed recipes gave.

``_legacy_*`` below is the pre-spec code (cnn_arch/data/preprocess.py at 4cbd500), kept
here as the reference: the CIFAR crop+flip on real CIFAR-10 images, and the ImageNet
recipe (fused JPEG decode + Inception crop + flip, centre crop) on real JPEG bytes.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import small_config

from cnn_arch import data
from cnn_arch.data import pp, preprocess

CIFAR = preprocess.MEAN_STD["cifar10"]
IMAGENET = preprocess.MEAN_STD["imagenet2012"]


def _legacy_normalize(image, mean_std):
    return (tf.cast(image, tf.float32) - mean_std[0]) / mean_std[1]


def _legacy_pad_crop_flip(image, seed):
    h, w = image.shape[0], image.shape[1]
    image = tf.pad(image, [[4, 4], [4, 4], [0, 0]], mode="CONSTANT")
    seeds = tf.random.experimental.stateless_split(seed, 2)
    image = tf.image.stateless_random_crop(image, (h, w, image.shape[2]), seed=seeds[0])
    return tf.image.stateless_random_flip_left_right(image, seed=seeds[1])


def _legacy_inception_crop(image_or_bytes, size, seed, fused_jpeg):
    if fused_jpeg:
        shape = tf.image.extract_jpeg_shape(image_or_bytes)
    else:
        shape = tf.shape(image_or_bytes)
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


def _legacy_center_crop(image_or_bytes, size, fused_jpeg):
    if fused_jpeg:
        shape = tf.image.extract_jpeg_shape(image_or_bytes)
    else:
        shape = tf.shape(image_or_bytes)
    h, w = shape[0], shape[1]
    side = tf.cast(size / (size + 32) * tf.cast(tf.minimum(h, w), tf.float32), tf.int32)
    y, x = (h - side + 1) // 2, (w - side + 1) // 2
    if fused_jpeg:
        image = tf.image.decode_and_crop_jpeg(
            image_or_bytes, tf.stack([y, x, side, side]), channels=3
        )
    else:
        image = tf.image.crop_to_bounding_box(image_or_bytes, y, x, side, side)
    return tf.image.resize(image, (size, size), method="bicubic")


def _run_spec(text, image, seed, channels=3, dataset="imagenet2012"):
    """One image through a spec as the pipeline runs it (per example, then batched)."""
    spec = pp.parse(text, "train_pp", preprocess.context(dataset, channels, 10))
    ex = pp.example_fn(spec)({"image": image}, seed)
    return pp.normalize_fn(spec)(ex["image"]).numpy()


def test_default_specs_per_dataset_kind():
    assert preprocess.default_specs((32, 32, 3), "default", 224) == (
        "pad_crop(4)|flip_lr|normalize",
        "normalize",
    )
    assert preprocess.default_specs((28, 28, 1), "default", 224) == ("normalize", "normalize")
    assert preprocess.default_specs((None, None, 3), "default", 224) == (
        "random_resized_crop(224)|flip_lr|normalize",
        "center_crop(224)|normalize",
    )
    assert preprocess.default_specs((None, None, 3), "none", 160) == (
        "center_crop(160)|normalize",
        "center_crop(160)|normalize",
    )
    seg = preprocess.default_specs((28, 28, 1), "default", 224, task="segmentation")
    assert seg == ("normalize", "normalize")


def test_cifar_default_equals_legacy_on_real_images(shared_tfds):
    config = small_config(dataset="cifar10", data_dir=shared_tfds, eval_split="test[:16]")
    info = data.dataset_info(config)
    assert info.train_pp == "pad_crop(4)|flip_lr|normalize"
    builder = data.pipeline._builder(config)
    images = next(iter(builder.as_dataset(split="test[:16]", batch_size=16)))["image"]
    for i, image in enumerate(images):
        seed = tf.constant([3, i], tf.int64)
        legacy = _legacy_normalize(_legacy_pad_crop_flip(image, seed), CIFAR).numpy()
        np.testing.assert_array_equal(
            _run_spec(info.train_pp, image, seed, dataset="cifar10"), legacy
        )


@pytest.mark.parametrize("size", [224, 64])
def test_imagenet_defaults_equal_legacy_on_jpeg_bytes(size):
    rng = np.random.default_rng(0)
    train, evaluation = preprocess.default_specs((None, None, 3), "default", size)
    for h, w in [(300, 400), (500, 333), (64, 80)]:
        pixels = np.clip(rng.normal(128, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        jpeg = tf.io.encode_jpeg(pixels, quality=90)
        decoded = tf.io.decode_jpeg(jpeg, channels=3)
        for s in range(3):
            seed = tf.constant([7, s], tf.int64)
            for source, fused in ((jpeg, True), (decoded, False)):
                legacy = _legacy_normalize(
                    _legacy_inception_crop(source, size, seed, fused), IMAGENET
                ).numpy()
                np.testing.assert_array_equal(_run_spec(train, source, seed), legacy)
        for source, fused in ((jpeg, True), (decoded, False)):
            legacy = _legacy_normalize(_legacy_center_crop(source, size, fused), IMAGENET)
            np.testing.assert_array_equal(_run_spec(evaluation, source, None), legacy.numpy())


def test_fused_center_crop_close_to_decode_then_crop():
    rng = np.random.default_rng(1)
    pixels = np.clip(rng.normal(128, 40, (300, 400, 3)), 0, 255).astype(np.uint8)
    jpeg = tf.io.encode_jpeg(pixels, quality=95)
    fused = _run_spec("center_crop(224)|normalize", jpeg, None)
    decoded = _run_spec("center_crop(224)|normalize", tf.io.decode_jpeg(jpeg, channels=3), None)
    assert fused.shape == (224, 224, 3)
    np.testing.assert_allclose(fused, decoded, atol=0.05)  # JPEG decode of a crop vs crop
