"""Checks a config before anything is compiled: one clear sentence per mistake."""

from __future__ import annotations

import numbers

import jax

from cnn_arch import models, optim
from cnn_arch.errors import UserError

CHOICES = {
    "optimizer": optim.OPTIMIZERS,
    "schedule": optim.SCHEDULES,
    "weight_decay_mode": optim.WEIGHT_DECAY_MODES,
    "lr_scaling": ("none", "linear"),
    "augment": ("default", "none"),
    "on_nonfinite": ("stop", "skip"),
    "bn_statistics": ("global", "per_device"),
}
POSITIVE = (
    "batch_size",
    "eval_batch_size",
    "learning_rate",
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "shuffle_buffer",
    "image_size",
    "lr_decay_factor",
    "lr_decay_every_epochs",
)
NON_NEGATIVE = ("weight_decay", "warmup_epochs", "label_smoothing", "momentum", "seed")
POSITIVE_OR_MINUS_ONE = ("num_train_steps", "steps_per_eval", "num_classes")


def _fail(key: str, value, allowed: str):
    raise UserError(f"config.{key}={value!r} is not allowed: {allowed}")


def validate_config(config, device_count: int | None = None) -> None:
    """Raises UserError naming the first key whose value cannot work."""
    if config.model not in models.names():
        _fail("model", config.model, f"choose one of {', '.join(models.names())}")
    for key, allowed in CHOICES.items():
        if config[key] not in allowed:
            _fail(key, config[key], f"choose one of {', '.join(allowed)}")
    for key in POSITIVE:
        if not isinstance(config[key], numbers.Number) or not config[key] > 0:
            _fail(key, config[key], "it must be a number > 0")
    for key in NON_NEGATIVE:
        if not isinstance(config[key], numbers.Number) or config[key] < 0:
            _fail(key, config[key], "it must be a number >= 0")
    for key in POSITIVE_OR_MINUS_ONE:
        if config[key] != -1 and not config[key] > 0:
            _fail(key, config[key], "it must be > 0, or -1 for the default")
    if config.num_train_steps == -1 and not config.num_epochs > 0:
        _fail("num_epochs", config.num_epochs, "it must be > 0 when num_train_steps is -1")
    if not config.momentum < 1:
        _fail("momentum", config.momentum, "it must be in [0, 1)")
    if not config.label_smoothing < 1:
        _fail("label_smoothing", config.label_smoothing, "it must be in [0, 1)")
    if config.schedule == "step" and not config.lr_decay_epochs:
        _fail("lr_decay_epochs", config.lr_decay_epochs, "schedule='step' needs epochs to decay at")
    device_count = jax.device_count() if device_count is None else device_count
    for key in ("batch_size", "eval_batch_size"):
        if config[key] % device_count:
            _fail(key, config[key], f"it must be divisible by the {device_count} devices")
    try:
        models.create(config.model, num_classes=10, **config.model_kwargs)
    except ValueError as e:
        raise UserError(f"config.model_kwargs: {e}") from None
