"""The model registry: ``create(name, **overrides)`` builds any registered network."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to build one named model and the input it was designed for."""

    name: str
    build: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]  # (H, W, C) of the paper / torchvision reference
    task: str = "classification"  # or 'segmentation'


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str,
    module_cls: Callable[..., nn.Module],
    *,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    task: str = "classification",
    **defaults: Any,
) -> None:
    """Registers ``name`` as ``module_cls(**defaults, **overrides)``."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = ModelSpec(
        name, functools.partial(module_cls, **defaults), tuple(input_shape), task
    )


def names() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_REGISTRY)


def spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise ValueError(f"model={name!r} is not known; choose one of {names()}")
    return _REGISTRY[name]


def create(name: str, **overrides: Any) -> nn.Module:
    """Builds model ``name``; ``overrides`` (num_classes, norm, dtype, ...) replace defaults."""
    try:
        return spec(name).build(**overrides)
    except TypeError as e:  # an override the module does not have
        raise ValueError(
            f"model {name!r} does not accept these options {sorted(overrides)}: {e}"
        ) from e
