"""The Evaluator interface, its registry, and exact evaluation over a split."""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from cnn_arch import data, metrics, parallel, steps

# Options every evaluator takes; the rest are its constructor's keyword arguments.
COMMON = ("kind", "every_steps")


@dataclasses.dataclass
class Evaluator:
    """Measures a train state. ``__call__(state) -> {metric: float}``."""

    name: str
    run: Any  # cnn_arch.run.Run
    every_steps: int = -1  # -1 = config.steps_per_eval

    def __call__(self, state: steps.TrainState) -> dict[str, float]:
        raise NotImplementedError

    @staticmethod
    def check_options(name: str, spec, config) -> None:
        """ValueError when an option of ``config.evals[name]`` cannot work."""

    def period(self, steps_per_epoch: int) -> int:
        if self.every_steps > 0:
            return self.every_steps
        c = self.run.config.steps_per_eval
        return c if c > 0 else steps_per_epoch


_REGISTRY: dict[str, type[Evaluator]] = {}


def register(kind: str):
    def wrap(cls):
        if kind in _REGISTRY:
            raise ValueError(f"evaluator kind {kind!r} is registered twice")
        _REGISTRY[kind] = cls
        return cls

    return wrap


def kinds() -> list[str]:
    return sorted(_REGISTRY)


def _options(cls) -> list[str]:
    params = inspect.signature(cls).parameters
    return [p for p in params if p not in ("name", "run", "every_steps")]


def check(evals: ml_collections.ConfigDict, config) -> None:
    """ValueError naming the first evaluator entry that cannot be built."""
    if not evals:
        raise ValueError("config.evals is empty; keep at least {'eval': {'kind': 'running'}}")
    for name, spec in evals.items():
        if not isinstance(spec, dict | ml_collections.ConfigDict) or "kind" not in spec:
            raise ValueError(f"config.evals.{name} must be a dict with a 'kind'")
        if spec["kind"] not in _REGISTRY:
            raise ValueError(
                f"config.evals.{name}.kind={spec['kind']!r} is not known; choose one of "
                f"{', '.join(kinds())}"
            )
        allowed = _options(_REGISTRY[spec["kind"]])
        extra = sorted(set(spec.keys()) - set(allowed) - set(COMMON))
        if extra:
            raise ValueError(
                f"config.evals.{name} has unknown options {extra}; kind {spec['kind']!r} "
                f"takes {allowed + ['every_steps']}"
            )
        every = spec.get("every_steps", -1)
        if not isinstance(every, int) or not (every == -1 or every > 0):
            raise ValueError(f"config.evals.{name}.every_steps={every!r}: it must be > 0 or -1")
        _REGISTRY[spec["kind"]].check_options(name, spec, config)


def build(name: str, spec, run) -> Evaluator:
    spec = dict(spec)
    cls = _REGISTRY[spec.pop("kind")]
    return cls(name=name, run=run, **spec)


def build_all(run, evals=None) -> list[Evaluator]:
    """The evaluators ``evals`` (default ``run.config.evals``) names, built for ``run``."""
    evals = run.config.evals if evals is None else evals
    return [build(name, spec, run) for name, spec in evals.items()]


def padded_batch_size(batch_size: int, mesh) -> int:
    """``batch_size`` rounded up to a multiple of the devices: eval pads anyway."""
    n = mesh.devices.size
    return math.ceil(batch_size / n) * n


def evaluate_split(
    run, predict: Callable, variables: Any, *, split: str | None = None, eval_fn=None
) -> dict[str, float]:
    """Exact metrics of ``predict(variables, images)`` over a whole split (default the
    config's ``eval_split``): every example counts once; the last batch is padded and
    masked. ``eval_fn`` is a jitted ``eval_step`` to reuse between calls."""
    config = run.config
    if split is not None and split != config.eval_split:
        config = ml_collections.ConfigDict(config.to_dict())
        config.eval_split = split
    if eval_fn is None:
        eval_fn = jit_eval_step(run, predict)
    global_batch = padded_batch_size(config.eval_batch_size, run.mesh)
    totals = None
    for batch in data.eval_batches(
        config,
        run.info if split is None else data.dataset_info(config, run.task.data_kind),
        local_batch_size=global_batch // jax.process_count(),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    ):
        sums = eval_fn(variables, parallel.global_batch(run.mesh, batch))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    return metrics.averages(jax.device_get(totals))


def jit_eval_step(run, predict: Callable):
    replicated, batched = parallel.replicated(run.mesh), parallel.batch_sharding(run.mesh)
    return jax.jit(
        lambda variables, batch: steps.eval_step(variables, batch, predict=predict, task=run.task),
        in_shardings=(replicated, batched),
        out_shardings=replicated,
    )
