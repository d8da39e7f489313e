"""AUROC, the ROC curve and a threshold at a chosen false-positive rate.

Higher score = more anomalous throughout. AUROC is computed with the rank-sum
(Mann-Whitney U) identity: AUROC = (R_anomalous - n_a (n_a + 1) / 2) / (n_a n_n), where
R_anomalous is the sum of the anomalous examples' ranks among all scores, ties given
their average rank, so a tie between an anomalous and a normal example counts 1/2 -- the
probability that a random anomalous example scores above a random normal one.
"""

from __future__ import annotations

import numpy as np

from cnn_arch.errors import UserError


def _check(score, is_anomaly) -> tuple[np.ndarray, np.ndarray]:
    score = np.asarray(score, np.float64).reshape(-1)
    is_anomaly = np.asarray(is_anomaly).reshape(-1).astype(bool)
    if score.shape != is_anomaly.shape:
        raise ValueError(f"{score.shape[0]} scores but {is_anomaly.shape[0]} labels")
    if not np.all(np.isfinite(score)):
        raise ValueError("scores must be finite (a detector produced inf/nan)")
    return score, is_anomaly


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``; tied values share the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start of each run of equal values, and the mean rank of the run.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auroc(score, is_anomaly) -> float:
    """Area under the ROC curve of ``score`` for separating ``is_anomaly`` (1) from
    normal (0) examples; ValueError unless both kinds are present."""
    score, is_anomaly = _check(score, is_anomaly)
    n_a = int(is_anomaly.sum())
    n_n = len(score) - n_a
    if n_a == 0 or n_n == 0:
        raise ValueError("AUROC needs both normal and anomalous examples")
    r_a = average_ranks(score)[is_anomaly].sum()
    return float((r_a - n_a * (n_a + 1) / 2.0) / (n_a * n_n))


def roc_curve(score, is_anomaly) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates, thresholds), one point per distinct
    score from the highest down, starting at (0, 0); flagging ``score >= threshold``."""
    score, is_anomaly = _check(score, is_anomaly)
    order = np.argsort(-score, kind="mergesort")
    s, y = score[order], is_anomaly[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = np.cumsum(~y)[last_of_tie]
    tpr = np.r_[0.0, tp / max(int(y.sum()), 1)]
    fpr = np.r_[0.0, fp / max(int((~y).sum()), 1)]
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def threshold_at_fpr(normal_scores, fpr: float) -> float:
    """The score above which at most a fraction ``fpr`` of ``normal_scores`` lie: flag
    ``score > threshold`` to falsely flag about ``fpr`` of normal images."""
    if not 0 < fpr < 1:
        raise UserError(f"--fpr={fpr} must be in (0, 1)")
    normal_scores = np.asarray(normal_scores, np.float64).reshape(-1)
    if normal_scores.size == 0:
        raise UserError("no held-out normal scores to calibrate a threshold on")
    return float(np.quantile(normal_scores, 1.0 - fpr, method="higher"))
