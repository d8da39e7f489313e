"""The training loop: TrainState, train_step, eval_step and train_and_evaluate().

One jitted step over a device Mesh: the batch is sharded over 'data', the state is
replicated and donated. Nothing here is model- or dataset-specific.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import threading
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import struct

from cnn_arch import checkpoint, data, metrics, models, norm, optim, parallel
from cnn_arch.errors import Diverged, Preempted, UserError
from cnn_arch.validate import validate_config

# Weight of each auxiliary classifier's loss (GoogLeNet, Szegedy et al. 2014, Sec. 5).
AUX_LOSS_WEIGHT = 0.3


class TrainState(struct.PyTreeNode):
    """Everything a step reads and writes; a checkpoint is exactly this tree."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # base key; step k uses fold_in(rng, k), so a resumed run repeats it


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


def _logits_and_aux(outputs):
    """Models with auxiliary heads return (main, aux1, ...) in training."""
    if isinstance(outputs, tuple):
        return outputs[0], outputs[1:]
    return outputs, ()


def train_step(
    state: TrainState,
    batch,
    *,
    model,
    tx,
    schedule,
    label_smoothing: float,
    skip_nonfinite: bool,
    per_device_bn_mesh=None,
):
    """One optimizer step on a global batch; returns the new state and batch-mean metrics.

    BN statistics are those of the global batch (sync BN); with ``per_device_bn_mesh``
    each device normalizes its own shard instead (``norm.apply_per_device``).
    With ``skip_nonfinite`` an update whose loss or gradient norm is inf/nan is dropped
    (params, BN statistics and optimizer state stay as they were), as fp16 dynamic loss
    scaling does; the step counter still advances so the data moves on.
    """
    step_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        rngs = {"dropout": step_rng}
        if per_device_bn_mesh is not None:
            outputs, batch_stats = norm.apply_per_device(
                model, variables, batch["image"], mesh=per_device_bn_mesh, rngs=rngs
            )
        else:
            outputs, new_vars = model.apply(
                variables, batch["image"], train=True, mutable=["batch_stats"], rngs=rngs
            )
            batch_stats = new_vars.get("batch_stats", {})
        logits, aux = _logits_and_aux(outputs)
        logits, labels, _ = metrics.per_pixel(logits, batch["label"])
        loss = metrics.cross_entropy(logits, labels, label_smoothing).mean()
        for aux_logits in aux:
            loss += AUX_LOSS_WEIGHT * metrics.cross_entropy(aux_logits, labels).mean()
        return loss, (logits, labels, batch_stats)

    (loss, (logits, labels, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
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
        "top1": metrics.correct_topk(logits, labels, 1).mean(),
        "grad_norm": grad_norm,
        "learning_rate": schedule(state.step),
        "nonfinite": 1.0 - finite.astype(jnp.float32),
    }
    return new_state, step_metrics


def eval_step(state: TrainState, batch, *, model):
    """Summed loss / top-1 / top-5 / count over the real (mask=1) examples of a batch."""
    logits = model.apply(
        {"params": state.params, "batch_stats": state.batch_stats}, batch["image"], train=False
    )
    return metrics.summed_metrics(logits, batch["label"], batch["mask"])


def evaluate(eval_fn, state, config, info, mesh) -> dict[str, float]:
    """Runs ``eval_fn`` over the whole eval split; returns per-example averages."""
    local = config.eval_batch_size // jax.process_count()
    totals = None
    for batch in data.eval_batches(
        config,
        info,
        local_batch_size=local,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    ):
        sums = eval_fn(state, parallel.global_batch(mesh, batch))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    result = metrics.averages(jax.device_get(totals))
    result["num_examples"] = int(jax.device_get(totals["count"]))
    return result


def build_model(config, num_classes: int) -> nn.Module:
    dtype = jnp.bfloat16 if config.half_precision else jnp.float32
    return models.create(config.model, num_classes=num_classes, dtype=dtype, **config.model_kwargs)


def total_train_steps(config, steps_per_epoch: int) -> int:
    if config.num_train_steps > 0:
        return config.num_train_steps
    return max(1, math.ceil(config.num_epochs * steps_per_epoch))


def _format_eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class StopSignals:
    """Records SIGTERM/SIGINT during training instead of dying, so the loop can commit a
    checkpoint of the current step first (preemptible TPUs send SIGTERM)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def _record(self, signum, frame):
        del frame
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _prepare_workdir(workdir: str) -> None:
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"--workdir={workdir} is a file, not a directory; choose another path")
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_test_{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise UserError(f"--workdir={workdir} is not writable ({e.strerror or e})") from None


def _mean_metrics(window: list[dict]) -> dict[str, float]:
    stacked = jax.device_get(window)
    return {k: float(np.mean([m[k] for m in stacked])) for k in stacked[0]}


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a config builds before training: the model, optimizer and fresh state."""

    model: nn.Module
    schedule: optax.Schedule
    tx: optax.GradientTransformation
    state: TrainState
    steps_per_epoch: int
    total_steps: int


def setup(config, info: data.DataInfo, mesh) -> Setup:
    """Model, schedule, optimizer and initial state for ``config`` on dataset ``info``."""
    steps_per_epoch = info.num_train // config.batch_size
    if steps_per_epoch == 0:
        raise UserError(
            f"config.batch_size={config.batch_size} is larger than the {info.num_train} "
            f"training examples of {config.dataset!r}"
        )
    total_steps = total_train_steps(config, steps_per_epoch)
    model = build_model(config, info.num_classes)
    schedule = optim.make_schedule(config, steps_per_epoch, total_steps)
    tx = optim.make_optimizer(config, schedule)
    state = create_train_state(model, tx, info.image_shape, config.seed, mesh)
    return Setup(model, schedule, tx, state, steps_per_epoch, total_steps)


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, mesh=None
) -> dict[str, float]:
    """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and
    returns the final eval metrics.

    Raises UserError for a bad config, dataset or workdir; Diverged when the loss or
    gradient norm becomes non-finite (nothing non-finite is saved); Preempted after
    committing a checkpoint when SIGTERM/SIGINT arrives.
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    validate_config(config, device_count=mesh.devices.size)
    info = data.dataset_info(config, models.spec(config.model).task)
    run = setup(config, info, mesh)
    _prepare_workdir(workdir)
    model, state, total_steps = run.model, run.state, run.total_steps
    eval_every = config.steps_per_eval if config.steps_per_eval > 0 else run.steps_per_epoch

    ckpts = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
    try:
        restored = ckpts.restore_latest(state)
    except UserError:
        ckpts.close()  # a checkpoint of another model: stop Orbax's threads before exiting
        raise
    if restored is not None:
        state = restored
        logging.info("Resumed from %s at step %d.", ckpts.directory, int(state.step))
    start_step = int(state.step)
    final_path = os.path.join(workdir, "final_eval.json")
    if start_step >= total_steps:
        logging.info(
            "Training already finished (step %d of %d); nothing to do.", start_step, total_steps
        )
        ckpts.close()
        if not os.path.exists(final_path):
            return {}
        with open(final_path) as f:
            return json.load(f)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))

    replicated, batched = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    p_train = jax.jit(
        functools.partial(
            train_step,
            model=model,
            tx=run.tx,
            schedule=run.schedule,
            label_smoothing=config.label_smoothing,
            skip_nonfinite=config.on_nonfinite == "skip",
            per_device_bn_mesh=mesh if config.bn_statistics == "per_device" else None,
        ),
        in_shardings=(replicated, batched),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    p_eval = jax.jit(
        functools.partial(eval_step, model=model),
        in_shardings=(replicated, batched),
        out_shardings=replicated,
    )
    train_iter = data.train_batches(
        config,
        info,
        local_batch_size=config.batch_size // jax.process_count(),
        start_step=start_step,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    logging.info(
        "Training %s on %s: %d steps (%d per epoch), global batch %d on %d devices.",
        config.model,
        config.dataset,
        total_steps,
        run.steps_per_epoch,
        config.batch_size,
        mesh.devices.size,
    )

    last_saved = ckpts.latest_step()
    unchecked: tuple[int, dict] | None = None  # a step whose loss the host has not seen yet

    def check_finite() -> None:
        """Stops on the first non-finite step, keeping the last finite checkpoint."""
        nonlocal unchecked
        if unchecked is None or config.on_nonfinite == "skip":
            unchecked = None
            return
        step, m = unchecked
        unchecked = None
        loss, grad_norm = float(m["loss"]), float(m["grad_norm"])
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            ckpts.wait()
            good = ckpts.path(last_saved) if last_saved is not None else "none (no checkpoint yet)"
            raise Diverged(
                f"training diverged at step {step}: loss={loss}, grad_norm={grad_norm}; "
                f"the last good checkpoint is {good}; lower config.learning_rate or set "
                "config.on_nonfinite='skip'"
            )

    writer = metrics.Writer(workdir)
    window: list[dict] = []
    t_window = time.perf_counter()
    eval_result: dict[str, float] = {}
    try:
        with StopSignals() as stop:
            for step in range(start_step + 1, total_steps + 1):
                batch = parallel.global_batch(mesh, next(train_iter))
                if step == start_step + 1:
                    t0 = time.perf_counter()
                    p_train = p_train.lower(state, batch).compile()
                    logging.info("Compiled the train step in %.1f s.", time.perf_counter() - t0)
                    t_window = time.perf_counter()
                state, step_metrics = p_train(state, batch)
                check_finite()  # the previous step: one step stays in flight on the device
                unchecked = (step, step_metrics)
                window.append(step_metrics)

                if step % config.log_every_steps == 0 or step == total_steps:
                    check_finite()
                    summary = _mean_metrics(window)
                    summary["steps_per_sec"] = len(window) / (time.perf_counter() - t_window)
                    summary["images_per_sec"] = summary["steps_per_sec"] * config.batch_size
                    writer.write(step, "train", summary)
                    logging.info(
                        "step %d/%d | loss %.4f | top1 %.2f%% | %.1f steps/s | %.0f img/s | ETA %s",
                        step,
                        total_steps,
                        summary["loss"],
                        100 * summary["top1"],
                        summary["steps_per_sec"],
                        summary["images_per_sec"],
                        _format_eta((total_steps - step) / summary["steps_per_sec"]),
                    )
                    window, t_window = [], time.perf_counter()

                if step % eval_every == 0 or step == total_steps:
                    check_finite()
                    eval_result = evaluate(p_eval, state, config, info, mesh)
                    writer.write(step, "eval", eval_result)
                    logging.info(
                        "eval at step %d | loss %.4f | top1 %.2f%% | top5 %.2f%% (%d %s)",
                        step,
                        eval_result["loss"],
                        100 * eval_result["top1"],
                        100 * eval_result["top5"],
                        eval_result["num_examples"],
                        "pixels" if info.task == "segmentation" else "examples",
                    )
                    t_window = time.perf_counter()  # eval time is not training throughput

                preempted = stop.received or (
                    jax.process_count() > 1 and ckpts.reached_preemption(step)
                )
                if step % config.checkpoint_every_steps == 0 or step == total_steps or preempted:
                    check_finite()
                    ckpts.save(step, state)
                    last_saved = step
                if preempted:
                    ckpts.wait()
                    raise Preempted(
                        f"preempted ({stop.received or 'preemption notice'}) at step {step}; "
                        f"checkpoint {ckpts.path(step)} is committed; rerun the same command "
                        "to resume"
                    )
        ckpts.wait()
    finally:
        ckpts.close()
        writer.close()
    if jax.process_index() == 0:
        with open(final_path, "w") as f:
            json.dump(eval_result, f)
    return eval_result
