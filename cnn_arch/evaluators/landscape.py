"""Internal covariate shift and the loss landscape along the gradient (Santurkar et al. 2018).

Both evaluators measure the training objective (the task's loss of the network in
training mode: BN with batch statistics, the step's dropout / noise key) on one fixed
probe batch: the first ``batch_size`` examples of the seeded training pipeline, read
once and kept, so every measurement over training sees the same examples.

``ics`` (Definition 2.1): for each layer i of ``layers``, G = the gradient of layer i's
weights at the current parameters, and G' = the same gradient after the layers that
run before i (every parameter of a module first called before layer i) took the
update the optimizer would make from this batch's gradient (``run.tx``: with momentum
and weight decay if the run has them). It reports ||G - G'||_2, cos(G, G'), and the
relative change ||G - G'|| / ||G||.

``landscape`` (Sec. 3.1, Fig. 4): from the current parameters x with gradient g, the
loss and the gradient at x - eta g for each eta of ``step_sizes`` (times the current
learning rate with ``relative_to_lr``). It reports the range of the loss over the
points (eta = 0 included): "loss landscape"; the smallest and largest
||grad(x - eta g) - g||: "gradient predictiveness"; and the effective beta-smoothness,
max over eta of ||grad(x - eta g) - g|| / ||eta g||.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cnn_arch import optim, parallel, steps
from cnn_arch.evaluators.base import Evaluator, register


def module_call_order(model: nn.Module, variables: Any, images: Any) -> list[tuple[str, ...]]:
    """Paths of the submodules in the order the network first calls them (inference
    mode, traced abstractly: nothing is computed). A dict of params is sorted by name once
    it passes through ``jax.jit``, so the order has to come from the forward pass."""
    order: list[tuple[str, ...]] = []

    def record(next_fun, args, kwargs, context):
        path = tuple(context.module.path)
        if context.method_name == "__call__" and path and path not in order:
            order.append(path)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
    return order


def _leaf_paths(tree: Any) -> list[tuple[str, ...]]:
    return [
        tuple(str(k.key) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def _within(leaf: tuple[str, ...], module: tuple[str, ...]) -> bool:
    return leaf[: len(module)] == module


def layer_masks(
    order: list[tuple[str, ...]], params: Any, layer: str
) -> tuple[list[bool], list[bool]]:
    """For each params leaf (flattening order): whether it belongs to ``layer`` ('a/b'
    path), and whether it belongs to a module the network calls before ``layer`` (and
    not to ``layer`` itself). ValueError for a layer that has no parameters."""
    target = tuple(layer.split("/"))
    leaves = _leaf_paths(params)
    own = [_within(leaf, target) for leaf in leaves]
    if not any(own):
        names = sorted({leaf[0] for leaf in leaves})
        raise ValueError(f"layer {layer!r} has no parameters; top-level modules: {names}")
    if target not in order:
        raise ValueError(f"layer {layer!r} is not a module the network calls")
    first_call = {path: i for i, path in enumerate(order)}
    rank = first_call[target]

    def called_before(leaf: tuple[str, ...]) -> bool:
        owner = leaf[:-1]  # the module that declares this parameter
        while owner and owner not in first_call:
            owner = owner[:-1]
        return bool(owner) and first_call[owner] < rank

    before = [called_before(leaf) and not o for leaf, o in zip(leaves, own, strict=True)]
    return own, before


def _dot(a: list[jax.Array], b: list[jax.Array]) -> jax.Array:
    return sum(
        jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32)) for x, y in zip(a, b, strict=True)
    )


def gradient_change(g: list[jax.Array], g2: list[jax.Array]) -> dict[str, jax.Array]:
    """||g - g2||, cos(g, g2) and ||g - g2|| / ||g|| of two gradients given as leaf lists."""
    diff = [x - y for x, y in zip(g, g2, strict=True)]
    l2 = jnp.sqrt(_dot(diff, diff))
    n1, n2 = jnp.sqrt(_dot(g, g)), jnp.sqrt(_dot(g2, g2))
    return {
        "l2": l2,
        "cos": _dot(g, g2) / jnp.maximum(n1 * n2, 1e-30),
        "rel": l2 / jnp.maximum(n1, 1e-30),
        "grad_norm": n1,
    }


def metric_prefix(layer: str) -> str:
    return layer.replace("/", ".")


class _ProbeEvaluator(Evaluator):
    """Shared parts: the fixed probe batch and the training-mode loss and gradient;
    subclasses are dataclasses with a ``batch_size`` field and set ``_batch = None``."""

    def probe_batch(self):
        if self._batch is None:
            size = self.batch_size or self.run.config.batch_size
            self._batch = next(self.run.train_batches(0, size))
        return self._batch

    def loss_and_grad(self, params, batch_stats, batch, rng):
        run = self.run

        def loss(p):
            return steps.training_loss(p, batch_stats, batch, rng, model=run.model, task=run.task)[
                0
            ]

        return jax.value_and_grad(loss)(params)

    def jit(self, fn):
        """``fn(state, batch)`` jitted over the run's mesh."""
        mesh = self.run.mesh
        return jax.jit(
            fn,
            in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
            out_shardings=parallel.replicated(mesh),
        )


