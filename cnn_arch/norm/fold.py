"""Folding BN into the preceding conv / dense layer for inference (Alg. 2, last step).

At inference BN is the fixed affine map y = gamma (x - E[x]) / sqrt(Var[x] + eps) + beta
= s * x + (beta - s * E[x]) per feature, with s = gamma / sqrt(Var[x] + eps). When x is
the output of a conv or dense layer x = W * u + b (features on the last axis), the
composition is one layer with

    W' = W * s   (every output feature's filter scaled),   b' = s * (b - E[x]) + beta,

so the network runs without its BN layers.

``fold_batch_norm`` works on any architecture without model changes. A tracing pass
(``jax.eval_shape`` under ``nn.intercept_methods``) records the outputs of every
Conv/Dense call and pairs a BN layer with the layer whose output *is* (the very same
traced array) the BN's input, i.e. the BN directly follows it with nothing in
between. The folded network is the same model applied under an interceptor that
returns the input of each folded BN unchanged and adds the folded bias after convs
that had none (their ``'params'`` entry gets a ``'bias'`` the module itself ignores).

Assumption: the producer's raw output has no consumer other than the BN (true of
conv-BN and dense-BN stacks; a graph that also reads the pre-BN activation would
need that activation un-folded). ``check=True`` verifies on the example input.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_arch.norm.population import is_batch_norm, uses_batch_statistics

Path = tuple[str, ...]


def _is_linear(module: nn.Module) -> bool:
    """Layers whose kernel's last axis is the output feature: Conv, Dense, ConvTranspose."""
    if isinstance(module, nn.ConvTranspose):
        return not module.transpose_kernel
    return isinstance(module, nn.Conv | nn.Dense)


def _name(path: Path) -> str:
    return "/".join(path)


@dataclasses.dataclass(frozen=True)
class FoldedModel:
    """A BN-folded network: ``apply(variables, x)`` runs it in eval mode.

    ``pairs``: (producer, BN) layer paths that were folded; ``unfolded``: BN layers left
    in place (not directly after a conv/dense, in training mode, or a shared input);
    ``macs_removed``: multiply-adds per example that the folded BNs cost (one per output
    element: s * x + t), which the network no longer computes.
    """

    variables: Any
    apply: Callable[..., Any]
    pairs: tuple[tuple[str, str], ...]
    unfolded: tuple[str, ...]
    macs_removed: int


def _trace_pairs(model, variables, example_input, apply_kwargs):
    """Runs the model abstractly and pairs each eval-mode BN with the layer producing its input."""
    outputs: list[tuple[Path, Any]] = []  # every conv/dense output, kept alive for ``is``
    pairs: dict[Path, Path] = {}  # bn path -> producer path
    info: dict[Path, tuple[float, int]] = {}  # bn path -> (epsilon, elements per example)
    unfolded: list[Path] = []

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        path = tuple(module.path)
        if _is_linear(module):
            out = next_fun(*args, **kwargs)
            outputs.append((path, out))
            return out
        if is_batch_norm(module):
            x = args[0]
            producer = next((p for p, out in outputs if out is x), None)
            foldable = (
                producer is not None
                and not uses_batch_statistics(module, args, kwargs)
                and getattr(module, "axis", -1) % x.ndim == x.ndim - 1
                and producer not in pairs.values()
                and path not in pairs
            )
            if foldable:
                pairs[path] = producer
                info[path] = (module.epsilon, math.prod(x.shape[1:]))
            elif path not in unfolded:
                unfolded.append(path)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda v, x: model.apply(v, x, **apply_kwargs), variables, example_input)
    for path in unfolded:  # a layer seen both foldable and not (shared) stays unfolded
        pairs.pop(path, None)
    return pairs, info, unfolded


def _subtree(tree: dict, path: Path) -> dict | None:
    for name in path:
        if not isinstance(tree, dict) or name not in tree:
            return None
        tree = tree[name]
    return tree


def _delete(tree: dict, path: Path) -> None:
    parent = _subtree(tree, path[:-1])
    if parent is not None:
        parent.pop(path[-1], None)


def fold_batch_norm(
    model: nn.Module,
    variables: Any,
    example_input: Any,
    *,
    check: bool = False,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    **apply_kwargs: Any,
) -> FoldedModel:
    """Folds every BN that directly follows a conv/dense layer into that layer.

    ``model.apply(variables, x, **apply_kwargs)`` must be the eval-mode forward pass
    (``apply_kwargs`` defaults to ``train=False``); ``example_input`` only fixes shapes
    (it is traced, not computed, unless ``check``). Returns a ``FoldedModel`` whose
    ``apply(folded.variables, x)`` equals the original eval-mode output.
    """
    apply_kwargs = apply_kwargs or {"train": False}
    original = variables
    variables = flax.core.unfreeze(flax.core.meta.unbox(variables))  # a copy we can edit
    pairs, info, unfolded = _trace_pairs(model, variables, example_input, apply_kwargs)

    params = variables["params"]
    stats = variables.get("batch_stats", {})
    folded_linear: set[Path] = set()
    for bn_path, lin_path in pairs.items():
        lin = _subtree(params, lin_path)
        bn = _subtree(params, bn_path) or {}
        bn_stats = _subtree(stats, bn_path)
        eps = info[bn_path][0]
        kernel = lin["kernel"]
        s = bn.get("scale", 1.0) * jax.lax.rsqrt(bn_stats["var"] + eps)
        bias = lin.get("bias", jnp.zeros(kernel.shape[-1], kernel.dtype))
        lin["kernel"] = (kernel * s).astype(kernel.dtype)
        lin["bias"] = ((bias - bn_stats["mean"]) * s + bn.get("bias", 0.0)).astype(bias.dtype)
        _delete(params, bn_path)
        _delete(stats, bn_path)
        folded_linear.add(lin_path)
    folded_bns = set(pairs)

    def apply(variables: Any, x: Any, **kwargs: Any) -> Any:
        def interceptor(next_fun, args, kw, context):
            module = context.module
            if context.method_name != "__call__":
                return next_fun(*args, **kw)
            path = tuple(module.path)
            if path in folded_bns:  # now the identity
                inp = args[0]
                dtype = module.dtype or jnp.promote_types(inp.dtype, module.param_dtype)
                return inp.astype(dtype)
            if path in folded_linear and not module.use_bias:
                y = next_fun(*args, **kw)
                return (y + module.get_variable("params", "bias")).astype(y.dtype)
            return next_fun(*args, **kw)

        with nn.intercept_methods(interceptor):
            return model.apply(variables, x, **{**apply_kwargs, **kwargs})

    folded = FoldedModel(
        variables=variables,
        apply=apply,
        pairs=tuple((_name(lin), _name(bn)) for bn, lin in pairs.items()),
        unfolded=tuple(_name(p) for p in unfolded),
        macs_removed=sum(info[p][1] for p in pairs),
    )
    if check:
        want = model.apply(original, example_input, **apply_kwargs)
        got = folded.apply(folded.variables, example_input)
        for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
            if not np.allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol):
                err = float(np.max(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64))))
                raise ValueError(
                    f"folded output differs from the original by up to {err:.3g}: a folded "
                    "layer's pre-BN output is probably also read elsewhere"
                )
    return folded
