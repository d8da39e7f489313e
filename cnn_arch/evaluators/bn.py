"""BatchNorm at inference: Algorithm 2's population statistics and folded BN.

``population`` re-estimates every BN layer's mean and unbiased variance over N training
mini-batches of the trained network (Ioffe & Szegedy 2015, Alg. 2 step 10) and
evaluates with them; the training state is not touched. ``folded`` evaluates the
BN-free network whose BN layers are folded into the preceding conv/dense layer, with
the running averages or with population statistics.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from cnn_arch import parallel, steps
from cnn_arch.evaluators.base import Evaluator, evaluate_split, jit_eval_step, register
from cnn_arch.norm.fold import FoldedModel, fold_batch_norm
from cnn_arch.norm.population import population_statistics


def _check_batches(name: str, spec) -> None:
    n = spec.get("num_batches", 100)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"config.evals.{name}.num_batches={n!r}: it must be an integer >= 1")
    m = spec.get("batch_size", 0)
    if not isinstance(m, int) or m < 0:
        raise ValueError(f"config.evals.{name}.batch_size={m!r}: it must be >= 1 (0 = config's)")


def reestimate(
    run, state, *, num_batches: int, batch_size: int = 0, start_step: int = 0, apply_fn=None
):
    """The ``batch_stats`` of Algorithm 2: population mean and unbiased variance of every
    BN layer over ``num_batches`` training mini-batches (the normal seeded, augmented
    pipeline from ``start_step``), replicated over the mesh. The network runs in training
    mode with a fixed dropout key, so BN sees the activations it saw while training.
    Pass the same ``apply_fn`` (``train_mode_apply(run)``) to reuse the compiled pass."""
    if not jax.tree.leaves(state.batch_stats):
        raise ValueError(
            f"model {run.config.model!r} with model_kwargs {run.config.model_kwargs.to_dict()} "
            "has no BatchNorm statistics to re-estimate"
        )
    apply_fn = apply_fn or train_mode_apply(run)
    images = run.training_images(num_batches, batch_size or None, start_step)
    variables = population_statistics(apply_fn, state.variables, images)
    return jax.device_put(variables["batch_stats"], parallel.replicated(run.mesh))


def train_mode_apply(run):
    """The model in training mode (batch statistics) with a fixed dropout key."""
    return functools.partial(
        run.model.apply,
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": jax.random.PRNGKey(run.config.seed)},
    )


@register("population")
@dataclasses.dataclass
class Population(Evaluator):
    num_batches: int = 100  # N of Algorithm 2
    batch_size: int = 0  # m; 0 = config.batch_size
    start_step: int = 0  # the training step whose batch comes first
    split: str = ""

    @staticmethod
    def check_options(name, spec, config) -> None:
        _check_batches(name, spec)

    def __post_init__(self):
        self._predict = steps.inference(self.run.model)
        self._eval_fn = jit_eval_step(self.run, self._predict)
        self._apply = train_mode_apply(self.run)  # one callable: its compiled pass is reused
        self.last_batch_stats: Any = None  # for callers that want the statistics too

    def __call__(self, state):
        stats = reestimate(
            self.run,
            state,
            num_batches=self.num_batches,
            batch_size=self.batch_size,
            start_step=self.start_step,
            apply_fn=self._apply,
        )
        self.last_batch_stats = stats
        return evaluate_split(
            self.run,
            self._predict,
            {"params": state.params, "batch_stats": stats},
            split=self.split or None,
            eval_fn=self._eval_fn,
        )


def fold(run, variables) -> FoldedModel:
    """The BN-free network: every BN folded into its conv/dense layer."""
    return fold_batch_norm(run.model, variables, run.example_input())


@register("folded")
@dataclasses.dataclass
class Folded(Evaluator):
    statistics: str = "running"  # or 'population' (then num_batches/batch_size apply)
    num_batches: int = 100
    batch_size: int = 0
    split: str = ""

    @staticmethod
    def check_options(name, spec, config) -> None:
        stats = spec.get("statistics", "running")
        if stats not in ("running", "population"):
            raise ValueError(
                f"config.evals.{name}.statistics={stats!r}: choose one of running, population"
            )
        _check_batches(name, spec)

    def __post_init__(self):
        self._apply = train_mode_apply(self.run)
        self.last_folded: FoldedModel | None = None

    def __call__(self, state):
        batch_stats = state.batch_stats
        if self.statistics == "population":
            batch_stats = reestimate(
                self.run,
                state,
                num_batches=self.num_batches,
                batch_size=self.batch_size,
                apply_fn=self._apply,
            )
        folded = fold(self.run, {"params": state.params, "batch_stats": batch_stats})
        self.last_folded = folded
        variables = jax.device_put(folded.variables, parallel.replicated(self.run.mesh))
        return evaluate_split(self.run, folded.apply, variables, split=self.split or None)


def _bn_nodes(batch_stats: Any) -> dict[str, dict]:
    """'conv1_norm' (or 'block/bn') -> {'mean': ..., 'var': ...} for every BN layer."""
    leaves = jax.tree_util.tree_flatten_with_path(
        batch_stats, is_leaf=lambda n: isinstance(n, dict) and "mean" in n
    )[0]
    return {"/".join(str(k.key) for k in path): node for path, node in leaves}


def layer_shifts(running: Any, population: Any, epsilon: float = 1e-5) -> dict[str, dict]:
    """Per BN layer, how far the running averages are from the population statistics:
    mean |mu_run - mu_pop| / sqrt(var_pop + eps) and mean var_run / var_pop over features."""
    running = _bn_nodes(running)
    out = {}
    for name, pop in _bn_nodes(population).items():
        mu_r, var_r = (np.asarray(running[name][k], np.float64) for k in ("mean", "var"))
        mu_p, var_p = (np.asarray(pop[k], np.float64) for k in ("mean", "var"))
        out[name] = {
            "features": int(mu_p.size),
            "mean_shift_in_std": float(np.mean(np.abs(mu_r - mu_p) / np.sqrt(var_p + epsilon))),
            "var_ratio": float(np.mean((var_r + epsilon) / (var_p + epsilon))),
        }
    return out
