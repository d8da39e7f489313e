"""Preprocessing ops of the pp spec (``pp.py``): each a factory of vectorized tf functions.

An op is registered under its name with a kind:

- ``geometric``: moves pixels; applied to the image and, for segmentation, to the
  class map ``mask`` with the same random draw (nearest-neighbour for the mask).
- ``photometric``: changes pixel values only; the mask is left alone.
- ``normalize``: the standardization that ends every spec.
- ``batch``: mixes examples of a batch (mixup, cutmix) and makes soft labels.

A factory takes ``ctx`` (what the dataset says: statistics, channels, classes) and the
user's arguments, checks them (ValueError with the reason) and returns
``fn(example, seed) -> example`` (per example) or ``fn(batch, seed) -> batch``. Every
random choice is a stateless tf.random op of ``seed``, which the pipeline derives from
(seed, epoch, example position): the same position always gets the same image.

Images flow as uint8 or float32 on the 0-255 scale; photometric ops clip to [0, 255];
``normalize`` gives the float32 the model sees. An example may start as undecoded
JPEG bytes: ops marked ``jpeg`` crop before decoding (only the crop is decoded), every
other op decodes first.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from collections.abc import Callable
from typing import Literal

import tensorflow as tf

Example = dict  # 'image': (H, W, C) or scalar JPEG bytes; 'mask': (H, W, 1) int32 (optional)
ExampleFn = Callable[[Example, tf.Tensor], Example]

# AlexNet's PCA colour augmentation (Krizhevsky et al. 2012, Sec. 4.1) needs the
# eigen-decomposition of the 3x3 covariance of ImageNet RGB pixels; the paper does not
# print it. These are the values computed by Facebook's fb.resnet.torch
# (datasets/imagenet.lua, "computed from random subset of ImageNet training images",
# pixels on the [0, 1] scale), which torchvision's references, timm and GluonCV reuse.
# Columns of IMAGENET_EIGVEC are the eigenvectors, rows are R, G, B.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # ITU-R 601 luma, as tf.image.rgb_to_grayscale


@dataclasses.dataclass(frozen=True)
class Context:
    """What an op may need to know about the dataset."""

    mean: tuple[float, ...]  # per-channel mean of the training split, 0-255 scale
    std: tuple[float, ...]
    channels: int
    num_classes: int


@dataclasses.dataclass(frozen=True)
class OpDef:
    name: str
    factory: Callable
    kind: str  # geometric | photometric | normalize | batch
    random: bool
    jpeg: bool  # accepts undecoded JPEG bytes (fused decode + crop)

    @property
    def doc(self) -> str:
        """The first paragraph of the factory's docstring, on one line."""
        return " ".join(inspect.getdoc(self.factory).split("\n\n")[0].split())

    @property
    def parameters(self) -> list[inspect.Parameter]:
        """The user's parameters (the factory's, without ``ctx``)."""
        return list(inspect.signature(self.factory).parameters.values())[1:]

    @property
    def hints(self) -> dict:
        """Resolved type annotations of the parameters."""
        hints = typing.get_type_hints(self.factory)
        return {p.name: hints[p.name] for p in self.parameters}


OPS: dict[str, OpDef] = {}


def _register(kind: str, *, random: bool = True, jpeg: bool = False):
    def decorate(factory):
        OPS[factory.__name__] = OpDef(factory.__name__, factory, kind, random, jpeg)
        return factory

    return decorate


# ----------------------------------------------------------------------------- helpers


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_prob(prob: float) -> None:
    _check(0.0 <= prob <= 1.0, f"prob={prob} must be in [0, 1]")


def _check_range(name: str, pair, lo: float, hi: float = math.inf) -> None:
    a, b = pair
    _check(lo <= a <= b <= hi, f"{name}={tuple(pair)} must satisfy {lo} <= low <= high <= {hi}")


def _decoded(ex: Example, channels: int) -> Example:
    """Decodes JPEG bytes (if the example still holds them)."""
    if ex["image"].dtype != tf.string:
        return ex
    image = tf.io.decode_jpeg(ex["image"], channels=channels)
    return {**ex, "image": image}


