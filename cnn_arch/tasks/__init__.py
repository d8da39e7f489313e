"""Objectives: what a model is trained to do, as small registered objects.

A task says which input pipeline feeds it (``data_kind``), the training loss with its
per-batch metrics, and the summed evaluation metrics. The loop and the evaluators
only call these; adding a task is one file with ``@register``.
"""

from cnn_arch.tasks import anomaly, classification, rbf, segmentation  # noqa: F401  (registers)
from cnn_arch.tasks.base import Task, check_model, create, names, register

__all__ = ["Task", "check_model", "create", "names", "register"]
