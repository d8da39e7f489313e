"""One run builder, shared by training, evaluation and restore.

``build(config)`` turns a validated config into everything a step needs: dataset
info, model, task, schedule, optimizer, step counts, and the jitted train step;
``from_workdir(workdir)`` rebuilds the same from a training workdir's ``config.json``
and restores its latest checkpoint into it. Whatever trains a model and whatever
evaluates it later therefore build the identical tree.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from jax.sharding import Mesh

from cnn_arch import checkpoint, data, finetune, models, optim, parallel, schema, steps, tasks
from cnn_arch import workdir as workdir_lib
from cnn_arch.errors import UserError
from cnn_arch.validate import validate_config


@dataclasses.dataclass(frozen=True)
class Run:
    """A config made concrete: what to train, on what, how, for how long."""

    config: ml_collections.ConfigDict
    mesh: Mesh
    info: data.DataInfo
    model: nn.Module
    task: tasks.Task
    schedule: optax.Schedule
    tx: optax.GradientTransformation
    steps_per_epoch: int
    total_steps: int
    # Module paths of the layers whose shape depends on num_classes; computed only for
    # config.init_from / config.trainable (``finetune.head_modules``).
    head: frozenset[str] = frozenset()

    def init_state(self, warm_start: bool = False, new_head: bool = True) -> steps.TrainState:
        """Fresh parameters and optimizer state (seeded by ``config.seed``), replicated.

        With ``warm_start`` and ``config.init_from`` set, that directory's params and BN
        statistics replace the fresh ones (``cnn_arch.finetune``); the head stays fresh
        where its shape differs, unless ``new_head=False`` (then that is an error too).
        """
        state = steps.create_train_state(
            self.model, self.tx, self.info.image_shape, self.config.seed, self.mesh
        )
        if warm_start and self.config.init_from:
            state = finetune.warm_start(
                state,
                self.config.init_from,
                model_name=self.config.model,
                head=self.head,
                new_head=new_head,
            )
            if self.config.trainable == "head":
                logging.info(
                    "config.trainable='head': only %s learn; the rest is frozen and runs in "
                    "inference mode.",
                    ", ".join(sorted(self.head)),
                )
        return state

    def trainable_mask(self):
        """``params -> tree of bools`` under ``config.trainable='head'``, else None."""
        return finetune.head_only(self.head) if self.config.trainable == "head" else None

    def jit_train_step(self):
        """``step(state, batch) -> (state, metrics)``, jitted over the mesh, state donated."""
        replicated, batched = parallel.replicated(self.mesh), parallel.batch_sharding(self.mesh)
        per_device = self.config.bn_statistics == "per_device"
        return jax.jit(
            functools.partial(
                steps.train_step,
                model=self.model,
                task=self.task,
                tx=self.tx,
                schedule=self.schedule,
                skip_nonfinite=self.config.on_nonfinite == "skip",
                per_device_bn_mesh=self.mesh if per_device else None,
                trainable=self.trainable_mask(),
            ),
            in_shardings=(replicated, batched),
            out_shardings=(replicated, replicated),
            donate_argnums=0,
        )

    def train_batches(self, start_step: int = 0, batch_size: int | None = None) -> Iterator:
        """Global training batches from ``start_step`` on (seeded, resumable)."""
        batch_size = batch_size or self.config.batch_size
        local = data.train_batches(
            self.config,
            self.info,
            local_batch_size=batch_size // jax.process_count(),
            start_step=start_step,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        return (parallel.global_batch(self.mesh, b) for b in local)

    def training_images(self, num_batches: int, batch_size: int | None = None, start_step=0):
        """``num_batches`` global mini-batches of training images (for Algorithm 2)."""
        for batch in itertools.islice(self.train_batches(start_step, batch_size), num_batches):
            yield batch["image"]

    def example_input(self) -> jax.Array:
        return jnp.zeros((1, *self.info.image_shape), jnp.float32)


def task_name(config) -> str:
    """``config.task``, or the task the model is registered for."""
    return config.task or models.spec(config.model).task


def total_train_steps(config, steps_per_epoch: int) -> int:
    if config.num_train_steps > 0:
        return config.num_train_steps
    return max(1, math.ceil(config.num_epochs * steps_per_epoch))


def build(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> Run:
    """Validates ``config`` and builds its run; raises UserError before compiling."""
    mesh = parallel.make_mesh() if mesh is None else mesh
    validate_config(config, device_count=mesh.devices.size)
    task = tasks.create(task_name(config), config)
    info = data.dataset_info(config, task.data_kind)
    steps_per_epoch = info.num_train // config.batch_size
    if steps_per_epoch == 0:
        raise UserError(
            f"config.batch_size={config.batch_size} is larger than the {info.num_train} "
            f"training examples of {config.dataset!r}"
        )
    total_steps = total_train_steps(config, steps_per_epoch)
    dtype = jnp.bfloat16 if config.half_precision else jnp.float32
    model = models.create(
        config.model, num_classes=info.num_classes, dtype=dtype, **config.model_kwargs
    )
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if warmup >= total_steps:
        raise UserError(
            f"config.warmup_epochs={config.warmup_epochs} is {warmup} steps, not shorter than "
            f"the run's {total_steps}: the learning rate would never reach its peak"
        )
    _check_input_fits(model, config, info.image_shape)
    schedule = optim.make_schedule(config, steps_per_epoch, total_steps)
    head = frozenset()
    if config.init_from or config.trainable == "head":
        head = finetune.head_modules(model, info.image_shape)
    trainable = finetune.head_only(head) if config.trainable == "head" else None
    tx = optim.make_optimizer(config, schedule, steps_per_epoch, trainable)
    return Run(config, mesh, info, model, task, schedule, tx, steps_per_epoch, total_steps, head)


def _check_input_fits(model: nn.Module, config, image_shape) -> None:
    """UserError when an input smaller than the model's reference leaves a layer with an
    empty output (e.g. ``image_size=1``), which would otherwise show up as a NaN loss.
    Traced abstractly (``jax.eval_shape``): nothing is compiled or computed."""
    reference = models.spec(config.model).input_shape
    if min(image_shape[:2]) >= min(reference[:2]):
        return
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    try:
        _, variables = jax.eval_shape(
            lambda x: model.init_with_output(
                jax.random.PRNGKey(0), x, train=False, capture_intermediates=True
            ),
            x,
        )
    except Exception as e:  # noqa: BLE001 - a shape error from a too-small input
        raise UserError(
            f"{config.model!r} cannot take {image_shape[0]}x{image_shape[1]} inputs "
            f"(image_size={config.image_size}): {' '.join(str(e).split())[:200]}"
        ) from None
    flat = jax.tree_util.tree_flatten_with_path(variables.get("intermediates", {}))[0]
    for path, leaf in flat:
        if 0 in leaf.shape:
            layer = "/".join(str(getattr(k, "key", k)) for k in path[:-2])
            raise UserError(
                f"{config.model!r} cannot take {image_shape[0]}x{image_shape[1]} inputs "
                f"(image_size={config.image_size}): layer {layer} has an empty output "
                f"{tuple(leaf.shape)}; its reference input is {reference[0]}x{reference[1]}"
            )


def load_config(workdir: str, **overrides: Any) -> ml_collections.ConfigDict:
    """The ``config.json`` a training run wrote into ``workdir``, on top of the schema's
    defaults (so a workdir older than a key still loads); ``None`` overrides are skipped."""
    path = workdir_lib.path(workdir) / "config.json"
    if not path.is_file():
        raise UserError(
            f"{path} does not exist: --workdir must be a folder written by the training CLI"
        )
    saved = json.loads(path.read_text())
    config = schema.default_config()
    config.update({k: v for k, v in saved.items() if k in schema.KEYS})
    for key, value in overrides.items():
        if value is not None:
            config[key] = value
    return config


def from_workdir(
    workdir: str, *, data_dir: str | None = None, mesh: Mesh | None = None
) -> tuple[Run, steps.TrainState]:
    """The run a workdir was trained with and its latest checkpoint (finished or not).

    ``data_dir`` overrides the saved one (e.g. a run trained with $TFDS_DATA_DIR).
    """
    run = build(load_config(workdir, data_dir=data_dir), mesh)
    ckpts = checkpoint.Checkpoints(
        os.path.join(workdir, "checkpoints"), run.config.keep_checkpoints
    )
    try:
        state = ckpts.restore_latest(run.init_state())
    finally:
        ckpts.close()
    if state is None:
        raise UserError(f"{workdir}/checkpoints holds no checkpoint yet; train first")
    return run, state
