"""Anomaly detection with networks trained on normal data only (issue 12).

The detectors are tasks (``cnn_arch.tasks.anomaly``) with networks in the zoo
(``cnn_arch.models.anomaly``); the ``anomaly`` evaluator scores whole splits (``scoring.py``) and
reports AUROC (``roc.py``). ``python -m cnn_arch.anomaly`` runs the one-class protocol
for one class; ``python -m cnn_arch.anomaly.score`` scores new images.
"""

from cnn_arch.anomaly.roc import auroc, roc_curve, threshold_at_fpr

__all__ = ["auroc", "roc_curve", "threshold_at_fpr"]
