"""The functions that run on the devices: TrainState, its init, one train step, one
eval step. Nothing here is model-, task- or dataset-specific: the model and the task
come in as arguments (bound with ``functools.partial`` before ``jax.jit``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from cnn_arch import norm, optim, parallel
from cnn_arch.tasks import Task


class TrainState(struct.PyTreeNode):
    """Everything a step reads and writes; a checkpoint is exactly this tree."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # base key; step k uses fold_in(rng, k), so a resumed run repeats it

    @property
    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}


def create_train_state(
    model: nn.Module, tx: optax.GradientTransformation, image_shape, seed: int, mesh
) -> TrainState:
    """Initializes params (float32) and optimizer state, replicated over ``mesh``."""

    def init():
        init_rng, rng = jax.random.split(jax.random.PRNGKey(seed))
        variables = model.init(init_rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
            rng=rng,
        )

    return jax.jit(init, out_shardings=parallel.replicated(mesh))()


def global_norm(tree) -> jax.Array:
    """The l2 norm of all of ``tree``'s leaves together, as ``optax.global_norm``, but as
    one reduction over their concatenation: XLA fuses the concatenation into the
    reduction (nothing is copied), where optax's sum of per-leaf norms is a reduction per
    leaf, each its own kernel. That was most of a small model's step overhead over a
    bare step (LeNet-5: 14 of 23 extra fusions on CPU)."""
    leaves = [x.astype(jnp.float32).ravel() for x in jax.tree.leaves(tree)]
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return jnp.sqrt(jnp.sum(jnp.square(jnp.concatenate(leaves))))


def step_rng(state: TrainState) -> jax.Array:
    """The key of the step ``state`` is about to take (dropout, noisy BN): a function of
    the seed and the step only, so a resumed run and an evaluator see the same one."""
    return jax.random.fold_in(state.rng, state.step)


def training_loss(params, batch_stats, batch, rng: jax.Array, *, model: nn.Module, task: Task):
    """The task's loss of ``model`` in training mode on ``batch`` (BN with the batch's
    statistics, dropout and other noise from ``rng`` under the name 'dropout'); returns
    ``(loss, (task_metrics, new_batch_stats))``, differentiable in ``params``."""
    variables = {"params": params, "batch_stats": batch_stats}
    outputs, new_vars = model.apply(
        variables, batch["image"], train=True, mutable=["batch_stats"], rngs={"dropout": rng}
    )
    loss, task_metrics = task.loss(outputs, batch)
    return loss, (task_metrics, new_vars.get("batch_stats", {}))


def train_step(
    state: TrainState,
    batch,
    *,
    model: nn.Module,
    task: Task,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    skip_nonfinite: bool,
    per_device_bn_mesh=None,
    trainable: Callable[[Any], Any] | None = None,
):
    """One optimizer step on a global batch; returns the new state and batch-mean metrics.

    BN statistics are those of the global batch (sync BN); with ``per_device_bn_mesh``
    each device normalizes its own shard instead (``norm.apply_per_device``).
    ``metrics['nonfinite']`` is 1 when the loss or gradient norm is inf/nan; the loop
    reads it at its log and checkpoint cadence, so no step waits for the host. With
    ``skip_nonfinite`` such an update is dropped (params, BN statistics and optimizer
    state stay as they were), as fp16 dynamic loss scaling does; the step counter still
    advances so the data moves on.

    With ``trainable`` (params -> tree of bools; ``config.trainable='head'``) only those
    parameters learn, and the network runs in inference mode: the frozen layers are a
    fixed feature extractor (BN normalizes with its running averages, which stay as
    they are; no dropout), as Keras treats a frozen BatchNormalization layer.
    """
    rng = step_rng(state)

    def loss_fn(params):
        if trainable is None and per_device_bn_mesh is None:
            return training_loss(params, state.batch_stats, batch, rng, model=model, task=task)
        variables = {"params": params, "batch_stats": state.batch_stats}
        if trainable is not None:
            outputs = model.apply(variables, batch["image"], train=False)
            batch_stats = state.batch_stats
        else:
            outputs, batch_stats = norm.apply_per_device(
                model, variables, batch["image"], mesh=per_device_bn_mesh, rngs={"dropout": rng}
            )
        loss, task_metrics = task.loss(outputs, batch)
        return loss, (task_metrics, batch_stats)

    (loss, (task_metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    if trainable is not None:  # frozen: no gradient (XLA then skips their backward pass)
        grads = jax.tree.map(lambda g, t: g if t else jnp.zeros_like(g), grads, trainable(grads))
    grad_norm = global_norm(grads)
    # value: the loss a plateau schedule watches (optim.plateau); other links ignore it
    updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss)
    new = (optax.apply_updates(state.params, updates), batch_stats, opt_state)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if skip_nonfinite:
        old = (state.params, state.batch_stats, state.opt_state)
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    params, batch_stats, opt_state = new
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
    )
    step_metrics = {
        "loss": loss,
        **task_metrics,
        "grad_norm": grad_norm,
        "learning_rate": schedule(state.step) * optim.plateau_scale(opt_state),
        "nonfinite": 1.0 - finite.astype(jnp.float32),
    }
    return new_state, step_metrics


def eval_step(variables, batch, *, predict: Callable, task: Task):
    """Summed task metrics over the real (mask=1) examples of a batch;
    ``predict(variables, images)`` is the network in inference mode."""
    return task.eval_sums(predict(variables, batch["image"]), batch)


def inference(model: nn.Module) -> Callable:
    """``predict(variables, images)`` of ``model`` in eval mode (running BN averages)."""
    return lambda variables, images: model.apply(variables, images, train=False)