def _check_batch_size(name: str, spec) -> None:
    m = spec.get("batch_size", 0)
    if not isinstance(m, int) or isinstance(m, bool) or m < 0:
        raise ValueError(f"config.evals.{name}.batch_size={m!r}: it must be >= 1 (0 = config's)")


@register("ics")
@dataclasses.dataclass
class InternalCovariateShift(_ProbeEvaluator):
    layers: Sequence[str] = ()  # module paths, e.g. ('conv3_1', 'fc1')
    batch_size: int = 0  # probe batch; 0 = config.batch_size

    @staticmethod
    def check_options(name, spec, config) -> None:
        layers = spec.get("layers", ())
        ok = isinstance(layers, list | tuple) and layers
        if not ok or not all(isinstance(v, str) and v for v in layers):
            raise ValueError(
                f"config.evals.{name}.layers={layers!r}: it must be a non-empty list of module "
                "paths whose weights are measured (e.g. ['conv3_1'])"
            )
        _check_batch_size(name, spec)

    def __post_init__(self):
        self._batch = None
        self._fn = None

    def _build(self, state):
        run = self.run
        order = module_call_order(run.model, state.variables, run.example_input())
        masks = [layer_masks(order, state.params, layer) for layer in self.layers]
        treedef = jax.tree.structure(state.params)

        def measure(state, batch):
            rng = steps.step_rng(state)
            loss, g = self.loss_and_grad(state.params, state.batch_stats, batch, rng)
            updates, _ = run.tx.update(g, state.opt_state, state.params, value=loss)
            stepped = optax.apply_updates(state.params, updates)
            p_leaves, s_leaves = jax.tree.leaves(state.params), jax.tree.leaves(stepped)
            g_leaves = jax.tree.leaves(g)
            out = {"loss": loss}
            for layer, (own, before) in zip(self.layers, masks, strict=True):
                moved = [s if b else p for p, s, b in zip(p_leaves, s_leaves, before, strict=True)]
                _, g2 = self.loss_and_grad(
                    jax.tree.unflatten(treedef, moved), state.batch_stats, batch, rng
                )
                g2_leaves = jax.tree.leaves(g2)
                mine = [x for x, o in zip(g_leaves, own, strict=True) if o]
                mine2 = [x for x, o in zip(g2_leaves, own, strict=True) if o]
                for key, value in gradient_change(mine, mine2).items():
                    out[f"{metric_prefix(layer)}_{key}"] = value
            return out

        return self.jit(measure)

    def __call__(self, state):
        if self._fn is None:
            self._fn = self._build(state)
        batch = self.probe_batch()
        out = {k: float(v) for k, v in jax.device_get(self._fn(state, batch)).items()}
        return {**out, "num_examples": len(batch["image"])}


DEFAULT_STEP_SIZES = (0.05, 0.1, 0.2, 0.3, 0.4)


@register("landscape")
@dataclasses.dataclass
class Landscape(_ProbeEvaluator):
    step_sizes: Sequence[float] = DEFAULT_STEP_SIZES
    relative_to_lr: bool = True  # eta = step size x the current learning rate
    batch_size: int = 0  # probe batch; 0 = config.batch_size

    @staticmethod
    def check_options(name, spec, config) -> None:
        sizes = spec.get("step_sizes", DEFAULT_STEP_SIZES)
        ok = isinstance(sizes, list | tuple) and sizes
        if not ok or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in sizes
        ):
            raise ValueError(
                f"config.evals.{name}.step_sizes={sizes!r}: it must be a non-empty list of "
                "positive numbers"
            )
        if not isinstance(spec.get("relative_to_lr", True), bool):
            raise ValueError(f"config.evals.{name}.relative_to_lr must be true or false")
        _check_batch_size(name, spec)

    def __post_init__(self):
        self._batch = None
        run = self.run
        sizes = jnp.asarray(self.step_sizes, jnp.float32)

        def measure(state, batch):
            rng = steps.step_rng(state)
            loss0, g = self.loss_and_grad(state.params, state.batch_stats, batch, rng)
            lr = run.schedule(state.step) * optim.plateau_scale(state.opt_state)
            etas = sizes * lr if self.relative_to_lr else sizes
            g_norm = optax.global_norm(g)

            def at(eta):
                moved = jax.tree.map(lambda p, d: p - eta * d, state.params, g)
                loss, g2 = self.loss_and_grad(moved, state.batch_stats, batch, rng)
                diff = optax.global_norm(jax.tree.map(jnp.subtract, g2, g))
                return loss, diff

            losses, diffs = jax.lax.map(at, etas)
            all_losses = jnp.concatenate([loss0[None], losses])
            return {
                "loss": loss0,
                "loss_min": jnp.min(all_losses),
                "loss_max": jnp.max(all_losses),
                "loss_range": jnp.max(all_losses) - jnp.min(all_losses),
                "grad_diff_min": jnp.min(diffs),
                "grad_diff_max": jnp.max(diffs),
                "beta": jnp.max(diffs / jnp.maximum(etas * g_norm, 1e-30)),
                "grad_norm": g_norm,
                "eta_max": jnp.max(etas),
            }

        self._fn = self.jit(measure)

    def __call__(self, state):
        batch = self.probe_batch()
        out = {k: float(v) for k, v in jax.device_get(self._fn(state, batch)).items()}
        return {**out, "num_examples": len(batch["image"])}
