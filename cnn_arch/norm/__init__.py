"""The BatchNorm lab (Ioffe & Szegedy 2015): Algorithm 1 and 2, ghost / per-device BN, folding.

- ``BatchNorm``: Algorithm 1 as a linen module (autodiff or hand-derived backward);
  ``norm='batch_alg1'`` / ``'batch_alg1_manual'`` in any model.
- ``GhostBatchNorm``: statistics over fixed sub-batches; ``norm='ghost_batch'``.
- ``NoisyBatchNorm``: BN plus per-step random scale and shift (Santurkar et al. 2018,
  Sec. 2.1); ``norm='noisy_batch'``.
- ``apply_per_device``: per-device statistics under a device Mesh (shard_map).
- ``population_statistics``: Algorithm 2's population mean/variance re-estimate.
- ``fold_batch_norm``: folds inference BN into the preceding conv/dense layer.

Algorithm 2 applied to a trained workdir (restore, re-estimate, evaluate) drives the
training stack, so it lives outside this package in ``cnn_arch/bn_population.py``.

Nothing here imports ``cnn_arch.models``; ``models/layers.py`` imports this package to
register the norm kinds, so the dependency runs one way (models -> norm).
"""

from cnn_arch.norm.batchnorm import BatchNorm, batch_norm_train, batch_norm_train_manual
from cnn_arch.norm.fold import FoldedModel, fold_batch_norm
from cnn_arch.norm.ghost import DEFAULT_GHOST_BATCH_SIZE, GhostBatchNorm
from cnn_arch.norm.noisy import NoisyBatchNorm
from cnn_arch.norm.per_device import apply_per_device
from cnn_arch.norm.population import batch_statistics, population_statistics

__all__ = [
    "DEFAULT_GHOST_BATCH_SIZE",
    "BatchNorm",
    "FoldedModel",
    "GhostBatchNorm",
    "NoisyBatchNorm",
    "apply_per_device",
    "batch_norm_train",
    "batch_norm_train_manual",
    "batch_statistics",
    "fold_batch_norm",
    "population_statistics",
]
