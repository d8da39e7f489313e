"""The ImageNet-style recipe (no ImageNet here): fused JPEG decode+crop on real JPEG bytes."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cnn_arch.data import preprocess


def _jpeg(h=300, w=400):
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(128, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    return tf.io.encode_jpeg(image, quality=95), image


def test_recipe_choice():
    cifar = preprocess.recipe_for("cifar10", (32, 32, 3), "default", 224, jpeg=False)
    assert (cifar.train_augment, cifar.image_size) == ("cifar", None)
    digits = preprocess.recipe_for("mnist", (28, 28, 1), "default", 224, jpeg=False)
    assert digits.train_augment == "none"
    imagenet = preprocess.recipe_for("imagenet2012", (None, None, 3), "default", 224, jpeg=True)
    assert (imagenet.train_augment, imagenet.image_size, imagenet.fused_jpeg) == (
        "inception",
        224,
        True,
    )
    plain = preprocess.recipe_for("imagenet2012", (None, None, 3), "none", 224, jpeg=True)
    assert plain.train_augment == "center"


def test_fused_inception_crop_is_seeded_and_sized():
    data, _ = _jpeg()
    recipe = preprocess.recipe_for("imagenet2012", (None, None, 3), "default", 224, jpeg=True)
    fn = preprocess.train_map(recipe)
    a = fn(data, tf.constant([1, 2], tf.int64)).numpy()
    b = fn(data, tf.constant([1, 2], tf.int64)).numpy()
    c = fn(data, tf.constant([1, 3], tf.int64)).numpy()
    assert a.shape == (224, 224, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)  # same seed, same crop: resumable
    assert not np.array_equal(a, c)


def test_fused_center_crop_equals_decode_then_crop():
    data, _ = _jpeg()
    fused = preprocess.recipe_for("imagenet2012", (None, None, 3), "default", 224, jpeg=True)
    decoded = preprocess.Recipe("inception", 224, fused.mean, fused.std, fused_jpeg=False)
    a = preprocess.eval_map(fused)(data).numpy()
    b = preprocess.eval_map(decoded)(tf.io.decode_jpeg(data, channels=3)).numpy()
    assert a.shape == (224, 224, 3)
    np.testing.assert_allclose(a, b, atol=0.05)  # JPEG decode of a crop vs crop of a decode


def test_cifar_crop_keeps_size_and_flips_deterministically():
    image = tf.constant(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3))
    recipe = preprocess.recipe_for("cifar10", (32, 32, 3), "default", 224, jpeg=False)
    fn = preprocess.train_map(recipe)
    outs = [fn(image, tf.constant([0, i], tf.int64)).numpy() for i in range(8)]
    assert all(o.shape == (32, 32, 3) for o in outs)
    assert len({o.tobytes() for o in outs}) > 1
    np.testing.assert_array_equal(outs[0], fn(image, tf.constant([0, 0], tf.int64)).numpy())
