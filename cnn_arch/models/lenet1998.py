"""The original LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, Sec. II.B, Fig. 2).

32x32 input (28x28 digits are edge-padded to 32, as ``layers.pad_to``) -> C1 6@5x5
-> S2 trainable 2x2 subsampling -> C3 16@5x5 partially connected (Table I) -> S4
-> C5 120@5x5 -> F6 84 -> Euclidean RBF output units. Every layer up to F6 is
followed by the squashing function f(a) = 1.7159 tanh(2a/3) (Appendix A). Trainable
parameters per the paper: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164 =
60,000. C3 stores only the 60 used 5x5 kernels of Table I, so the count is exact
natively and unused connections cannot receive gradient. Weights are drawn from
U(-2.4/F, 2.4/F), F the unit's fan-in (Appendix A); biases start at zero.

Output: the RBF units compute y_i = sum_j (x_j - w_ij)^2 against fixed +-1
prototypes (Sec. II.B; not trainable, so kept as a constant, not in 'params').
The paper draws them as 7x12 stylized bitmaps of the characters (Fig. 3); for 10
classes we use hand-drawn 7x12 digit bitmaps (``DIGIT_BITMAPS``), for any other
class count a deterministic +-1 code (``rbf_prototypes``). The model returns
``-y`` as logits, so argmax(logits) = argmin(distance) and a generic softmax-CE
loop works unchanged; ``rbf_loss`` is the paper's own criterion (Eq. 8 / Eq. 9).
The paper's input scaling (background -0.1, ink 1.175) is the data pipeline's job.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_arch.models import layers
from cnn_arch.models.registry import register

# Table I: the S2 feature maps combined by each of C3's 16 maps. Maps 0-5 take 3
# contiguous maps, 6-11 four contiguous, 12-14 four discontinuous, 15 all six.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    *(tuple((j + k) % 6 for k in range(3)) for j in range(6)),
    *(tuple((j + k) % 6 for k in range(4)) for j in range(6)),
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)
_C3_IN = np.array([i for ins in C3_TABLE for i in ins])  # S2 map of each connection
_C3_OUT = np.array([j for j, ins in enumerate(C3_TABLE) for _ in ins])  # its C3 map

# 7x12 bitmaps of the digits 0-9 ('#' = +1, '.' = -1), one 12-row glyph per column,
# in the spirit of the paper's Fig. 3 prototypes.
DIGIT_BITMAPS = (
    "....... ....... ....... ....... ....... ....... ....... ....... ....... .......",
    "..###.. ...#... .#####. .#####. ....##. ####### ..####. ####### .#####. .#####.",
    ".#...#. ..##... #.....# #.....# ...#.#. #...... .#..... ......# #.....# #.....#",
    "#.....# .#.#... ......# ......# ..#..#. #...... #...... .....#. #.....# #.....#",
    "#.....# ...#... ......# ......# .#...#. #...... #...... ....#.. #.....# #.....#",
    "#.....# ...#... .....#. ..####. #....#. ######. ######. ...#... .#####. #.....#",
    "#.....# ...#... ....#.. ......# ####### ......# #.....# ...#... #.....# .######",
    "#.....# ...#... ...#... ......# .....#. ......# #.....# ..#.... #.....# ......#",
    "#.....# ...#... ..#.... ......# .....#. ......# #.....# ..#.... #.....# ......#",
    ".#...#. ...#... .#..... #.....# .....#. #.....# #.....# ..#.... #.....# .....#.",
    "..###.. .#####. ####### .#####. .....#. .#####. .#####. ..#.... .#####. .####..",
    "....... ....... ....... ....... ....... ....... ....... ....... ....... .......",
)


def rbf_prototypes(num_classes: int) -> np.ndarray:
    """Fixed (num_classes, 84) +-1 RBF centres: digit bitmaps for 10 classes, else a
    deterministic pseudo-random code (numpy seed 1998)."""
    if num_classes == 10:
        rows = [r.split() for r in DIGIT_BITMAPS]  # 12 rows x 10 glyph rows of width 7
        bitmaps = np.array([[list(rows[r][d]) for r in range(12)] for d in range(10)])
        return np.where(bitmaps == "#", 1.0, -1.0).reshape(10, 84).astype(np.float32)
    rng = np.random.default_rng(1998)
    return rng.choice(np.array([-1.0, 1.0], np.float32), size=(num_classes, 84))


def fan_in_uniform(fan_in):
    """U(-2.4/F, 2.4/F) (Appendix A); ``fan_in`` may be an array broadcast to the shape."""

    def init(key, shape, dtype=jnp.float32):
        bound = 2.4 / jnp.asarray(fan_in, dtype)
        return jax.random.uniform(key, shape, dtype, -1.0, 1.0) * bound

    return init


class Subsampling(nn.Module):
    """S2/S4: the sum of each 2x2 block times one trainable coefficient plus one
    trainable bias per map (Sec. II.B); the squashing is applied by the caller."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        coeff = self.param("coeff", fan_in_uniform(4), (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        s = nn.avg_pool(x, (2, 2), strides=(2, 2)) * 4.0
        return s * coeff.astype(self.dtype) + bias.astype(self.dtype)


