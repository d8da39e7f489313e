"""The Task interface and its registry."""

from __future__ import annotations

from typing import Any

import jax

Metrics = dict[str, jax.Array]


class Task:
    """What a model is trained to do. Subclasses are frozen dataclasses.

    ``loss(outputs, batch)`` returns the mean training loss and per-batch metrics
    (means); ``eval_sums(outputs, batch)`` returns sums over the real examples
    (``batch['mask']`` is 1) with a ``count``, so batches and hosts add up exactly.
    ``outputs`` is whatever the model returns (a tuple for models with auxiliary heads
    in training).
    """

    name: str = ""
    data_kind: str = "classification"  # the input pipeline: 'classification' | 'segmentation'
    unit: str = "examples"  # what eval's count counts

    def loss(self, outputs: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, Metrics]:
        raise NotImplementedError

    def eval_sums(self, outputs: Any, batch: dict[str, jax.Array]) -> Metrics:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config) -> Task:
        return cls()

    @classmethod
    def check_model(cls, model: str, model_task: str) -> str | None:
        """None when ``model`` (whose registered task is ``model_task``) fits, else why not."""
        if model_task != cls.data_kind:
            return f"model {model!r} is a {model_task} model"
        return None


_REGISTRY: dict[str, type[Task]] = {}


def register(name: str):
    """Class decorator: ``cls.from_config(config)`` builds the task named ``name``."""

    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(f"task {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def names() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, config) -> Task:
    """The task ``name`` with the options ``config`` gives it (e.g. label smoothing)."""
    if name not in _REGISTRY:
        raise ValueError(f"task {name!r} is not known; choose one of {names()}")
    return _REGISTRY[name].from_config(config)


def check_model(task: str, model: str) -> None:
    """ValueError when ``model`` cannot be trained for ``task``."""
    from cnn_arch import models  # the registry imports every model family; keep it lazy

    problem = _REGISTRY[task].check_model(model, models.spec(model).task)
    if problem:
        raise ValueError(f"config.task={task!r} cannot train it: {problem}")
