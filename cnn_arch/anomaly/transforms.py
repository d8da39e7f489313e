"""The artificial variations a transformation classifier learns to tell apart.

``geom72`` is Golan & El-Yaniv 2018 (Sec. 4): horizontal flip (2) x translation by
(tx, ty) in {0, -8, +8}^2 pixels (9) x rotation by k * 90 degrees (4) = 72
transformations, the translations filling the uncovered border by reflection;
``rot4`` is the four rotations alone (Hendrycks et al. 2019, Sec. 4.2, the cheap
self-supervised variant). Index 0 is the identity in both.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp

SETS = ("rot4", "geom72")
SHIFT = 8  # pixels, Golan & El-Yaniv 2018 Sec. 4 (on 32x32 images)


def parameters(kind: str) -> list[tuple[bool, int, int, int]]:
    """(flip, tx, ty, quarter turns) of each transformation, the identity first."""
    if kind == "rot4":
        return [(False, 0, 0, k) for k in range(4)]
    if kind == "geom72":
        shifts = (0, -SHIFT, SHIFT)
        return [
            (flip, tx, ty, k)
            for flip, tx, ty, k in itertools.product((False, True), shifts, shifts, range(4))
        ]
    raise ValueError(f"transformations={kind!r} is not known; choose one of {', '.join(SETS)}")


def _shift(x, tx: int, ty: int):
    """Translate (N, H, W, C) images by (tx, ty) pixels, reflecting at the border."""
    if tx == 0 and ty == 0:
        return x
    p = max(abs(tx), abs(ty))
    padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
    h, w = x.shape[1:3]
    return padded[:, p - ty : p - ty + h, p - tx : p - tx + w, :]


def apply(x, kind: str):
    """(N, H, W, C) square images -> (N, K, H, W, C), every transformation of each."""
    out = []
    for flip, tx, ty, k in parameters(kind):
        y = x[:, :, ::-1, :] if flip else x
        y = _shift(y, tx, ty)
        out.append(jnp.rot90(y, k, axes=(1, 2)))
    return jnp.stack(out, axis=1)
