"""A torchvision ``state_dict`` -> the ``params`` and ``batch_stats`` of our same-named model.

Layouts: torch convs are OIHW, ours (Flax) HWIO; torch linears are (out, in), ours
(in, out); a linear after a flatten (AlexNet, VGG, GoogLeNet's aux heads) sees the
map in (C, H, W) order in torch and (H, W, C) in our NHWC nets, so its rows are
permuted. BatchNorm weight/bias/running_mean/running_var become scale/bias/mean/var;
the epsilon is not stored and is the same by construction (torchvision's 1e-5,
GoogLeNet's 1e-3; tests/test_convert.py checks both the values and the outputs).
``num_batches_tracked`` is dropped on purpose: it only drives PyTorch's
``momentum=None`` cumulative average, which neither torchvision's training nor our
BatchNorm uses. Every other tensor must find its place, and every place its tensor
of the right shape, or the conversion stops naming the tensor.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from cnn_arch import models
from cnn_arch.convert import names
from cnn_arch.errors import UserError

SUPPORTED = tuple(sorted(names.FAMILIES))
DROPPED_SUFFIX = "num_batches_tracked"
# Our leaf -> torchvision's tensor name in the same module.
_TORCH_LEAF = {
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def read_state_dict(source: Mapping[str, Any] | str | os.PathLike) -> dict[str, np.ndarray]:
    """Tensors by name, as numpy, from a mapping or a ``.pth`` / ``.safetensors`` file.

    ``.pth`` is read with ``torch.load(weights_only=True)`` (no pickled code runs);
    ``.safetensors`` with the safetensors numpy API, so it needs no torch.
    """
    if isinstance(source, Mapping):
        return {str(k): _to_numpy(k, v) for k, v in source.items()}
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise UserError(f"weights file {path} does not exist")
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file
        except ImportError as e:
            raise UserError("reading .safetensors needs `pip install safetensors`") from e
        try:
            return dict(load_file(path))
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
            raise UserError(f"{path} is not a readable safetensors file: {_first_line(e)}") from e
    try:
        import torch
    except ImportError as e:
        raise UserError(
            f"reading {path} needs PyTorch: pip install -e '.[torch]' (or convert it to "
            ".safetensors, which needs no torch)"
        ) from e
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle/zip errors of all kinds
        raise UserError(f"{path} is not a readable PyTorch file: {_first_line(e)}") from e
    if not isinstance(loaded, Mapping):
        raise UserError(f"{path} holds a {type(loaded).__name__}, not a state_dict")
    return {str(k): _to_numpy(k, v) for k, v in loaded.items()}


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _to_numpy(key: Any, value: Any) -> np.ndarray:
    if type(value).__module__.startswith("torch"):
        if not hasattr(value, "detach"):
            raise UserError(f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        value = value.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        return value.numpy()
    try:
        return np.asarray(value)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"state_dict entry {key!r} is not an array: {_first_line(e)}") from e


def _normalize_keys(model: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strips a DataParallel 'module.' prefix and applies the family's legacy renames."""
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    for pattern, replacement in names.FAMILIES[model].legacy_keys:
        tensors = {re.sub(pattern, replacement, k): v for k, v in tensors.items()}
    return tensors


def model_kwargs(
    model: str,
    tensors: Mapping[str, np.ndarray],
    num_classes: int | None = None,
    aux_logits: bool | None = None,
) -> dict[str, Any]:
    """The ``models.create`` options that give our model the checkpoint's tree.

    ``num_classes`` defaults to the rows of the checkpoint's classifier; GoogLeNet's
    ``aux_logits`` defaults to whether the checkpoint has the auxiliary heads.
    """
    family = names.FAMILIES[model]
    head = tensors.get(f"{family.head}.weight")
    if num_classes is None:
        if head is None:
            raise UserError(
                f"tensor '{family.head}.weight' (the classifier) is missing; is this a "
                f"torchvision {model} state_dict?"
            )
        num_classes = int(head.shape[0])
    kwargs: dict[str, Any] = {"num_classes": int(num_classes)}
    if model == "googlenet":
        has_aux = any(k.startswith(("aux1.", "aux2.")) for k in tensors)
        kwargs["aux_logits"] = has_aux if aux_logits is None else bool(aux_logits)
    elif aux_logits is not None:
        raise UserError(f"aux_logits applies to googlenet only, not {model}")
    return kwargs


def variable_shapes(model: str, kwargs: Mapping[str, Any]) -> dict[tuple[str, ...], tuple]:
    """Our model's variables as {(collection, *path): shape}, without computing them."""
    module = models.create(model, **kwargs)
    h, w, c = models.spec(model).input_shape
    shapes = jax.eval_shape(
        lambda: module.init(jax.random.key(0), jnp.zeros((1, h, w, c)), train=False)
    )
    return {k: v.shape for k, v in traverse_util.flatten_dict(dict(shapes)).items()}


def _torch_shape(leaf: str, shape: tuple) -> tuple:
    """The torch-layout shape that becomes our ``shape``: for error messages."""
    if leaf == "kernel" and len(shape) == 4:
        h, w, i, o = shape
        return (o, i, h, w)
    if leaf == "kernel" and len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def _to_ours(value: np.ndarray, leaf: str, chw: tuple[int, int, int] | None) -> np.ndarray:
    """A new float32 array in our layout (never a view: a state_dict's tensors change
    in place when torch keeps training, and ours must not change with them)."""
    value = np.asarray(value, np.float32)
    if leaf == "kernel" and value.ndim == 4:  # OIHW -> HWIO
        return value.transpose(2, 3, 1, 0).copy()
    if leaf == "kernel" and value.ndim == 2:
        return _linear_kernel(value, chw)
    return value.copy()


