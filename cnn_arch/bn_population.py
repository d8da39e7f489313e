"""Algorithm 2 on a trained workdir: restore, re-estimate BN population statistics, evaluate.

The training loop keeps exponential running averages of every BN layer's mean and
variance; Algorithm 2 (Ioffe & Szegedy 2015, step 10) instead uses the population
statistics E[x] = E_B[mu_B], Var[x] = m/(m-1) E_B[sigma2_B] over N training
mini-batches of the *trained* network. This module loads a workdir written by
``cnn_arch.train`` (its ``config.json`` and latest checkpoint), re-estimates those
statistics with ``population_statistics`` over the normal training pipeline, and
evaluates the test split three ways: running averages (the network as trained),
population statistics, and the BN-free network folded from the population statistics.

It drives the training stack (data, models, checkpoints), which is why it sits next
to ``train.py`` rather than inside the ``cnn_arch.norm`` primitives.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from cnn_arch import checkpoint, data, metrics, parallel, train
from cnn_arch.errors import UserError
from cnn_arch.norm.fold import FoldedModel, fold_batch_norm
from cnn_arch.norm.population import population_statistics
from cnn_arch.validate import validate_config


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A workdir's config, dataset info, model and restored ``TrainState``."""

    workdir: str
    config: ml_collections.ConfigDict
    info: data.DataInfo
    model: nn.Module
    state: train.TrainState
    mesh: Mesh

    @property
    def variables(self) -> dict[str, Any]:
        """The network as trained: parameters and the BN running averages."""
        return {"params": self.state.params, "batch_stats": self.state.batch_stats}

    @property
    def step(self) -> int:
        return int(self.state.step)


def _defaults() -> ml_collections.ConfigDict | None:
    """``configs/base.py``'s defaults when the project root is importable, else None."""
    try:
        from configs import base
    except ImportError:
        return None
    return base.get_config()


def load_config(workdir: str, **overrides: Any) -> ml_collections.ConfigDict:
    """The ``config.json`` a training run wrote into ``workdir``; ``None`` overrides are skipped.

    Keys added to ``configs/base.py`` after the run was trained get their defaults, so
    an older workdir still loads.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise UserError(
            f"{path} does not exist: --workdir must be a folder written by the training CLI"
        )
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    defaults = _defaults()
    for key in defaults.keys() if defaults is not None else ():
        if key not in config:
            config[key] = defaults[key]
    for key, value in overrides.items():
        if value is not None:
            config[key] = value
    return config


def load_trained(workdir: str, *, data_dir: str | None = None, mesh: Mesh | None = None):
    """Restores the latest checkpoint of ``workdir`` (finished or still training).

    The train state is rebuilt from the saved config by ``train.setup``, as
    ``train_and_evaluate`` builds it, so the checkpoint restores into the same tree.
    ``data_dir`` overrides the config's (e.g. a run trained with $TFDS_DATA_DIR).
    """
    config = load_config(workdir, data_dir=data_dir)
    mesh = parallel.make_mesh() if mesh is None else mesh
    validate_config(config, device_count=mesh.devices.size)
    info = data.dataset_info(config)
    run = train.setup(config, info, mesh)
    ckpts = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
    try:
        state = ckpts.restore_latest(run.state)
    finally:
        ckpts.close()
    if state is None:
        raise UserError(f"{workdir}/checkpoints holds no checkpoint yet; train first")
    return TrainedRun(os.path.abspath(workdir), config, info, run.model, state, mesh)


def training_images(
    run: TrainedRun, *, num_batches: int, batch_size: int | None = None, start_step: int = 0
) -> Iterator[jax.Array]:
    """``num_batches`` global training mini-batches of images, from the normal (seeded,
    augmented) training pipeline starting at ``start_step``; deterministic."""
    batch_size = batch_size or run.config.batch_size
    if batch_size % jax.process_count():
        raise UserError(f"batch_size={batch_size} must divide over {jax.process_count()} hosts")
    batches = data.train_batches(
        run.config,
        run.info,
        local_batch_size=batch_size // jax.process_count(),
        start_step=start_step,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    for batch in itertools.islice(batches, num_batches):
        yield parallel.global_batch(run.mesh, {"image": batch["image"]})["image"]


def reestimate(
    run: TrainedRun, *, num_batches: int = 100, batch_size: int | None = None, start_step: int = 0
) -> Any:
    """Algorithm 2, step 10: the ``batch_stats`` tree with every BN layer's population
    mean and unbiased variance over ``num_batches`` training mini-batches.

    The network runs in training mode; a model with dropout gets a fixed dropout key,
    so the statistics are those of the activations BN saw while training.
    """
    if num_batches < 1:
        raise UserError(f"num_batches={num_batches} must be >= 1")
    apply_fn = functools.partial(
        run.model.apply,
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": jax.random.PRNGKey(run.config.seed)},
    )
    images = training_images(
        run, num_batches=num_batches, batch_size=batch_size, start_step=start_step
    )
    variables = population_statistics(apply_fn, run.variables, images)
    return jax.device_put(variables["batch_stats"], parallel.replicated(run.mesh))


def evaluate(run: TrainedRun, batch_stats: Any | None = None) -> dict[str, float]:
    """Test-split metrics of the trained parameters with ``batch_stats`` (default: the
    running averages), through the training loop's own ``eval_step``."""
    state = run.state if batch_stats is None else run.state.replace(batch_stats=batch_stats)
    eval_fn = jax.jit(functools.partial(train.eval_step, model=run.model))
    return train.evaluate(eval_fn, state, run.config, run.info, run.mesh)


