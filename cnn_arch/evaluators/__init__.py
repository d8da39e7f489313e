"""Evaluators: what the loop (and ``python -m cnn_arch.evaluate``) measures.

``config.evals`` maps a name to ``{'kind': ..., 'every_steps': ..., <options>}``;
each evaluator runs every ``every_steps`` (default ``config.steps_per_eval``, -1 =
once an epoch) and at the end, and writes its metrics to metrics.jsonl and TensorBoard
under its name. Kinds: ``running`` (the network as trained, BN running averages),
``population`` (Algorithm 2's population statistics), ``folded`` (BN folded into the
convolutions), ``batch_stats`` (BN with the statistics of each evaluation batch of
``batch_size`` examples), ``ics`` and ``landscape`` (Santurkar et al. 2018: internal
covariate shift, and the loss and gradient along the gradient). A new kind is one module
with ``@register``.
"""

from cnn_arch.evaluators import activations as _activations  # noqa: F401  (Fig. 1b,c)
from cnn_arch.evaluators import anomaly as _anomaly  # noqa: F401  (AUROC of detectors)
from cnn_arch.evaluators import batch_stats as _batch_stats  # noqa: F401  (BN batch stats)
from cnn_arch.evaluators import bn as _bn  # noqa: F401  (registers population, folded)
from cnn_arch.evaluators import landscape as _landscape  # noqa: F401  (ics, landscape)
from cnn_arch.evaluators import multicrop as _multicrop  # noqa: F401  (multi-crop, ensembles)
from cnn_arch.evaluators import running as _running  # noqa: F401  (registers running)
from cnn_arch.evaluators.base import Evaluator, build_all, check, kinds, register

__all__ = ["Evaluator", "build_all", "check", "kinds", "register"]
