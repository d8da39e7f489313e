"""The model registry: ``create(name, **overrides)`` builds any registered network, after
``check_options`` has checked the overrides against the model's declared options."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn

from cnn_arch.models import options as _options


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to build one named model and the input it was designed for."""

    name: str
    build: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]  # (H, W, C) of the paper / torchvision reference
    task: str = "classification"  # or 'segmentation'
    module_cls: type | None = None  # the family's module class ``build`` partially applies
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)  # the registered ones


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
        name,
        functools.partial(module_cls, **defaults),
        tuple(input_shape),
        task,
        module_cls,
        dict(defaults),
    )


def names() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_REGISTRY)


def spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise ValueError(f"model={name!r} is not known; choose one of {names()}")
    return _REGISTRY[name]


def check_options(name: str, options: dict[str, Any], *, prefix: str = "model_kwargs.") -> None:
    """Raises ValueError, one sentence naming the key and what is allowed, when ``options``
    (constructor overrides for model ``name``, e.g. ``config.model_kwargs``) has an unknown
    option name, a string option outside its declared choices (norm, activation, stem,
    shortcut, version, variant, norm_position, padding, ...) or a bool / int / float /
    integer-list option of the wrong type. Reads declarations only: nothing is traced."""
    s = spec(name)
    _options.check_model_options(name, s.module_cls, options, prefix)


def create(name: str, **overrides: Any) -> nn.Module:
    """Builds model ``name``; ``overrides`` (num_classes, norm, dtype, ...) replace defaults."""
    check_options(name, overrides, prefix="")
    return spec(name).build(**overrides)
