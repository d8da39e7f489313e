"""Checks a config before anything is compiled: one clear sentence per mistake.

Each key's own constraint is declared in ``cnn_arch.schema``; the checks here relate
keys to each other, to the devices and to the registries (models, tasks, evaluators).
"""

from __future__ import annotations

import jax

from cnn_arch import evaluators, models, schema, tasks
from cnn_arch.errors import UserError


def _fail(key: str, value, allowed: str):
    raise UserError(f"config.{key}={value!r} is not allowed: {allowed}")


def validate_config(config, device_count: int | None = None) -> None:
    """Raises UserError naming the first key whose value cannot work."""
    unknown = sorted(set(config.keys()) - set(schema.KEYS))
    if unknown:
        raise UserError(
            f"config has unknown keys {unknown}; the keys are listed in cnn_arch/schema.py"
        )
    missing = sorted(set(schema.KEYS) - set(config.keys()))
    if missing:
        raise UserError(f"config lacks the keys {missing}; start from configs/base.py")
    if config.model not in models.names():
        _fail("model", config.model, f"choose one of {', '.join(models.names())}")
    for key in schema.KEYS.values():
        problem = key.check(config[key.name]) if key.check else None
        if problem:
            _fail(key.name, config[key.name], problem)
    if config.num_train_steps == -1 and not (
        isinstance(config.num_epochs, int | float) and config.num_epochs > 0
    ):
        _fail("num_epochs", config.num_epochs, "it must be > 0 when num_train_steps is -1")
    if config.trainable == "head" and not config.init_from:
        _fail("trainable", config.trainable, "freezing all but the head needs config.init_from")
    if config.schedule == "step" and not config.lr_decay_epochs:
        _fail("lr_decay_epochs", config.lr_decay_epochs, "schedule='step' needs epochs to decay at")
    if config.schedule == "plateau" and not 0 < config.lr_decay_factor < 1:
        _fail(
            "lr_decay_factor", config.lr_decay_factor, "schedule='plateau' needs a factor in (0, 1)"
        )
    device_count = jax.device_count() if device_count is None else device_count
    if config.batch_size % device_count:
        _fail(
            "batch_size", config.batch_size, f"it must be divisible by the {device_count} devices"
        )
    if config.batch_size % jax.process_count():
        _fail("batch_size", config.batch_size, f"it must divide over {jax.process_count()} hosts")
    try:
        models.check_options(config.model, config.model_kwargs.to_dict())
    except ValueError as e:
        raise UserError(f"config.{e}") from None
    task = config.task or models.spec(config.model).task
    if task not in tasks.names():
        _fail("task", config.task, f"choose one of {', '.join(tasks.names())}")
    try:
        tasks.check_model(task, config.model)
        evaluators.check(config.evals, config)
    except ValueError as e:
        raise UserError(str(e)) from None
