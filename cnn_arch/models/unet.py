"""U-Net (Ronneberger, Fischer & Brox 2015, Sec. 2, Fig. 1).

Contracting path: 4 levels of two 3x3 convs + ReLU then 2x2 max-pool, 64-128-256-
512 channels, 1024 at the bottom; expansive path: 2x2 up-conv halving the channels,
concatenation with the centre-cropped contracting map, two 3x3 convs + ReLU; a 1x1
conv to the classes. ``padding='VALID'`` is the paper's unpadded net (572x572 ->
388x388, ``unet``); ``padding='SAME'`` keeps the input size (any multiple of 16,
``unet_padded``). All convs keep their biases as in the paper: 31,030,658
parameters at 1 input channel and 2 classes (31,031,810 at 3 input channels), by
hand and as the Keras summaries of the 572->388 net give. The often-quoted
31,031,685 is zhixuhao/unet (Keras): its head is a 3x3 conv to 2 maps (1,154) then
a 1x1 conv to 1 sigmoid map (3) instead of the paper's 1x1 conv to 2 classes (130). With
``norm='batch'`` etc. a norm sits between each 3x3 conv and its ReLU and those convs
drop their bias (BN paper, Sec. 3.2). Weights ~ N(0, 2/fan_in) (Sec. 3).
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_arch.models import layers, options
from cnn_arch.models.registry import register

# "Gaussian distribution with a standard deviation of sqrt(2/N)" (Sec. 3), untruncated.
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def unet_output_size(size: int, depth: int = 4, padding: str = "VALID") -> int:
    """Output side length for input side ``size``; raises if the size is not valid.

    Unpadded: each level loses 4 pixels to its two 3x3 convs and the 2x2 pools must
    see even sizes ("select the input tile size such that all 2x2 max-pooling
    operations are applied to a layer with an even x- and y-size", Sec. 2).
    """
    if padding == "SAME":
        if size % 2**depth:
            raise ValueError(f"padded U-Net needs input sizes divisible by {2**depth}, got {size}")
        return size
    s = size
    for _ in range(depth):
        s -= 4
        if s <= 0 or s % 2:
            raise ValueError(f"unpadded U-Net: input size {size} gives an odd or empty map")
        s //= 2
    s -= 4
    for _ in range(depth):
        s = 2 * s - 4
    if s <= 0:
        raise ValueError(f"unpadded U-Net: input size {size} is too small")
    return s


def center_crop_to(x, shape):
    """Centre-crops NHW[C] ``x`` to the spatial size shape[1:3] (a logits shape)."""
    h, w = shape[1], shape[2]
    top, left = (x.shape[1] - h) // 2, (x.shape[2] - w) // 2
    return x[:, top : top + h, left : left + w]


class UNet(nn.Module):
    num_classes: int = 2
    features: int = 64  # channels of the first level; doubled at each level below
    depth: int = 4  # number of 2x2 poolings
    padding: str = "VALID"  # 'VALID' as in the paper, 'SAME' for size-preserving
    norm: str = "none"
    dropout_rate: float = 0.0  # dropout at the end of the contracting path (Sec. 3.1)
    dtype: Any = jnp.float32

    CHOICES: ClassVar[dict[str, options.Choices]] = {"padding": ("VALID", "SAME")}

    @nn.compact
    def __call__(self, x, *, train: bool):
        options.check_fields(self)
        unet_output_size(x.shape[1], self.depth, self.padding)
        unet_output_size(x.shape[2], self.depth, self.padding)
        norm = layers.make_norm(self.norm, train=train, dtype=self.dtype)
        use_bias = not layers.is_normalized(self.norm)
        conv = layers.make_conv(self.dtype, padding=self.padding, kernel_init=he_normal)

        def double_conv(x, feats, name):
            for i in (1, 2):
                x = conv(feats, (3, 3), use_bias=use_bias, name=f"{name}_conv{i}")(x)
                x = nn.relu(norm(name=f"{name}_conv{i}_norm")(x))
            return x

        x = x.astype(self.dtype)
        skips = []
        for level in range(self.depth):
            x = double_conv(x, self.features * 2**level, f"down{level + 1}")
            skips.append(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = double_conv(x, self.features * 2**self.depth, "bottom")
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        for level in reversed(range(self.depth)):
            feats = self.features * 2**level
            x = nn.ConvTranspose(
                feats, (2, 2), strides=(2, 2), padding="VALID", kernel_init=he_normal,
                dtype=self.dtype, name=f"up{level + 1}_upconv",
            )(x)  # fmt: skip
            x = jnp.concatenate([center_crop_to(skips[level], x.shape), x], axis=-1)
            x = double_conv(x, feats, f"up{level + 1}")
        x = conv(self.num_classes, (1, 1), name="head")(x)
        return x.astype(jnp.float32)


def segmentation_loss(logits, masks, weights=None):
    """Per-pixel softmax cross-entropy, optionally weighted (Eq. 1).

    logits (N, H, W, K); masks (N, H, W) integer labels; weights (N, H, W) the map
    w(x) of Eq. 1 or None. Returns mean_x w(x) * -log p_l(x)(x): Eq. 1's energy
    divided by the number of pixels. For the unpadded net crop masks and weights
    with ``center_crop_to(masks, logits.shape)`` first.
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, masks[..., None].astype(jnp.int32), axis=-1)[..., 0]
    if weights is not None:
        nll = nll * weights.astype(jnp.float32)
    return jnp.mean(nll)


register("unet", UNet, input_shape=(572, 572, 1), task="segmentation")
register("unet_padded", UNet, input_shape=(256, 256, 3), task="segmentation", padding="SAME")
