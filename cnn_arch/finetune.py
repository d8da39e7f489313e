"""Fine-tuning: start from other weights (``config.init_from``), and train the head only
(``config.trainable='head'``).

``config.init_from`` names one of:

- a directory written by ``python -m cnn_arch.convert`` (``provenance.json`` + ``variables/``);
- a training workdir (``config.json`` + ``checkpoints/``): its latest checkpoint;
- its ``checkpoints/`` folder (the latest step in it), or one step folder (``checkpoints/N``).

Only ``params`` and ``batch_stats`` are taken; the step, optimizer state and RNG stay
those of the fresh state, so training starts at step 0 with a fresh optimizer.
Tensors are matched by path and shape. The *head* is every layer whose shape depends on
``num_classes`` (the classifier, and GoogLeNet's auxiliary classifiers' last layers):
when the source was trained for another number of classes those tensors keep their fresh
initialization and the log lists them. Any other missing, extra or misshaped tensor is a
UserError naming it, raised before the train step compiles.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util

from cnn_arch.convert import store
from cnn_arch.errors import UserError


def head_modules(model: nn.Module, image_shape: tuple) -> frozenset[str]:
    """Module paths ('aux1/fc2') of the layers whose variables change shape with
    ``num_classes``; traced abstractly (``jax.eval_shape``), nothing is computed."""

    def shapes(module: nn.Module) -> dict[tuple[str, ...], tuple]:
        x = jnp.zeros((1, *image_shape), jnp.float32)
        tree = jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))
        return {k: v.shape for k, v in traverse_util.flatten_dict(dict(tree)).items()}

    ours, other = shapes(model), shapes(model.clone(num_classes=model.num_classes + 1))
    return frozenset("/".join(k[1:-1]) for k in ours if ours[k] != other.get(k))


def head_only(head: frozenset[str]) -> Callable[[Any], Any]:
    """``params -> tree of bools``: True for the parameters of ``head``'s modules."""

    def mask(params):
        flat = traverse_util.flatten_dict(params)
        return traverse_util.unflatten_dict({k: "/".join(k[:-1]) in head for k in flat})

    return mask


# -- reading a source -------------------------------------------------------------------


def _latest_step(checkpoints: str) -> str:
    steps = [
        int(name)
        for name in os.listdir(checkpoints)
        if name.isdigit() and os.path.isdir(os.path.join(checkpoints, name, "default"))
    ]
    if not steps:
        raise UserError(f"config.init_from: {checkpoints} holds no committed checkpoint")
    return os.path.join(checkpoints, str(max(steps)))


def _saved_model(config_json: str) -> str | None:
    if not os.path.isfile(config_json):
        return None
    with open(config_json) as f:
        return json.load(f).get("model")


def read(directory: str) -> tuple[dict[str, Any], str, str | None]:
    """``({'params', 'batch_stats'}, what it is, the model it was written for or None)``."""
    path = os.path.abspath(directory)
    if not os.path.isdir(path):
        raise UserError(f"config.init_from={directory!r} is not a directory")
    if os.path.isfile(os.path.join(path, store.PROVENANCE)):
        record = store.provenance(path)
        source = record.get("torchvision_weights") or {}
        what = f"{record.get('model')} converted from {source.get('weights') or record['source']}"
        return store.load_converted(path), what, record.get("model")
    if os.path.isdir(os.path.join(path, "checkpoints")):  # a training workdir
        step_dir, workdir = _latest_step(os.path.join(path, "checkpoints")), path
    elif os.path.basename(path) == "checkpoints":
        step_dir, workdir = _latest_step(path), os.path.dirname(path)
    elif os.path.isdir(os.path.join(path, "default")):  # one step of a checkpoints/ folder
        step_dir, workdir = path, os.path.dirname(os.path.dirname(path))
    else:
        raise UserError(
            f"config.init_from={directory!r} is neither converted weights (provenance.json), "
            "a training workdir (checkpoints/) nor a checkpoint folder"
        )
    try:
        restored = ocp.StandardCheckpointer().restore(os.path.join(step_dir, "default"))
    except Exception as e:  # noqa: BLE001 - any read failure: the user's folder is bad
        cause = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"config.init_from: cannot read checkpoint {step_dir}: {cause}") from None
    variables = {"params": restored["params"], "batch_stats": restored.get("batch_stats") or {}}
    return variables, f"checkpoint {step_dir}", _saved_model(os.path.join(workdir, "config.json"))