def _linear_kernel(weight: np.ndarray, chw: tuple[int, int, int] | None) -> np.ndarray:
    """torch (out, in) -> our (in, out); with ``chw``, the input axis is also reordered
    from torch's (C, H, W) flatten to our (H, W, C) one. Written 64 output columns at a
    time into one new array: ~3x faster than a plain transposed copy of VGG's
    25088x4096 matrix, and no second 400 MB temporary."""
    out, fan_in = weight.shape
    c, hw = (chw[0], chw[1] * chw[2]) if chw else (fan_in, 1)
    result = np.empty((fan_in, out), np.float32)
    view = result.reshape(hw, c, out)  # row (h * W + w) * C + c: our flatten order
    for start in range(0, out, 64):
        rows = weight[start : start + 64].reshape(-1, c, hw)
        view[:, :, start : start + 64] = rows.transpose(2, 1, 0)
    return result


@dataclasses.dataclass(frozen=True)
class Conversion:
    """The converted variables, the ``models.create`` options they fit, and what was
    deliberately left out of them (``num_batches_tracked``; unwanted aux heads)."""

    variables: dict[str, Any]
    model_kwargs: dict[str, Any]
    dropped: tuple[str, ...]


def convert(
    model_name: str,
    state_dict_or_path: Mapping[str, Any] | str | os.PathLike,
    num_classes: int | None = None,
    *,
    aux_logits: bool | None = None,
) -> Conversion:
    """``from_torchvision`` with the model options and the list of dropped tensors."""
    if model_name not in names.FAMILIES:
        raise UserError(
            f"model={model_name!r} has no torchvision converter; choose one of {list(SUPPORTED)}"
        )
    tensors = _normalize_keys(model_name, read_state_dict(state_dict_or_path))
    kwargs = model_kwargs(model_name, tensors, num_classes, aux_logits)
    family = names.FAMILIES[model_name]
    ours: dict[tuple[str, ...], np.ndarray] = {}
    used: set[str] = set()
    for key, shape in sorted(variable_shapes(model_name, kwargs).items()):
        collection, *path, leaf = key
        where = f"{'/'.join(key)} of {model_name}"
        if (collection, leaf) not in _TORCH_LEAF:
            raise UserError(f"no torchvision tensor fills {where}")
        module = "/".join(path)
        tensor = f"{names.torch_module(model_name, module)}.{_TORCH_LEAF[collection, leaf]}"
        want = _torch_shape(leaf, shape)
        if tensor not in tensors:
            raise UserError(
                f"tensor {tensor!r} {want} is missing; it fills {where} (is this a "
                f"torchvision {model_name} state_dict?)"
            )
        if tuple(tensors[tensor].shape) != want:
            raise UserError(
                f"tensor {tensor!r} has shape {tuple(tensors[tensor].shape)}; {where} "
                f"({describe(kwargs)}) needs {want}"
            )
        ours[tuple(key)] = _to_ours(tensors[tensor], leaf, family.flatten_chw.get(module))
        used.add(tensor)
    bn_modules = {t.rsplit(".", 1)[0] for t in used if t.endswith(".running_mean")}
    left = sorted(set(tensors) - used)
    dropped = [t for t in left if t.endswith(DROPPED_SUFFIX) and t.rsplit(".", 1)[0] in bn_modules]
    if model_name == "googlenet" and not kwargs["aux_logits"]:  # asked for explicitly
        dropped += [t for t in left if t.startswith(("aux1.", "aux2."))]
    left = [t for t in left if t not in set(dropped)]
    if left:
        shown = ", ".join(repr(t) for t in left[:3]) + (", ..." if len(left) > 3 else "")
        raise UserError(
            f"{len(left)} tensors have no place in {model_name} ({describe(kwargs)}): {shown}"
        )
    variables = traverse_util.unflatten_dict(ours)
    return Conversion(
        {"params": variables.get("params", {}), "batch_stats": variables.get("batch_stats", {})},
        kwargs,
        tuple(sorted(dropped)),
    )


def describe(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items())


def from_torchvision(
    model_name: str,
    state_dict_or_path: Mapping[str, Any] | str | os.PathLike,
    num_classes: int | None = None,
    *,
    aux_logits: bool | None = None,
) -> dict[str, Any]:
    """torchvision weights -> ``{'params': ..., 'batch_stats': ...}`` of our ``model_name``.

    ``state_dict_or_path``: a state_dict (torch tensors or numpy arrays), or a ``.pth``
    or ``.safetensors`` file. ``num_classes`` defaults to the checkpoint's; another
    value is an error naming the classifier tensor (re-initializing a head is the
    fine-tuning code's job). ``aux_logits`` (GoogLeNet only) defaults to whether the
    checkpoint has the auxiliary heads; False leaves them out. ``convert`` returns the
    same variables with the ``models.create`` options they fit (``model_kwargs``).
    """
    return convert(model_name, state_dict_or_path, num_classes, aux_logits=aux_logits).variables
