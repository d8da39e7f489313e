"""Optimizers, learning-rate schedules and weight-decay masks (optax).

Every optimizer is ``chain(scale_by_<rule>, scale_by_learning_rate(schedule))`` with
weight decay inserted either before the rule ('l2': the gradient of
0.5 * wd * ||w||^2, exactly an L2 loss term) or after it ('decoupled': Loshchilov &
Hutter 2019, i.e. AdamW and its SGD counterpart).

``schedule='plateau'`` ("divide by 10 when the error plateaus": AlexNet Sec. 5, VGG
Sec. 3.1, ResNet Sec. 3.4) is the one schedule that depends on the run's own progress:
a last ``reduce_on_plateau`` link multiplies the updates by a scale that drops by
``lr_decay_factor`` when the training loss, averaged over ``plateau_window_epochs``,
has not improved by ``plateau_rtol`` for ``plateau_patience`` windows. Its counters
live in the optimizer state, so they are checkpointed with the TrainState and a
resumed run continues exactly; the train step feeds it the batch loss
(``tx.update(..., value=loss)``). The papers watched the validation error; the
training loss needs no held-out split and no host round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "exponential", "cosine", "plateau")
WEIGHT_DECAY_MODES = ("l2", "decoupled")


def base_learning_rate(config) -> float:
    """``learning_rate``, times batch_size/256 under linear scaling (Goyal et al. 2017)."""
    if config.lr_scaling == "linear":
        return config.learning_rate * config.batch_size / 256
    return config.learning_rate


def make_schedule(config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """The learning rate at each step: optional linear warmup, then ``config.schedule``."""
    lr = base_learning_rate(config)
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if config.schedule in ("constant", "plateau"):  # plateau: the scale is in the optimizer
        main = optax.constant_schedule(lr)
    elif config.schedule == "step":  # x lr_decay_factor at each epoch listed (ResNet, Sec. 3.4)
        boundaries = {
            int(e * steps_per_epoch) - warmup: config.lr_decay_factor
            for e in config.lr_decay_epochs
        }
        main = optax.piecewise_constant_schedule(lr, boundaries)
    elif config.schedule == "exponential":  # BN-Inception: decay every few epochs
        main = optax.exponential_decay(
            lr,
            transition_steps=max(1, int(config.lr_decay_every_epochs * steps_per_epoch)),
            decay_rate=config.lr_decay_factor,
            staircase=True,
        )
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps=max(1, total_steps - warmup))
    else:
        raise ValueError(f"schedule={config.schedule!r}; choose one of {SCHEDULES}")
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def decay_mask(params):
    """True for the weights weight decay applies to: kernels, not biases or norm scales."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _scale_rule(config) -> optax.GradientTransformation:
    if config.optimizer == "sgd":
        if config.momentum == 0:
            return optax.identity()
        return optax.trace(decay=config.momentum, nesterov=config.nesterov)
    if config.optimizer in ("adam", "adamw"):
        return optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2, eps=config.optimizer_eps)
    if config.optimizer == "rmsprop":
        rule = [optax.scale_by_rms(decay=config.rmsprop_decay, eps=config.optimizer_eps)]
        if config.momentum:
            rule.append(optax.trace(decay=config.momentum, nesterov=config.nesterov))
        return optax.chain(*rule)
    raise ValueError(f"optimizer={config.optimizer!r}; choose one of {OPTIMIZERS}")


def plateau(config, steps_per_epoch: int) -> optax.GradientTransformationExtraArgs:
    """Scales updates by a factor that drops x``lr_decay_factor`` on a loss plateau.

    ``update(..., value=loss)`` feeds it one loss per step; without ``value`` (e.g. a
    benchmark's update) it applies the current scale and leaves its counters alone."""
    inner = optax.contrib.reduce_on_plateau(
        factor=config.lr_decay_factor,
        patience=config.plateau_patience,
        rtol=config.plateau_rtol,
        accumulation_size=max(1, round(config.plateau_window_epochs * steps_per_epoch)),
    )

    def update(updates, state, params=None, *, value=None, **extra):
        if value is None:
            return jax.tree.map(lambda u: state.scale * u, updates), state
        return inner.update(updates, state, params, value=value)

    return optax.GradientTransformationExtraArgs(inner.init, update)


def plateau_scale(opt_state) -> jax.Array | float:
    """The plateau schedule's current multiplier of the learning rate (1.0 without one)."""
    leaves = jax.tree.leaves(
        opt_state, is_leaf=lambda x: isinstance(x, optax.contrib.ReduceLROnPlateauState)
    )
    for leaf in leaves:
        if isinstance(leaf, optax.contrib.ReduceLROnPlateauState):
            return leaf.scale
    return 1.0


def make_optimizer(
    config,
    schedule: optax.Schedule,
    steps_per_epoch: int = 1,
    trainable: Callable[[Any], Any] | None = None,
) -> optax.GradientTransformation:
    """The optimizer chain; ``steps_per_epoch`` sets the plateau schedule's window. With
    ``trainable`` (params -> tree of bools) the other parameters get zero updates (no
    weight decay either) and keep no optimizer state."""
    mode = "decoupled" if config.optimizer == "adamw" else config.weight_decay_mode
    parts = [_scale_rule(config)]
    if config.weight_decay:
        mask = None if config.weight_decay_on_norm_and_bias else decay_mask
        decay = optax.add_decayed_weights(config.weight_decay, mask=mask)
        parts.insert(0 if mode == "l2" else 1, decay)
    parts.append(optax.scale_by_learning_rate(schedule))
    if config.schedule == "plateau":
        parts.append(plateau(config, steps_per_epoch))
    tx = optax.chain(*parts)
    if trainable is None:
        return tx

    def labels(params):
        return jax.tree.map(lambda t: "train" if t else "frozen", trainable(params))

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
