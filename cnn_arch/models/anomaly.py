"""The detectors' networks, registered in the zoo (``cnn_arch.models``) under their task.

- ``conv_autoencoder`` (task ``reconstruction``): conv encoder to a small dense code and a
  transposed-conv decoder back to the image; the residual is the explanation.
- ``conv_continuation`` (task ``continuation``): the same network seeing only the top
  half of the image (the bottom half zeroed), trained to produce the bottom half.
- ``deep_svdd`` (task ``one_class``): Ruff et al. 2018's LeNet-type network: no bias
  terms and batch norm without scale or shift (Sec. 3.3: a bias or an affine norm lets
  the network map everything onto the centre), the centre c a fixed mean of the
  initial network's outputs (Sec. 3.3, "an initial forward pass").
- ``transform_classifier`` (task ``transformations``): a small VGG-style CNN that sees every
  transformation of each image (``cnn_arch/anomaly/transforms.py``) and says which one it was.

Every network has ``features(x)`` (its code / penultimate features) for the kNN score.
The zoo passes ``num_classes`` to every model; only the classifiers of the detectors'
own transformations would use a count, and theirs comes from the transformation set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_arch.anomaly import transforms
from cnn_arch.models import layers, options
from cnn_arch.models.registry import register


def visible_top(x):
    """Zeroes the bottom half of (N, H, W, C) images: what the continuation model sees."""
    rows = jnp.arange(x.shape[1]) < x.shape[1] // 2
    return x * rows[None, :, None, None].astype(x.dtype)


class _Encoder(nn.Module):
    width: int
    latent: int
    norm: str
    activation: str
    dtype: Any

    @nn.compact
    def __call__(self, x, *, train: bool):
        norm = layers.make_norm(self.norm, train=train, dtype=self.dtype)
        act = layers.make_act(self.activation)
        use_bias = not layers.is_normalized(self.norm)
        conv = layers.make_conv(self.dtype, use_bias=use_bias, padding="SAME")
        for i, (w, s) in enumerate(((self.width, 1), (self.width, 2), (2 * self.width, 2))):
            x = act(norm(name=f"norm{i}")(conv(w, (3, 3), strides=(s, s), name=f"conv{i}")(x)))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.latent, dtype=self.dtype, name="code")(x)


class _Decoder(nn.Module):
    width: int
    norm: str
    activation: str
    dtype: Any

    @nn.compact
    def __call__(self, z, shape: tuple[int, int, int], *, train: bool):
        h, w, c = shape
        norm = layers.make_norm(self.norm, train=train, dtype=self.dtype)
        act = layers.make_act(self.activation)
        use_bias = not layers.is_normalized(self.norm)
        x = nn.Dense((h // 4) * (w // 4) * 2 * self.width, dtype=self.dtype, name="expand")(z)
        x = act(x).reshape((z.shape[0], h // 4, w // 4, 2 * self.width))
        for i, width in enumerate((self.width, self.width)):
            x = nn.ConvTranspose(
                width, (3, 3), strides=(2, 2), padding="SAME", use_bias=use_bias,
                dtype=self.dtype, name=f"up{i}",
            )(x)  # fmt: skip
            x = act(norm(name=f"norm{i}")(x))
        return nn.Conv(c, (3, 3), padding="SAME", dtype=self.dtype, name="out")(x)


class ConvAutoencoder(nn.Module):
    """Encoder (3 convs, two of stride 2, then a dense code) and decoder (dense, two
    stride-2 transposed convs, a conv to the input's channels). H and W must be
    multiples of 4 (MNIST's 28, CIFAR's 32)."""

    num_classes: int = 10  # unused (see the module docstring)
    width: int = 32
    latent: int = 32
    norm: str = "batch"
    activation: str = "relu"
    visible_rows: str = "all"  # 'top': the continuation model sees the top half only
    dtype: Any = jnp.float32

    CHOICES: ClassVar[dict[str, options.Choices]] = {"visible_rows": ("all", "top")}

    def setup(self):
        options.check_fields(self)
        self.encoder = _Encoder(self.width, self.latent, self.norm, self.activation, self.dtype)
        self.decoder = _Decoder(self.width, self.norm, self.activation, self.dtype)

    def _visible(self, x):
        x = x.astype(self.dtype)
        return visible_top(x) if self.visible_rows == "top" else x

    def __call__(self, x, *, train: bool):
        if x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError(f"{x.shape[1]}x{x.shape[2]} images: H and W must be multiples of 4")
        z = self.encoder(self._visible(x), train=train)
        return self.decoder(z, x.shape[1:], train=train).astype(jnp.float32)

    def features(self, x):
        return self.encoder(self._visible(x), train=False).astype(jnp.float32)


class DeepSVDD(nn.Module):
    """Ruff et al. 2018 Sec. 4.1's networks: per width a bias-free 5x5 conv, batch norm
    without scale/shift, the activation and 2x2 max pooling; then a bias-free dense
    layer to ``rep_dim``. Returns ``(z, c, ready)``: the representation, the centre
    (with |c_i| < ``center_eps`` pushed to +-eps, as the paper's code does, so a unit
    that is always zero cannot match the centre trivially) and 1.0 once the centre pass
    is done.

    The centre pass: while fewer than ``center_images`` images have been seen in training
    mode, c is the running mean of z over them and ``ready`` is 0 (the one-class task then
    has zero loss and gradient, so the parameters stay the initial ones: with SGD or
    Adam and no weight decay, a zero gradient is a zero update). c is kept in the
    ``batch_stats`` collection, so it is checkpointed with the network.
    """

    num_classes: int = 10  # unused (see the module docstring)
    widths: Sequence[int] = (8, 4)
    rep_dim: int = 32
    norm: str = "batch"
    activation: str = "relu"
    center_images: int = 5000
    center_eps: float = 0.1
    dtype: Any = jnp.float32

    CHOICES: ClassVar[dict[str, options.Choices]] = {"norm": ("batch", "none")}

    def setup(self):
        options.check_fields(self)
        self.embed = _SVDDEmbed(
            tuple(self.widths), self.rep_dim, self.norm, self.activation, self.dtype
        )
        self.center = self.variable(
            "batch_stats", "center", jnp.zeros, (self.rep_dim,), jnp.float32
        )
        self.seen = self.variable("batch_stats", "seen", jnp.zeros, (), jnp.float32)

    def __call__(self, x, *, train: bool):
        z = self.embed(x, train=train)
        center, seen = self.center, self.seen
        ready = (seen.value >= self.center_images).astype(jnp.float32)
        if train and not self.is_initializing():
            n, batch = seen.value, z.shape[0]
            mean = (center.value * n + jax.lax.stop_gradient(z).sum(0)) / (n + batch)
            center.value = jnp.where(ready > 0, center.value, mean)
            seen.value = n + batch
        c = center.value
        c = jnp.where(
            jnp.abs(c) < self.center_eps, jnp.where(c < 0, -1.0, 1.0) * self.center_eps, c
        )
        return z, c, ready

    def features(self, x):
        return self.embed(x, train=False)


class _SVDDEmbed(nn.Module):
    widths: Sequence[int]
    rep_dim: int
    norm: str
    activation: str
    dtype: Any

    @nn.compact
    def __call__(self, x, *, train: bool):
        # eps=1e-4 as in the paper's code; no scale/shift (see DeepSVDD).
        affine = {"use_scale": False, "use_bias": False} if self.norm == "batch" else {}
        norm = layers.make_norm(self.norm, train=train, dtype=self.dtype, epsilon=1e-4, **affine)
        act = layers.make_act(self.activation)
        conv = layers.make_conv(self.dtype, use_bias=False, padding="SAME")
        x = x.astype(self.dtype)
        for i, w in enumerate(self.widths):
            x = act(norm(name=f"norm{i}")(conv(w, (5, 5), name=f"conv{i}")(x)))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.rep_dim, use_bias=False, dtype=self.dtype, name="code")(x).astype(
            jnp.float32
        )


class _Trunk(nn.Module):
    widths: Sequence[int]
    norm: str
    activation: str
    dtype: Any

    @nn.compact
    def __call__(self, x, *, train: bool):
        norm = layers.make_norm(self.norm, train=train, dtype=self.dtype)
        act = layers.make_act(self.activation)
        use_bias = not layers.is_normalized(self.norm)
        conv = layers.make_conv(self.dtype, use_bias=use_bias, padding="SAME")
        for i, w in enumerate(self.widths):
            for j in range(2):
                x = act(norm(name=f"norm{i}_{j}")(conv(w, (3, 3), name=f"conv{i}_{j}")(x)))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return x.mean(axis=(1, 2))


class TransformClassifier(nn.Module):
    """Classifies which of ``transformations`` was applied. Input (N, H, W, C) square
    images; output (N, K, K): for each image and each of its K transformed copies, the
    logits over the K transformations."""

    num_classes: int = 10  # unused (see the module docstring)
    transformations: str = "rot4"
    widths: Sequence[int] = (32, 64, 128)
    norm: str = "batch"
    activation: str = "relu"
    dtype: Any = jnp.float32

    CHOICES: ClassVar[dict[str, options.Choices]] = {"transformations": transforms.SETS}

    def setup(self):
        options.check_fields(self)
        self.trunk = _Trunk(tuple(self.widths), self.norm, self.activation, self.dtype)
        self.head = nn.Dense(len(transforms.parameters(self.transformations)), name="head")

    def __call__(self, x, *, train: bool):
        if x.shape[1] != x.shape[2]:
            raise ValueError(f"{x.shape[1]}x{x.shape[2]} images: rotations need square images")
        xs = transforms.apply(x.astype(self.dtype), self.transformations)
        n, k = xs.shape[:2]
        logits = self.head(self.trunk(xs.reshape((n * k, *xs.shape[2:])), train=train))
        return logits.reshape((n, k, k)).astype(jnp.float32)

    def features(self, x):
        return self.trunk(x.astype(self.dtype), train=False).astype(jnp.float32)


register("conv_autoencoder", ConvAutoencoder, input_shape=(28, 28, 1), task="reconstruction")
register(
    "conv_continuation",
    ConvAutoencoder,
    input_shape=(28, 28, 1),
    task="continuation",
    visible_rows="top",
)
register("deep_svdd", DeepSVDD, input_shape=(28, 28, 1), task="one_class")
register(
    "transform_classifier", TransformClassifier, input_shape=(32, 32, 3), task="transformations"
)
