"""Schedules, linear scaling and weight decay against direct computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from conftest import small_config

from cnn_arch import optim


def test_step_schedule_decays_tenfold_at_epochs():
    c = small_config(schedule="step", learning_rate=0.1, lr_decay_epochs=(2, 4))
    s = optim.make_schedule(c, steps_per_epoch=10, total_steps=60)
    np.testing.assert_allclose(
        [s(0), s(19), s(20), s(39), s(40)], [0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-6
    )


def test_warmup_then_cosine():
    c = small_config(schedule="cosine", learning_rate=0.4, warmup_epochs=1)
    s = optim.make_schedule(c, steps_per_epoch=10, total_steps=110)
    np.testing.assert_allclose([s(0), s(5), s(10), s(60), s(110)], [0, 0.2, 0.4, 0.2, 0], atol=1e-6)


def test_exponential_schedule_staircase():
    c = small_config(
        schedule="exponential", learning_rate=0.045, lr_decay_factor=0.94, lr_decay_every_epochs=2
    )
    s = optim.make_schedule(c, steps_per_epoch=10, total_steps=100)
    np.testing.assert_allclose(
        [s(19), s(20), s(40)], [0.045, 0.045 * 0.94, 0.045 * 0.94**2], rtol=1e-6
    )


def test_linear_scaling():
    c = small_config(learning_rate=0.1, batch_size=1024, lr_scaling="linear")
    assert optim.base_learning_rate(c) == 0.4


def _params():
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    return {
        "dense": {"kernel": jax.random.normal(k[0], (4, 3)), "bias": jax.random.normal(k[1], (3,))},
        "bn": {"scale": jax.random.normal(k[2], (3,)) + 1, "bias": jnp.ones(3)},
    }


def test_l2_weight_decay_equals_l2_loss_on_kernels_only():
    """'l2' mode is the gradient of 0.5*wd*||kernel||^2; biases and BN params are not decayed."""
    c = small_config(optimizer="sgd", momentum=0.9, learning_rate=0.1, weight_decay=0.01)
    params = _params()
    grads = jax.tree.map(jnp.ones_like, params)
    tx = optim.make_optimizer(c, optax.constant_schedule(0.1))
    updates, _ = tx.update(grads, tx.init(params), params)
    ref_tx = optax.sgd(0.1, momentum=0.9)
    l2_grads = jax.grad(lambda p: 0.5 * 0.01 * jnp.sum(p["dense"]["kernel"] ** 2))(params)
    ref, _ = ref_tx.update(jax.tree.map(jnp.add, grads, l2_grads), ref_tx.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), updates, ref)


def test_adamw_matches_optax_adamw():
    c = small_config(optimizer="adamw", learning_rate=1e-3, weight_decay=0.05)
    params = _params()
    grads = jax.tree.map(lambda p: 0.3 * p + 0.1, params)
    tx = optim.make_optimizer(c, optax.constant_schedule(1e-3))
    ref_tx = optax.adamw(1e-3, weight_decay=0.05, mask=optim.decay_mask)
    s, rs = tx.init(params), ref_tx.init(params)
    for _ in range(3):
        u, s = tx.update(grads, s, params)
        r, rs = ref_tx.update(grads, rs, params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9), u, r)


def test_nesterov_matches_optax():
    c = small_config(optimizer="sgd", momentum=0.9, nesterov=True, learning_rate=0.1)
    params = _params()
    grads = jax.tree.map(lambda p: p * 0.5, params)
    tx = optim.make_optimizer(c, optax.constant_schedule(0.1))
    ref_tx = optax.sgd(0.1, momentum=0.9, nesterov=True)
    s, rs = tx.init(params), ref_tx.init(params)
    for _ in range(3):
        u, s = tx.update(grads, s, params)
        r, rs = ref_tx.update(grads, rs, params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), u, r)