# -- matching it to the fresh state --------------------------------------------------------


def _shown(keys: list[tuple[str, ...]], shapes: dict | None = None) -> str:
    def one(k):
        return "/".join(k) + (f" {np.shape(shapes[k])}" if shapes is not None else "")

    return ", ".join(one(k) for k in keys[:4]) + (
        f" and {len(keys) - 4} more" if len(keys) > 4 else ""
    )


def match(
    fresh: dict[str, Any],
    loaded: dict[str, Any],
    head: frozenset[str],
    *,
    where: str,
    new_head_ok: bool = True,
) -> tuple[dict[str, Any], list[str]]:
    """The fresh variables with each tensor replaced by ``loaded``'s of the same path and
    shape; a head tensor of another shape stays fresh (described in the second result),
    or with ``new_head_ok=False`` is an error. UserError naming any other tensor that is
    missing, extra or misshaped."""
    ours = traverse_util.flatten_dict(fresh)
    theirs = traverse_util.flatten_dict(loaded)
    missing = sorted(k for k in ours if k not in theirs)
    extra = sorted(k for k in theirs if k not in ours)
    if missing:
        raise UserError(f"{where} lacks {_shown(missing, ours)}")
    if extra:
        raise UserError(f"{where} has tensors this model does not: {_shown(extra, theirs)}")
    misshaped = sorted(k for k in ours if np.shape(theirs[k]) != np.shape(ours[k]))
    new_head = [k for k in misshaped if "/".join(k[1:-1]) in head]
    misshaped = [k for k in misshaped if k not in new_head]
    if new_head and not new_head_ok:
        k = new_head[0]
        raise UserError(
            f"{where} has a classifier for another number of classes ({'/'.join(k)} "
            f"{np.shape(theirs[k])}, this config needs {np.shape(ours[k])}); set "
            "config.num_classes to the source's"
        )
    if misshaped:
        k = misshaped[0]
        more = f" (and {len(misshaped) - 1} more)" if len(misshaped) > 1 else ""
        raise UserError(
            f"{where} holds {'/'.join(k)} with shape {np.shape(theirs[k])}; this model "
            f"needs {np.shape(ours[k])}{more}"
        )
    merged = {k: v if k in new_head else jnp.asarray(theirs[k], v.dtype) for k, v in ours.items()}
    reinitialized = [
        f"{'/'.join(k)} {np.shape(theirs[k])} -> {np.shape(ours[k])}" for k in new_head
    ]
    return {c: {} for c in fresh} | traverse_util.unflatten_dict(merged), reinitialized


def warm_start(
    state, directory: str, *, model_name: str, head: frozenset[str], new_head: bool = True
):
    """``state`` with ``params`` / ``batch_stats`` from ``directory`` (see the module
    docstring); ``new_head=False`` refuses a head of another ``num_classes`` too."""
    loaded, what, source_model = read(directory)
    if source_model is not None and source_model != model_name:
        raise UserError(
            f"config.init_from={directory!r} holds {source_model} weights, but "
            f"config.model={model_name!r}"
        )
    where = f"config.init_from={directory!r} ({what})"
    variables, reinitialized = match(
        state.variables, loaded, head, where=where, new_head_ok=new_head
    )
    # On the fresh state's devices and shardings (replicated over the mesh).
    variables = jax.tree.map(lambda v, f: jax.device_put(v, f.sharding), variables, state.variables)
    new_params = [r for r in reinitialized if r.startswith("params/")]
    loaded_params = len(jax.tree.leaves(variables["params"])) - len(new_params)
    logging.info(
        "Initialized from %s: %d params and %d batch_stats tensors loaded; step 0, fresh "
        "optimizer state.",
        where,
        loaded_params,
        len(jax.tree.leaves(variables["batch_stats"])),
    )
    if reinitialized:
        logging.info(
            "Re-initialized (the source was trained for another num_classes): %s.",
            "; ".join(reinitialized),
        )
    return state.replace(params=variables["params"], batch_stats=variables["batch_stats"])