def _float(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(image, tf.float32)


def _uniform(seed, low=0.0, high=1.0, shape=()):
    return tf.random.stateless_uniform(shape, seed, low, high)


def _seeds(seed, n: int):
    return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _static_hw(image: tf.Tensor) -> tuple[int | None, int | None]:
    return image.shape[0], image.shape[1]


def _hw(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    shape = tf.shape(image)
    return shape[0], shape[1]


def _both(ex: Example, image_fn, mask_fn=None) -> Example:
    """Applies a geometric change to the image and (the same change) to the mask."""
    out = {**ex, "image": image_fn(ex["image"])}
    if "mask" in ex:
        out["mask"] = (mask_fn or image_fn)(ex["mask"])
    return out


def _photometric(ex: Example, fn) -> Example:
    """Applies ``fn`` to the float image and clips to [0, 255]; the mask stays."""
    return {**ex, "image": tf.clip_by_value(fn(_float(ex["image"])), 0.0, 255.0)}


def _gray(image: tf.Tensor) -> tf.Tensor:
    """(H, W, 1) luma of an RGB float image (the image itself when it has one channel)."""
    if image.shape[-1] == 1:
        return image
    return tf.reduce_sum(image * tf.constant(GRAY_WEIGHTS), axis=-1, keepdims=True)


def _blend(image, other, factor):
    """other + factor * (image - other): factor 0 gives ``other``, 1 the image (PIL's)."""
    return other + factor * (image - other)


def _need_rgb(ctx: Context, what: str) -> None:
    _check(ctx.channels == 3, f"{what} needs RGB images; this dataset has {ctx.channels} channel")


def _crop_offsets(seed, full_hw, crop_hw):
    """(y, x) of a uniformly random crop, drawn exactly as tf.image.stateless_random_crop
    draws it for an (H, W, C) image, so the default CIFAR recipe stays bitwise the same."""
    limit = tf.stack([full_hw[0] - crop_hw[0] + 1, full_hw[1] - crop_hw[1] + 1, 1])
    draw = tf.random.stateless_uniform([3], seed, maxval=tf.int32.max, dtype=tf.int32)
    offset = draw % limit
    return offset[0], offset[1]


# ------------------------------------------------------------------- projective warps


def _translation(tx, ty):
    return tf.stack([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _around_center(image, matrix):
    """``matrix`` applied about the image centre (pixel centres at integer coordinates)."""
    h, w = _hw(image)
    cx, cy = (_float(w) - 1.0) / 2.0, (_float(h) - 1.0) / 2.0
    return _translation(cx, cy) @ matrix @ _translation(-cx, -cy)


def _affine_matrix(angle=0.0, shear_x=0.0, shear_y=0.0, scale=1.0, tx=0.0, ty=0.0):
    """Forward map (input -> output): translate . rotate . shear . scale; angles in rad."""
    zero, one = tf.constant(0.0), tf.constant(1.0)
    angle, shear_x, shear_y, scale = (
        tf.cast(v, tf.float32) for v in (angle, shear_x, shear_y, scale)
    )
    cos, sin = tf.cos(angle), tf.sin(angle)
    rotate = tf.stack([[cos, -sin, zero], [sin, cos, zero], [zero, zero, one]])
    shear = tf.stack([[one, shear_x, zero], [shear_y, one, zero], [zero, zero, one]])
    zoom = tf.stack([[scale, zero, zero], [zero, scale, zero], [zero, zero, one]])
    return _translation(tf.cast(tx, tf.float32), tf.cast(ty, tf.float32)) @ rotate @ shear @ zoom


def _inverse_transform(forward):
    """The 8 numbers ImageProjectiveTransformV3 wants: the output -> input map."""
    inverse = tf.linalg.inv(forward)
    inverse = inverse / inverse[2, 2]
    return tf.reshape(inverse, [9])[:8]


def _warp(ex: Example, transform, fill: float = 0.0) -> Example:
    """Resamples image (bilinear) and mask (nearest) through ``transform`` (output ->
    input, 8 numbers); pixels from outside are ``fill`` (image) and 0 (mask)."""

    def apply(image, interpolation, fill_value):
        out = tf.raw_ops.ImageProjectiveTransformV3(
            images=image[None],
            transforms=transform[None],
            output_shape=tf.shape(image)[:2],
            fill_value=fill_value,
            interpolation=interpolation,
            fill_mode="CONSTANT",
        )[0]
        out.set_shape(image.shape)
        return out

    out = {**ex, "image": apply(_float(ex["image"]), "BILINEAR", fill)}
    if "mask" in ex:
        out["mask"] = apply(ex["mask"], "NEAREST", 0.0)
    return out


def _warp_affine(ex: Example, matrix, fill: float = 0.0) -> Example:
    return _warp(ex, _inverse_transform(_around_center(ex["image"], matrix)), fill)


def _homography(src, dst):
    """8 numbers h with dst ~ H src for 4 point pairs ((4, 2) float tensors)."""
    src, dst = tf.cast(src, tf.float64), tf.cast(dst, tf.float64)
    x, y = src[:, 0], src[:, 1]
    u, v = dst[:, 0], dst[:, 1]
    zeros, ones = tf.zeros_like(x), tf.ones_like(x)
    rows_u = tf.stack([x, y, ones, zeros, zeros, zeros, -x * u, -y * u], axis=1)
    rows_v = tf.stack([zeros, zeros, zeros, x, y, ones, -x * v, -y * v], axis=1)
    a = tf.concat([rows_u, rows_v], axis=0)
    b = tf.concat([u, v], axis=0)[:, None]
    return tf.cast(tf.linalg.solve(a, b)[:, 0], tf.float32)


# ------------------------------------------------------------------------------- flips


def _flip(ctx: Context, axis: int, prob: float) -> ExampleFn:
    _check_prob(prob)

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        # Same draw as tf.image.stateless_random_flip_*: uniform in [0, 1) < 0.5 flips.
        do_flip = _uniform(seed) < prob
        return _both(ex, lambda t: tf.cond(do_flip, lambda: tf.reverse(t, [axis]), lambda: t))

    return fn


@_register("geometric")
def flip_lr(ctx: Context, prob: float = 0.5) -> ExampleFn:
    """Mirror left-right with probability ``prob``."""
    return _flip(ctx, 1, prob)


@_register("geometric")
def flip_ud(ctx: Context, prob: float = 0.5) -> ExampleFn:
    """Mirror top-bottom with probability ``prob``."""
    return _flip(ctx, 0, prob)


# ------------------------------------------------------------------------------- crops


def _random_crop_fn(ctx: Context, size: tuple[int, int], pad: int, mode: str) -> ExampleFn:
    """Pads by ``pad`` (if > 0), then crops ``size`` at a random place."""

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        if pad:
            tf_mode = mode.upper()
            padding = [[pad, pad], [pad, pad], [0, 0]]
            ex = _both(ex, lambda t: tf.pad(t, padding, mode=tf_mode))
        image = ex["image"]
        sh, sw = _static_hw(image)
        ch, cw = size
        if sh is not None and sw is not None:
            _check(ch <= sh and cw <= sw, f"crop {ch}x{cw} is larger than the image {sh}x{sw}")
        y, x = _crop_offsets(seed, _hw(image), (ch, cw))
        return _both(ex, lambda t: tf.slice(t, [y, x, 0], [ch, cw, tf.shape(t)[2]]))

    return fn


@_register("geometric")
def pad_crop(
    ctx: Context, pad: int = 4, mode: Literal["constant", "reflect", "symmetric"] = "constant"
) -> ExampleFn:
    """Pad ``pad`` pixels on every side, then crop the original size at a random place
    (the CIFAR recipe of He et al. 2016, Sec. 4.2; zero padding by default)."""
    _check(pad >= 1, f"pad={pad} must be >= 1")

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        h, w = _static_hw(ex["image"])
        _check(h is not None and w is not None, "needs fixed-size images (crop first)")
        return _random_crop_fn(ctx, (h, w), pad, mode)(ex, seed)

    return fn


@_register("geometric")
def random_crop(ctx: Context, size: int | tuple[int, int]) -> ExampleFn:
    """Crop ``size`` (side, or (height, width)) at a uniformly random place."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    _check(min(hw) >= 1, f"size={size} must be >= 1")
    return _random_crop_fn(ctx, hw, 0, "constant")


def _resize(ex: Example, hw, method: str, antialias: bool = False) -> Example:
    def image_fn(t):
        return tf.image.resize(t, hw, method=method, antialias=antialias)

    def mask_fn(t):
        return tf.image.resize(t, hw, method="nearest")

    return _both(ex, image_fn, mask_fn)


def _crop_box(ex: Example, y, x, h, w, channels: int) -> Example:
    """Crops a box, decoding only the box when the image is still JPEG bytes."""
    if ex["image"].dtype == tf.string:
        window = tf.stack([y, x, h, w])
        image = tf.image.decode_and_crop_jpeg(ex["image"], window, channels=channels)
        out = {**ex, "image": image}
        if "mask" in ex:
            out["mask"] = tf.image.crop_to_bounding_box(ex["mask"], y, x, h, w)
        return out
    return _both(ex, lambda t: tf.image.crop_to_bounding_box(t, y, x, h, w))


def _shape_of(ex: Example):
    if ex["image"].dtype == tf.string:
        return tf.image.extract_jpeg_shape(ex["image"])
    return tf.shape(ex["image"])


RESIZE_METHODS = ("bilinear", "bicubic", "nearest", "area", "lanczos3", "mitchellcubic")


def _check_method(method: str) -> None:
    _check(
        method in RESIZE_METHODS, f"method={method!r} must be one of {', '.join(RESIZE_METHODS)}"
    )


@_register("geometric", jpeg=True)
def random_resized_crop(
    ctx: Context,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    min_covered: float = 0.1,
    method: str = "bicubic",
) -> ExampleFn:
    """Inception crop (Szegedy et al. 2015, Sec. 6): a random box with area fraction in
    ``scale`` and aspect ratio in ``ratio`` covering at least ``min_covered`` of the
    image (10 tries, else the whole image), resized to size x size. On JPEG bytes only
    the box is decoded. Defaults are the Flax ImageNet example's."""
    _check(size >= 1, f"size={size} must be >= 1")
    _check_range("scale", scale, 0.0, 1.0)
    _check(scale[1] > 0, f"scale={scale} must allow a non-empty crop")
    _check_range("ratio", ratio, 1e-6)
    _check(0.0 <= min_covered <= 1.0, f"min_covered={min_covered} must be in [0, 1]")
    _check_method(method)

    def fn(ex, seed):
        begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
            _shape_of(ex),
            bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
            seed=seed,
            min_object_covered=min_covered,
            aspect_ratio_range=tuple(ratio),
            area_range=tuple(scale),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        y, x, _ = tf.unstack(begin)
        h, w, _ = tf.unstack(crop_size)
        ex = _crop_box(ex, y, x, h, w, ctx.channels)
        return _resize(ex, (size, size), method)

    return fn


@_register("geometric", random=False, jpeg=True)
def center_crop(
    ctx: Context, size: int, crop_padding: int = 32, method: str = "bicubic"
) -> ExampleFn:
    """Central square of side size / (size + crop_padding) of the shorter edge, resized
    to size x size: 224/256 = 0.875 as in the Flax ImageNet example's eval; with
    crop_padding=0 the whole shorter edge. On JPEG bytes only the square is decoded."""
    _check(size >= 1, f"size={size} must be >= 1")
    _check(crop_padding >= 0, f"crop_padding={crop_padding} must be >= 0")
    _check_method(method)
    fraction = size / (size + crop_padding)

    def fn(ex, seed):
        del seed
        shape = _shape_of(ex)
        h, w = shape[0], shape[1]
        side = tf.cast(fraction * tf.cast(tf.minimum(h, w), tf.float32), tf.int32)
        y, x = (h - side + 1) // 2, (w - side + 1) // 2
        ex = _crop_box(ex, y, x, side, side, ctx.channels)
        return _resize(ex, (size, size), method)

    return fn


@_register("geometric", random=False)
def resize(
    ctx: Context,
    size: int | tuple[int, int],
    method: str = "bilinear",
    antialias: bool = False,
) -> ExampleFn:
    """Resize to size x size (or (height, width)); the mask by nearest neighbour."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    _check(min(hw) >= 1, f"size={size} must be >= 1")
    _check_method(method)

    def fn(ex, seed):
        del seed
        return _resize(_decoded(ex, ctx.channels), hw, method, antialias)

    return fn


# ---------------------------------------------------------------------- affine family


@_register("geometric")
def rotate(ctx: Context, degrees: float = 15.0, fill: float = 0.0) -> ExampleFn:
    """Rotate about the centre by an angle uniform in [-degrees, degrees]."""
    _check(0 <= degrees <= 180, f"degrees={degrees} must be in [0, 180]")

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        angle = _uniform(seed, -degrees, degrees) * (math.pi / 180)
        return _warp_affine(ex, _affine_matrix(angle=angle), fill)

    return fn


@_register("geometric")
def translate(ctx: Context, fraction: float = 0.1, fill: float = 0.0) -> ExampleFn:
    """Shift by up to ``fraction`` of the width and of the height (uniform, each axis)."""
    _check(0 <= fraction <= 1, f"fraction={fraction} must be in [0, 1]")

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        h, w = _hw(ex["image"])
        shift = _uniform(seed, -fraction, fraction, shape=[2])
        matrix = _affine_matrix(tx=shift[0] * _float(w), ty=shift[1] * _float(h))
        return _warp_affine(ex, matrix, fill)

    return fn


@_register("geometric")
def zoom(ctx: Context, scale: tuple[float, float] = (0.8, 1.2), fill: float = 0.0) -> ExampleFn:
    """Scale about the centre by a factor uniform in ``scale`` (> 1 zooms in)."""
    _check_range("scale", scale, 1e-3)

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        return _warp_affine(ex, _affine_matrix(scale=_uniform(seed, *scale)), fill)

    return fn


@_register("geometric")
def shear(ctx: Context, degrees: float = 10.0, fill: float = 0.0) -> ExampleFn:
    """Shear along x and along y, each by an angle uniform in [-degrees, degrees]."""
    _check(0 <= degrees < 90, f"degrees={degrees} must be in [0, 90)")

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        angles = _uniform(seed, -degrees, degrees, shape=[2]) * (math.pi / 180)
        matrix = _affine_matrix(shear_x=tf.tan(angles[0]), shear_y=tf.tan(angles[1]))
        return _warp_affine(ex, matrix, fill)

    return fn


@_register("geometric")
def affine(
    ctx: Context,
    degrees: float = 15.0,
    translate: float = 0.1,
    scale: tuple[float, float] = (0.9, 1.1),
    shear: float = 10.0,
    fill: float = 0.0,
) -> ExampleFn:
    """One random affine map (torchvision's RandomAffine): rotation in [-degrees,
    degrees], shift up to ``translate`` of the size, scale in ``scale``, x-shear in
    [-shear, shear] degrees; one resampling for all."""
    _check(0 <= degrees <= 180, f"degrees={degrees} must be in [0, 180]")
    _check(0 <= translate <= 1, f"translate={translate} must be in [0, 1]")
    _check_range("scale", scale, 1e-3)
    _check(0 <= shear < 90, f"shear={shear} must be in [0, 90)")

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        h, w = _hw(ex["image"])
        s = _seeds(seed, 4)
        shift = _uniform(s[1], -translate, translate, shape=[2])
        matrix = _affine_matrix(
            angle=_uniform(s[0], -degrees, degrees) * (math.pi / 180),
            shear_x=tf.tan(_uniform(s[3], -shear, shear) * (math.pi / 180)),
            scale=_uniform(s[2], *scale),
            tx=shift[0] * _float(w),
            ty=shift[1] * _float(h),
        )
        return _warp_affine(ex, matrix, fill)

    return fn


@_register("geometric")
def perspective(
    ctx: Context, distortion: float = 0.5, prob: float = 0.5, fill: float = 0.0
) -> ExampleFn:
    """With probability ``prob``, move each corner inwards by up to ``distortion`` of
    half the width/height and warp the image so the corners land there
    (torchvision's RandomPerspective)."""
    _check(0 <= distortion <= 1, f"distortion={distortion} must be in [0, 1]")
    _check_prob(prob)

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        h, w = _hw(ex["image"])
        w1, h1 = _float(w) - 1.0, _float(h) - 1.0
        s = _seeds(seed, 2)
        d = _uniform(s[0], 0.0, distortion, shape=[4, 2]) * tf.stack([w1, h1]) / 2.0
        corners = tf.stack([[0.0, 0.0], [w1, 0.0], [w1, h1], [0.0, h1]])
        inward = tf.constant([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
        moved = corners + inward * d
        apply = _uniform(s[1]) < prob
        # ImageProjectiveTransform maps output points to input points: moved -> corners.
        transform = _homography(moved, corners)
        identity = tf.constant([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
        return _warp(ex, tf.where(apply, transform, identity), fill)

    return fn


# --------------------------------------------------------------------------- colour


def _factor(seed, amount: float):
    """A multiplicative factor uniform in [max(0, 1 - amount), 1 + amount]."""
    return _uniform(seed, max(0.0, 1.0 - amount), 1.0 + amount)


def _brightness(image, factor):
    return image * factor


def _contrast(image, factor):
    return _blend(image, tf.reduce_mean(_gray(image)), factor)


def _saturation(image, factor):
    return _blend(image, _gray(image), factor)


def _hue(image, delta):
    return tf.image.adjust_hue(image / 255.0, delta) * 255.0


@_register("photometric")
def brightness(ctx: Context, amount: float = 0.4) -> ExampleFn:
    """Multiply by a factor uniform in [1 - amount, 1 + amount] (torchvision's)."""
    _check(amount >= 0, f"amount={amount} must be >= 0")

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        return _photometric(ex, lambda t: _brightness(t, _factor(seed, amount)))

    return fn


@_register("photometric")
def contrast(ctx: Context, amount: float = 0.4) -> ExampleFn:
    """Blend with the image's mean grey by a factor uniform in [1 - amount, 1 + amount]."""
    _check(amount >= 0, f"amount={amount} must be >= 0")

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        return _photometric(ex, lambda t: _contrast(t, _factor(seed, amount)))

    return fn


@_register("photometric")
def saturation(ctx: Context, amount: float = 0.4) -> ExampleFn:
    """Blend with the grey image by a factor uniform in [1 - amount, 1 + amount]."""
    _check(amount >= 0, f"amount={amount} must be >= 0")
    _need_rgb(ctx, "saturation")

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        return _photometric(ex, lambda t: _saturation(t, _factor(seed, amount)))

    return fn


@_register("photometric")
def hue(ctx: Context, delta: float = 0.1) -> ExampleFn:
    """Rotate the hue by a fraction of the colour circle uniform in [-delta, delta]."""
    _check(0 <= delta <= 0.5, f"delta={delta} must be in [0, 0.5]")
    _need_rgb(ctx, "hue")

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        return _photometric(ex, lambda t: _hue(t, _uniform(seed, -delta, delta)))

    return fn


@_register("photometric")
def color_jitter(
    ctx: Context,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.0,
) -> ExampleFn:
    """brightness, contrast, saturation and hue changes as the ops of those names, in a
    random order per image (torchvision's ColorJitter; fb.resnet.torch's ImageNet
    recipe uses 0.4, 0.4, 0.4)."""
    for name, value in (
        ("brightness", brightness),
        ("contrast", contrast),
        ("saturation", saturation),
    ):
        _check(value >= 0, f"{name}={value} must be >= 0")
    _check(0 <= hue <= 0.5, f"hue={hue} must be in [0, 0.5]")
    if saturation or hue:
        _need_rgb(ctx, "color_jitter with saturation or hue")

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        s = _seeds(seed, 5)
        changes = [
            lambda t: _brightness(t, _factor(s[1], brightness)),
            lambda t: _contrast(t, _factor(s[2], contrast)),
            lambda t: _saturation(t, _factor(s[3], saturation)) if saturation else t,
            lambda t: _hue(t, _uniform(s[4], -hue, hue)) if hue else t,
        ]
        order = tf.argsort(_uniform(s[0], shape=[4]))
        image = _float(ex["image"])
        for position in range(4):
            branches = [lambda c=c, t=image: tf.clip_by_value(c(t), 0.0, 255.0) for c in changes]
            image = tf.switch_case(order[position], branches)
            image.set_shape(ex["image"].shape)
        return {**ex, "image": image}

    return fn


@_register("photometric")
def grayscale(ctx: Context, prob: float = 0.1) -> ExampleFn:
    """With probability ``prob``, replace RGB by its grey value (kept 3 channels)."""
    _check_prob(prob)
    _need_rgb(ctx, "grayscale")

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        do = _uniform(seed) < prob
        return _photometric(ex, lambda t: tf.where(do, tf.broadcast_to(_gray(t), tf.shape(t)), t))

    return fn


@_register("photometric")
def gaussian_noise(ctx: Context, std: float = 0.05) -> ExampleFn:
    """Add N(0, (std * 255)^2) to every pixel and channel."""
    _check(std >= 0, f"std={std} must be >= 0")

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        image = ex["image"]
        return _photometric(
            ex,
            lambda t: t + 255.0 * std * tf.random.stateless_normal(tf.shape(image), seed),
        )

    return fn


def _depthwise(image, kernel_2d):
    """Convolves every channel of an (H, W, C) float image with an (kh, kw) kernel,
    reflecting at the borders (output keeps the size)."""
    kh, kw = kernel_2d.shape
    channels = image.shape[-1]
    padded = tf.pad(image, [[kh // 2, kh // 2], [kw // 2, kw // 2], [0, 0]], mode="REFLECT")
    kernel = tf.tile(kernel_2d[:, :, None, None], [1, 1, channels, 1])
    return tf.nn.depthwise_conv2d(padded[None], kernel, [1, 1, 1, 1], "VALID")[0]


@_register("photometric")
def gaussian_blur(
    ctx: Context, kernel_size: int = 5, sigma: tuple[float, float] = (0.1, 2.0)
) -> ExampleFn:
    """Blur with a kernel_size x kernel_size Gaussian of sigma uniform in ``sigma``
    (pixels; torchvision's GaussianBlur), as two 1-D passes."""
    _check(kernel_size >= 3 and kernel_size % 2 == 1, f"kernel_size={kernel_size} must be odd >= 3")
    _check_range("sigma", sigma, 1e-3)

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        h, w = _static_hw(ex["image"])
        if h is not None and w is not None:
            _check(
                kernel_size // 2 < min(h, w), f"kernel_size={kernel_size} is too big for {h}x{w}"
            )
        s = _uniform(seed, *sigma)
        r = tf.range(kernel_size, dtype=tf.float32) - (kernel_size // 2)
        k = tf.exp(-(r**2) / (2.0 * s**2))
        k = k / tf.reduce_sum(k)

        def blur(t):
            t = _depthwise(t, tf.reshape(k, [kernel_size, 1]))
            return _depthwise(t, tf.reshape(k, [1, kernel_size]))

        return _photometric(ex, blur)

    return fn


@_register("photometric")
def pca_lighting(ctx: Context, alphastd: float = 0.1) -> ExampleFn:
    """AlexNet's colour augmentation (Krizhevsky et al. 2012, Sec. 4.1): add
    V (alpha * lambda) to every RGB pixel, alpha ~ N(0, alphastd^2) per image, with the
    eigenvalues lambda and eigenvectors V of ImageNet's RGB covariance (IMAGENET_EIGVAL
    and IMAGENET_EIGVEC, from fb.resnet.torch; 0-1 scale, times 255 here)."""
    _check(alphastd >= 0, f"alphastd={alphastd} must be >= 0")
    _need_rgb(ctx, "pca_lighting")
    eigvec = tf.constant(IMAGENET_EIGVEC)
    eigval = tf.constant(IMAGENET_EIGVAL)

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        alpha = alphastd * tf.random.stateless_normal([3], seed)
        shift = 255.0 * tf.linalg.matvec(eigvec, alpha * eigval)
        return _photometric(ex, lambda t: t + shift)

    return fn


# --------------------------------------------------------------------------- erasing


def _box_mask(hw, y0, x0, y1, x1):
    rows = tf.range(hw[0])[:, None]
    cols = tf.range(hw[1])[None, :]
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    return inside[:, :, None]


@_register("photometric")
def cutout(ctx: Context, size: int = 16, prob: float = 1.0) -> ExampleFn:
    """With probability ``prob``, fill a size x size square centred at a uniformly
    random pixel (cut at the border) with the dataset mean, i.e. 0 after normalize
    (DeVries & Taylor 2017, Sec. 3; 16 for CIFAR-10). The mask keeps its labels."""
    _check(size >= 1, f"size={size} must be >= 1")
    _check_prob(prob)
    mean = tf.constant(ctx.mean, tf.float32)

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        image = _float(ex["image"])
        h, w = _hw(image)
        s = _seeds(seed, 3)
        cy = tf.random.stateless_uniform([], s[0], 0, h, tf.int32)
        cx = tf.random.stateless_uniform([], s[1], 0, w, tf.int32)
        inside = _box_mask(
            (h, w), cy - size // 2, cx - size // 2, cy - size // 2 + size, cx - size // 2 + size
        )
        inside &= _uniform(s[2]) < prob
        return {**ex, "image": tf.where(inside, mean, image)}

    return fn


@_register("photometric")
def random_erasing(
    ctx: Context,
    prob: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    value: Literal["random", "mean"] = "random",
) -> ExampleFn:
    """Random Erasing (Zhong et al. 2020, Alg. 1): with probability ``prob``, a box of
    area fraction in ``scale`` and aspect ratio in ``ratio`` is filled with uniform
    random values (or the dataset mean); up to 10 tries to fit one inside."""
    _check_prob(prob)
    _check_range("scale", scale, 0.0, 1.0)
    _check_range("ratio", ratio, 1e-6)
    tries = 10
    mean = tf.constant(ctx.mean, tf.float32)

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        image = _float(ex["image"])
        h, w = _hw(image)
        hf, wf = _float(h), _float(w)
        s = _seeds(seed, 6)
        area = _uniform(s[0], *scale, shape=[tries]) * hf * wf
        aspect = _uniform(s[1], *ratio, shape=[tries])
        eh = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
        ew = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
        fits = (eh < h) & (ew < w) & (eh > 0) & (ew > 0)
        first = tf.argmax(tf.cast(fits, tf.int32))  # first try that fits (0 if none)
        eh, ew = eh[first], ew[first]
        y0 = tf.random.stateless_uniform([], s[2], 0, tf.maximum(h - eh, 1), tf.int32)
        x0 = tf.random.stateless_uniform([], s[3], 0, tf.maximum(w - ew, 1), tf.int32)
        inside = _box_mask((h, w), y0, x0, y0 + eh, x0 + ew)
        inside &= tf.reduce_any(fits) & (_uniform(s[4]) < prob)
        if value == "random":
            fill = tf.random.stateless_uniform(tf.shape(image), s[5], 0.0, 255.0)
        else:
            fill = mean
        return {**ex, "image": tf.where(inside, fill, image)}

    return fn


# ------------------------------------------------------------------------ RandAugment


def _autocontrast(image):
    lo = tf.reduce_min(image, axis=[0, 1])
    hi = tf.reduce_max(image, axis=[0, 1])
    scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1e-6), 1.0)
    offset = tf.where(hi > lo, lo, 0.0)
    return (image - offset) * scale


def _equalize(image):
    """Per-channel histogram equalization with PIL's lookup table (ImageOps.equalize)."""
    channels = image.shape[-1]
    values = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.int32)
    flat = tf.transpose(tf.reshape(values, [-1, channels]))  # (C, H*W)
    hist = tf.math.bincount(flat, minlength=256, maxlength=256, axis=-1)  # (C, 256)
    last = tf.gather(hist, tf.reduce_max(flat, axis=1), batch_dims=1)  # count of the top value
    step = (tf.reduce_sum(hist, axis=1) - last) // 255
    before = tf.cumsum(hist, axis=1, exclusive=True)
    safe_step = tf.maximum(step, 1)[:, None]
    lut = tf.minimum((before + safe_step // 2) // safe_step, 255)
    mapped = tf.gather(lut, flat, batch_dims=1)
    mapped = tf.where(step[:, None] > 0, mapped, flat)
    return tf.cast(tf.reshape(tf.transpose(mapped), tf.shape(image)), tf.float32)


def _sharpness(image, factor):
    """PIL's ImageEnhance.Sharpness: blend with a 3x3 smoothed copy (borders kept)."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    channels = image.shape[-1]
    smooth = tf.nn.depthwise_conv2d(
        image[None], tf.tile(kernel[:, :, None, None], [1, 1, channels, 1]), [1] * 4, "VALID"
    )[0]
    smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    border = tf.pad(tf.ones_like(smooth[1:-1, 1:-1, :1]), [[1, 1], [1, 1], [0, 0]]) < 0.5
    smooth = tf.where(border, image, smooth)
    return _blend(image, smooth, factor)


def _posterize(image, bits: int):
    step = float(2 ** (8 - bits))  # keep the top ``bits`` bits of each 8-bit value
    return tf.floor(tf.round(image) / step) * step


RANDAUGMENT_OPS = (
    "identity",
    "autocontrast",
    "equalize",
    "rotate",
    "solarize",
    "color",
    "posterize",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
RANDAUGMENT_FILL = 128.0  # grey fill of the reference TF implementation's geometric ops


@_register("photometric")
def randaugment(ctx: Context, num_ops: int = 2, magnitude: float = 9.0) -> ExampleFn:
    """RandAugment (Cubuk et al. 2020, Sec. 3): ``num_ops`` transforms drawn uniformly
    from 14 (identity, autocontrast, equalize, rotate, solarize, color, posterize,
    contrast, brightness, sharpness, shear_x/y, translate_x/y), each at ``magnitude``
    on the paper's scale where 10 is the strongest (values up to 30 extrapolate, as in
    its sweeps): rotate 30 deg, shear 0.3, translate 45% of the size, enhance factors
    1 +- 0.9, posterize to 4 bits, solarize at 0; signed ones get a random sign.
    Geometric transforms move the mask too."""
    _check(1 <= num_ops <= 10, f"num_ops={num_ops} must be in [1, 10]")
    _check(0 <= magnitude <= 30, f"magnitude={magnitude} must be in [0, 30]")
    level = magnitude / 10.0
    enhance = 0.9 * level
    bits = max(1, 8 - round(4 * level))
    threshold = max(0.0, 256.0 - 256.0 * level)

    def fn(ex, seed):
        ex = _decoded(ex, ctx.channels)
        ex = {**ex, "image": _float(ex["image"])}
        for layer_seed in _seeds(seed, num_ops):
            s = _seeds(layer_seed, 2)
            which = tf.random.stateless_uniform([], s[0], 0, len(RANDAUGMENT_OPS), tf.int32)
            sign = tf.where(_uniform(s[1]) < 0.5, -1.0, 1.0)
            ex = _randaugment_layer(ex, which, sign, level, enhance, bits, threshold)
        return ex

    return fn


def _randaugment_layer(ex, which, sign, level, enhance, bits, threshold):
    image = ex["image"]
    h, w = _hw(image)

    def photometric(change):
        def branch():
            return {**ex, "image": tf.clip_by_value(change(image), 0.0, 255.0)}

        return branch

    def geometric(matrix_fn):
        def branch():
            out = _warp_affine(ex, matrix_fn(), RANDAUGMENT_FILL)
            return {**out, "image": tf.clip_by_value(out["image"], 0.0, 255.0)}

        return branch

    factor = tf.maximum(1.0 + sign * enhance, 0.0)
    branches = {
        "identity": photometric(lambda t: t),
        "autocontrast": photometric(_autocontrast),
        "equalize": photometric(_equalize),
        "rotate": geometric(lambda: _affine_matrix(angle=sign * 30.0 * level * math.pi / 180)),
        "solarize": photometric(lambda t: tf.where(t >= threshold, 255.0 - t, t)),
        "color": photometric(lambda t: _saturation(t, factor)),
        "posterize": photometric(lambda t: _posterize(t, bits)),
        "contrast": photometric(lambda t: _contrast(t, factor)),
        "brightness": photometric(lambda t: _brightness(t, factor)),
        "sharpness": photometric(lambda t: _sharpness(t, factor)),
        "shear_x": geometric(lambda: _affine_matrix(shear_x=sign * 0.3 * level)),
        "shear_y": geometric(lambda: _affine_matrix(shear_y=sign * 0.3 * level)),
        "translate_x": geometric(lambda: _affine_matrix(tx=sign * 0.45 * level * _float(w))),
        "translate_y": geometric(lambda: _affine_matrix(ty=sign * 0.45 * level * _float(h))),
    }
    out = tf.switch_case(which, [branches[name] for name in RANDAUGMENT_OPS])
    out["image"].set_shape(image.shape)
    if "mask" in ex:
        out["mask"].set_shape(ex["mask"].shape)
    return out


# -------------------------------------------------------------------------- normalize


@_register("normalize", random=False)
def normalize(
    ctx: Context, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None
) -> ExampleFn:
    """(image - mean) / std per channel as float32; default: the dataset's training
    statistics (0-255 scale). Ends every spec (before mixup/cutmix)."""
    mean = tuple(ctx.mean) if mean is None else tuple(mean)
    std = tuple(ctx.std) if std is None else tuple(std)
    for name, values in (("mean", mean), ("std", std)):
        _check(
            len(values) in (1, ctx.channels), f"{name}={values} needs 1 or {ctx.channels} values"
        )
    _check(all(s > 0 for s in std), f"std={std} must be > 0")

    def fn(ex, seed):
        del seed
        ex = _decoded(ex, ctx.channels)
        # Elementwise, so the same on one image or a batch (the pipeline runs it batched).
        return {**ex, "image": (tf.cast(ex["image"], tf.float32) - mean) / std}

    return fn


# ---------------------------------------------------------------------- batch mixing


def _soft(label, num_classes: int):
    if label.dtype.is_integer:
        return tf.one_hot(label, num_classes, dtype=tf.float32)
    return label


def _beta(seed, alpha: float):
    a, b = _seeds(seed, 2)
    x = tf.random.stateless_gamma([], a, alpha)
    y = tf.random.stateless_gamma([], b, alpha)
    return x / (x + y)


def _partner(seed, batch_size):
    return tf.argsort(_uniform(seed, shape=[batch_size]))


@_register("batch")
def mixup(ctx: Context, alpha: float = 0.2, prob: float = 1.0) -> Callable:
    """mixup (Zhang et al. 2018, Sec. 2): with probability ``prob`` per batch, each
    image and its one-hot label become lam * own + (1 - lam) * a random partner's,
    lam ~ Beta(alpha, alpha), one lam per batch. Labels become float (B, classes)."""
    _check(alpha > 0, f"alpha={alpha} must be > 0")
    _check_prob(prob)

    def fn(batch, seed):
        s = _seeds(seed, 3)
        image, label = batch["image"], _soft(batch["label"], ctx.num_classes)
        lam = tf.where(_uniform(s[2]) < prob, _beta(s[0], alpha), 1.0)
        partner = _partner(s[1], tf.shape(image)[0])
        image = lam * image + (1.0 - lam) * tf.gather(image, partner)
        label = lam * label + (1.0 - lam) * tf.gather(label, partner)
        return {**batch, "image": image, "label": label}

    return fn


@_register("batch")
def cutmix(ctx: Context, alpha: float = 1.0, prob: float = 1.0) -> Callable:
    """CutMix (Yun et al. 2019, Sec. 3.1): with probability ``prob`` per batch, a box
    of area fraction 1 - lam (lam ~ Beta(alpha, alpha)) at a random centre is pasted from
    a random partner; labels mix by the box's true area. Labels become float."""
    _check(alpha > 0, f"alpha={alpha} must be > 0")
    _check_prob(prob)

    def fn(batch, seed):
        s = _seeds(seed, 5)
        image, label = batch["image"], _soft(batch["label"], ctx.num_classes)
        shape = tf.shape(image)
        h, w = shape[1], shape[2]
        cut = tf.sqrt(1.0 - _beta(s[0], alpha))
        ch = tf.cast(cut * _float(h), tf.int32)
        cw = tf.cast(cut * _float(w), tf.int32)
        cy = tf.random.stateless_uniform([], s[1], 0, h, tf.int32)
        cx = tf.random.stateless_uniform([], s[2], 0, w, tf.int32)
        y0, y1 = tf.clip_by_value(cy - ch // 2, 0, h), tf.clip_by_value(cy + ch // 2, 0, h)
        x0, x1 = tf.clip_by_value(cx - cw // 2, 0, w), tf.clip_by_value(cx + cw // 2, 0, w)
        inside = _box_mask((h, w), y0, x0, y1, x1) & (_uniform(s[4]) < prob)
        partner = _partner(s[3], shape[0])
        image = tf.where(inside[None], tf.gather(image, partner), image)
        lam = 1.0 - _float(tf.reduce_sum(tf.cast(inside, tf.int32))) / _float(h * w)
        label = lam * label + (1.0 - lam) * tf.gather(label, partner)
        return {**batch, "image": image, "label": label}

    return fn