def fold(run: TrainedRun, batch_stats: Any) -> FoldedModel:
    """The BN-free network: every BN folded into its conv/dense layer with ``batch_stats``."""
    example = jnp.zeros((1, *run.info.image_shape), jnp.float32)
    return fold_batch_norm(run.model, {**run.variables, "batch_stats": batch_stats}, example)


def evaluate_folded(run: TrainedRun, folded: FoldedModel) -> dict[str, float]:
    """Test-split metrics of a folded network (same split, batching and masking)."""

    def eval_fn(variables, batch):
        logits = folded.apply(variables, batch["image"])
        return metrics.summed_metrics(logits, batch["label"], batch["mask"])

    variables = jax.device_put(folded.variables, parallel.replicated(run.mesh))
    return train.evaluate(jax.jit(eval_fn), variables, run.config, run.info, run.mesh)


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


def compare(
    run: TrainedRun, *, num_batches: int = 100, batch_size: int | None = None, start_step: int = 0
) -> dict[str, Any]:
    """Running averages vs population statistics vs folded network on the test split."""
    if not jax.tree.leaves(run.state.batch_stats):
        raise UserError(
            f"model {run.config.model!r} with model_kwargs {run.config.model_kwargs.to_dict()} "
            "has no BatchNorm statistics (train it with model_kwargs.norm='batch')"
        )
    batch_size = batch_size or run.config.batch_size
    running = evaluate(run)
    population_stats = reestimate(
        run, num_batches=num_batches, batch_size=batch_size, start_step=start_step
    )
    population = evaluate(run, population_stats)
    folded = fold(run, population_stats)
    folded_metrics = evaluate_folded(run, folded)
    return {
        "workdir": run.workdir,
        "checkpoint_step": run.step,
        "model": run.config.model,
        "model_kwargs": run.config.model_kwargs.to_dict(),
        "dataset": run.config.dataset,
        "eval_split": run.config.eval_split,
        "num_batches": num_batches,
        "batch_size": batch_size,
        "start_step": start_step,
        "running_average": running,
        "population": population,
        "folded": folded_metrics,
        "top1_population_minus_running": population["top1"] - running["top1"],
        "errors_population_minus_running": _errors(population) - _errors(running),
        "folded_pairs": [list(p) for p in folded.pairs],
        "unfolded": list(folded.unfolded),
        "layers": layer_shifts(run.state.batch_stats, population_stats),
    }


def _errors(result: dict[str, float]) -> int:
    """Misclassified test examples (top-1)."""
    return round((1.0 - result["top1"]) * result["num_examples"])


def format_table(report: dict[str, Any]) -> str:
    """The three rows (running averages, population statistics, folded) as text."""
    rows = [
        ("running averages (as trained)", report["running_average"]),
        (
            f"population stats (N={report['num_batches']}, m={report['batch_size']})",
            report["population"],
        ),
        ("folded (BN-free, population)", report["folded"]),
    ]
    width = max(len(name) for name, _ in rows)
    n = report["running_average"]["num_examples"]
    lines = [
        f"{report['model']} {report['model_kwargs']} on {report['dataset']} "
        f"{report['eval_split']} ({n} examples), checkpoint step {report['checkpoint_step']}",
        f"{'':{width}}  {'loss':>8}  {'top-1':>8}  {'errors':>6}",
    ]
    for name, m in rows:
        lines.append(f"{name:{width}}  {m['loss']:8.4f}  {100 * m['top1']:7.2f}%  {_errors(m):6d}")
    fewer = -report["errors_population_minus_running"]
    lines.append(
        f"top-1 population - running: {100 * report['top1_population_minus_running']:+.2f} "
        f"points ({abs(fewer)} {'fewer' if fewer >= 0 else 'more'} test errors)"
    )
    return "\n".join(lines)