class PartialConv(nn.Module):
    """C3: 5x5 convolution with Table I's connection table; one kernel per connection
    (60 x 5x5 weights + 16 biases = 1,516 parameters)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        fan_in = 25 * np.array([len(ins) for ins in C3_TABLE])[_C3_OUT]
        w = self.param("kernel", fan_in_uniform(fan_in), (5, 5, len(_C3_IN)))
        b = self.param("bias", nn.initializers.zeros, (len(C3_TABLE),))
        # Scatter into a dense HWIO kernel; the zeros are constants, not parameters.
        kernel = jnp.zeros((5, 5, 6, len(C3_TABLE)), w.dtype).at[:, :, _C3_IN, _C3_OUT].set(w)
        y = jax.lax.conv_general_dilated(
            x,
            kernel.astype(self.dtype),
            (1, 1),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + b.astype(self.dtype)


class LeNet5_1998(nn.Module):
    num_classes: int = 10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        del train  # no dropout or normalization in the 1998 network
        f = layers.scaled_tanh
        conv = layers.make_conv(self.dtype, padding="VALID")
        x = layers.pad_to(x.astype(self.dtype), 32)
        x = f(conv(6, (5, 5), kernel_init=fan_in_uniform(25), name="C1")(x))  # 28x28x6
        x = f(Subsampling(self.dtype, name="S2")(x))  # 14x14x6
        x = f(PartialConv(self.dtype, name="C3")(x))  # 10x10x16
        x = f(Subsampling(self.dtype, name="S4")(x))  # 5x5x16
        x = f(conv(120, (5, 5), kernel_init=fan_in_uniform(400), name="C5")(x))  # 1x1x120
        # C5 is 1x1 at 32x32 inputs; averaging keeps larger inputs working.
        x = jnp.mean(x, axis=(1, 2))
        x = f(nn.Dense(84, kernel_init=fan_in_uniform(120), dtype=self.dtype, name="F6")(x))
        protos = jnp.asarray(rbf_prototypes(self.num_classes))
        dist = jnp.sum((x.astype(jnp.float32)[:, None, :] - protos[None]) ** 2, axis=-1)
        return -dist  # logits: argmax = nearest prototype


def rbf_loss(outputs, labels, *, j: float = 1.0, contrast: bool = True):
    """The paper's training criterion on the model's outputs (``-y``, y = RBF distances).

    contrast=False: Eq. 8, the mean RBF output of the correct class. contrast=True:
    Eq. 9, E = mean_p [y_D + log(exp(-j) + sum_i exp(-y_i))], which also pushes up
    the other classes' penalties. It equals softmax cross-entropy on the logits -y
    plus one extra "rubbish" logit -j; the paper only says j > 0, 1.0 is our choice.
    """
    y = -outputs.astype(jnp.float32)
    y_correct = jnp.take_along_axis(y, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    if not contrast:
        return jnp.mean(y_correct)
    rubbish = jnp.full(y.shape[:-1] + (1,), -j, y.dtype)
    lse = jax.nn.logsumexp(jnp.concatenate([rubbish, -y], axis=-1), axis=-1)
    return jnp.mean(y_correct + lse)


register("lenet5_1998", LeNet5_1998, input_shape=(32, 32, 1))
