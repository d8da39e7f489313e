"""The lab's normalization kinds for ``cnn_arch.models.layers.NORMS`` (``norm=...``).

Each builder has the ``layers.make_norm`` contract ``(train=, momentum=, epsilon=,
dtype=, axis_name=, **extra) -> module constructor``. ``layers.py`` merges
``NORM_KINDS`` into ``NORMS``; this module imports nothing from ``cnn_arch.models``,
so the import runs one way (models -> norm) and there is no cycle.

Ghost BN with another sub-batch size: either pass it through ``make_norm``
(``make_norm('ghost_batch', train=..., ghost_batch_size=16)``) or register a named
kind once, e.g. ``layers.NORMS['ghost_batch12'] = ghost_batch_kind(12)``, and use
``norm='ghost_batch12'`` in any model. The powers of two from 2 to 256 are registered
here already (``GHOST_BATCH_SIZES``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from cnn_arch.norm.batchnorm import BatchNorm
from cnn_arch.norm.ghost import DEFAULT_GHOST_BATCH_SIZE, GhostBatchNorm
from cnn_arch.norm.noisy import NoisyBatchNorm


def batch_alg1(
    *, train: bool, momentum: float, epsilon: float, dtype: Any, axis_name, **kw
) -> Callable[..., BatchNorm]:
    """Algorithm 1 (our module), gradients by autodiff; ``backward='manual'`` may be passed."""
    return functools.partial(
        BatchNorm,
        use_running_average=not train,
        momentum=momentum,
        epsilon=epsilon,
        dtype=dtype,
        axis_name=axis_name,
        **kw,
    )


batch_alg1_manual = functools.partial(batch_alg1, backward="manual")


def ghost_batch(
    *,
    train: bool,
    momentum: float,
    epsilon: float,
    dtype: Any,
    axis_name,
    ghost_batch_size: int = DEFAULT_GHOST_BATCH_SIZE,
    **kw,
) -> Callable[..., GhostBatchNorm]:
    """Ghost BN over consecutive sub-batches of ``ghost_batch_size`` examples."""
    return functools.partial(
        GhostBatchNorm,
        ghost_batch_size=ghost_batch_size,
        use_running_average=not train,
        momentum=momentum,
        epsilon=epsilon,
        dtype=dtype,
        axis_name=axis_name,
        **kw,
    )


def ghost_batch_kind(ghost_batch_size: int) -> Callable[..., Callable[..., GhostBatchNorm]]:
    """A ``NORMS`` builder for ghost BN with a fixed sub-batch size (register it by name)."""
    return functools.partial(ghost_batch, ghost_batch_size=ghost_batch_size)


def noisy_batch(
    *, train: bool, momentum: float, epsilon: float, dtype: Any, axis_name, **kw
) -> Callable[..., NoisyBatchNorm]:
    """BN plus a per-step random per-channel scale and shift (Santurkar et al. 2018,
    Sec. 2.1); ``noise_shift`` / ``noise_scale`` may be passed."""
    return functools.partial(
        NoisyBatchNorm,
        use_running_average=not train,
        momentum=momentum,
        epsilon=epsilon,
        dtype=dtype,
        axis_name=axis_name,
        **kw,
    )


NORM_KINDS: dict[str, Callable[..., Any]] = {
    "batch_alg1": batch_alg1,
    "batch_alg1_manual": batch_alg1_manual,
    "ghost_batch": ghost_batch,
    "noisy_batch": noisy_batch,
}

# Ghost BN at a fixed sub-batch size, by name ('ghost_batch2' ... 'ghost_batch256'), so a
# config can choose the examples per BN batch through ``model_kwargs.norm`` alone (the
# models take a norm kind, not its options): the batch-size study of Wu & He (2018, Fig. 1)
# at a fixed global batch (experiments/norm_batch_size.py).
GHOST_BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256)
NORM_KINDS.update({f"ghost_batch{k}": ghost_batch_kind(k) for k in GHOST_BATCH_SIZES})
