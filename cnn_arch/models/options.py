"""Model options checked before anything is traced: names, string choices, simple types.

Every model is a Flax dataclass, so its options are its fields. String-valued options
take one of a declared set of values: ``norm`` and ``activation`` mean the same in every
model (``layers.NORMS`` / ``layers.ACTIVATIONS``, read when checked, so kinds registered
later count); a family declares its own sets (and narrows the common ones) in a
``CHOICES`` class attribute. ``check_options`` reads only these declarations and the
field annotations, so a bad ``--config.model_kwargs.x=...`` is one sentence before
anything compiles, and ``check_fields`` is the same check as a backstop inside
``__call__`` for modules built without the registry.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cnn_arch.models import layers

# A declared choice: the allowed strings, or a function returning them when checked.
Choices = Sequence[str] | Callable[[], Iterable[str]]

# Options with one meaning across the zoo; a family narrows them in its CHOICES.
COMMON_CHOICES: dict[str, Callable[[], Iterable[str]]] = {
    "norm": lambda: sorted(layers.NORMS),
    "activation": lambda: sorted(layers.ACTIVATIONS),
}


def dense_layer_norms() -> list[str]:
    """Norm kinds for models that normalize dense (N, C) layers: instance norm has no
    spatial axes there (``layers.InstanceNorm``)."""
    return sorted(set(layers.NORMS) - {"instance"})


# Fields every Flax module has; they are not model options.
_FLAX_FIELDS = ("parent", "name")


def accepted_options(module_cls: type) -> list[str]:
    """The option names ``module_cls`` accepts (its dataclass fields), sorted."""
    return sorted(f.name for f in dataclasses.fields(module_cls) if f.name not in _FLAX_FIELDS)


def option_choices(module_cls: type) -> dict[str, tuple[str, ...]]:
    """Allowed values of each string-choice option of ``module_cls``."""
    fields = set(accepted_options(module_cls))
    declared: dict[str, Choices] = {k: v for k, v in COMMON_CHOICES.items() if k in fields}
    declared.update(getattr(module_cls, "CHOICES", {}))
    return {k: tuple(v() if callable(v) else v) for k, v in declared.items()}


def _number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _type_problem(field: dataclasses.Field, value: Any) -> str | None:
    """What is wrong with ``value`` for a field annotated bool / int / float / Sequence[int],
    or None. Other annotations (Any, unions, callables) are not checked here."""
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    if kind == "bool" and not isinstance(value, bool):
        return "it must be True or False"
    if kind == "int" and not (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
        return "it must be an integer"
    if kind == "float" and not _number(value):
        return "it must be a number"
    if kind == "Sequence[int]" and not (
        isinstance(value, tuple | list)
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
    ):
        return "it must be a list of integers"
    if field.name.endswith(("dropout_rate", "drop_rate")) and not (
        _number(value) and 0 <= value < 1
    ):
        return "it must be a number in [0, 1)"
    return None


def option_problem(module_cls: type, key: str, value: Any) -> str | None:
    """Why ``key=value`` is not allowed for ``module_cls`` (a phrase), or None; ``key``
    must be one of ``accepted_options(module_cls)``."""
    choices = option_choices(module_cls).get(key)
    if choices is not None:
        ok = isinstance(value, str) and value in choices
        return None if ok else f"choose one of {', '.join(choices)}"
    field = next(f for f in dataclasses.fields(module_cls) if f.name == key)
    return _type_problem(field, value)


def check_model_options(
    model: str, module_cls: type, options: Mapping[str, Any], prefix: str = "model_kwargs."
) -> None:
    """Raises ValueError naming the first option of ``options`` that ``module_cls`` (the
    class registered as ``model``) does not accept, and what it accepts."""
    accepted = accepted_options(module_cls)
    for key, value in options.items():
        if key not in accepted:
            raise ValueError(
                f"{prefix}{key} is not an option of {model}: the options are {', '.join(accepted)}"
            )
        problem = option_problem(module_cls, key, value)
        if problem:
            raise ValueError(f"{prefix}{key}={value!r} is not allowed for {model}: {problem}")


def check_fields(module: Any) -> None:
    """The same check on a constructed module's own string-choice fields (the backstop in
    ``__call__`` for modules built directly, without ``models.create``)."""
    cls = type(module)
    for key in option_choices(cls):
        problem = option_problem(cls, key, getattr(module, key))
        if problem:
            value = getattr(module, key)
            raise ValueError(f"{key}={value!r} is not allowed for {cls.__name__}: {problem}")
