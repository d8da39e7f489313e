"""Santurkar et al. 2018's instruments: noisy BN (Sec. 2.1), internal covariate shift
(Definition 2.1) and the landscape along the gradient (Sec. 3.1), on tiny models.

The evaluators are driven by a stand-in for ``cnn_arch.run.Run`` (model, task, optimizer,
schedule, mesh, one probe batch), so every number has a closed form or a direct
``jax.grad`` to compare with; the real run is covered by tests/test_bn_landscape.py.
"""

from __future__ import annotations

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_arch import evaluators, models, parallel, steps
from cnn_arch.evaluators.landscape import (
    InternalCovariateShift,
    Landscape,
    layer_masks,
    module_call_order,
)
from cnn_arch.models import layers
from cnn_arch.norm.noisy import NOISE_SCALE, NOISE_SHIFT, NoisyBatchNorm

# --- noisy BN ------------------------------------------------------------------------------


def _noisy_and_plain(x, eval_mode: bool = False):
    noisy = NoisyBatchNorm(use_running_average=eval_mode, momentum=0.9)
    plain = nn.BatchNorm(use_running_average=eval_mode, momentum=0.9)
    variables = plain.init(jax.random.PRNGKey(0), x)
    # Non-trivial gamma and beta, shared by both layers.
    variables = {
        **variables,
        "params": {"scale": jnp.linspace(0.5, 2.0, x.shape[-1]), "bias": jnp.ones(x.shape[-1])},
    }
    return noisy, plain, variables


def test_noisy_bn_is_bn_times_a_per_step_channel_scale_plus_a_shift():
    x = 3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(1), (8, 5, 5, 6))
    noisy, plain, variables = _noisy_and_plain(x)
    assert jax.tree.structure(noisy.init(jax.random.PRNGKey(0), x)) == jax.tree.structure(
        plain.init(jax.random.PRNGKey(0), x)
    )  # the same variables as a plain BN layer

    def run(key):
        y, new = noisy.apply(variables, x, mutable=["batch_stats"], rngs={"dropout": key})
        return y, new["batch_stats"]

    bn, bn_stats = plain.apply(variables, x, mutable=["batch_stats"])
    y1, stats1 = run(jax.random.PRNGKey(7))
    y1_again, _ = run(jax.random.PRNGKey(7))
    y2, _ = run(jax.random.PRNGKey(8))
    np.testing.assert_array_equal(y1, y1_again)  # deterministic for a given key
    assert float(jnp.max(jnp.abs(y1 - y2))) > 0.05  # another step, another draw
    # The running averages are plain BN's (statistics of the input, not of the noise).
    jax.tree.map(np.testing.assert_allclose, stats1, bn_stats["batch_stats"])
    # Per channel y = s * BN(x) + m with s in [1, NOISE_SCALE], m in [-NOISE_SHIFT, ...].
    b, y = np.asarray(bn).reshape(-1, 6), np.asarray(y1).reshape(-1, 6)
    for c in range(6):
        s, m = np.polyfit(b[:, c], y[:, c], 1)
        np.testing.assert_allclose(y[:, c], s * b[:, c] + m, atol=1e-4)
        assert 1.0 <= s <= NOISE_SCALE + 1e-5 and abs(m) <= NOISE_SHIFT + 1e-5
    slopes = [np.polyfit(b[:, c], y[:, c], 1)[0] for c in range(6)]
    assert np.ptp(slopes) > 0.01  # a draw per channel, not one for the layer


def test_noisy_bn_at_eval_is_plain_bn_with_running_averages():
    x = 1.0 + jax.random.normal(jax.random.PRNGKey(2), (4, 3, 3, 5))
    noisy, plain, variables = _noisy_and_plain(x, eval_mode=True)
    variables["batch_stats"] = {"mean": jnp.arange(5.0), "var": jnp.linspace(0.5, 3.0, 5)}
    y = noisy.apply(variables, x, rngs={"dropout": jax.random.PRNGKey(9)})
    np.testing.assert_allclose(y, plain.apply(variables, x), atol=1e-6)
    # and it does use the running averages (not the batch's statistics)
    expected = (x - jnp.arange(5.0)) / jnp.sqrt(jnp.linspace(0.5, 3.0, 5) + 1e-5)
    np.testing.assert_allclose(y, expected * variables["params"]["scale"] + 1.0, atol=1e-5)


def test_noisy_bn_in_a_model_changes_with_the_step_and_not_otherwise():
    """Through the train step's own loss: step t and the seed fix the noise."""
    model = models.create("mlp", num_classes=10, norm="noisy_batch", hidden=(16, 16))
    tx = optax.sgd(0.1)
    mesh = parallel.make_mesh()
    state = steps.create_train_state(model, tx, (4, 4, 1), seed=0, mesh=mesh)
    from cnn_arch import tasks
    from configs import base

    task = tasks.create("classification", base.get_config())
    batch = {
        "image": jax.random.normal(jax.random.PRNGKey(3), (8, 4, 4, 1)),
        "label": jnp.arange(8) % 10,
    }

    @jax.jit
    def loss_fn(state, step):
        s = state.replace(step=step)
        rng = steps.step_rng(s)
        return steps.training_loss(s.params, s.batch_stats, batch, rng, model=model, task=task)[0]

    def loss_at(step):
        return float(loss_fn(state, jnp.asarray(step, jnp.int32)))

    assert loss_at(3) == loss_at(3)
    assert loss_at(3) != loss_at(4)
    plain = models.create("mlp", num_classes=10, norm="batch", hidden=(16, 16))

    def infer(m):
        return jax.jit(lambda v, x: m.apply(v, x, train=False))(state.variables, batch["image"])

    np.testing.assert_allclose(infer(model), infer(plain), atol=1e-6)


def test_narrow_vgg_widths_and_head():
    model = models.create(
        "vgg11", num_classes=10, norm="batch", width_multiplier=0.125, pool_size=1, fc_width=0
    )
    params = jax.eval_shape(
        lambda x: model.init(jax.random.PRNGKey(0), x, train=False), jnp.zeros((1, 32, 32, 3))
    )["params"]
    widths = [
        params[f"conv{s}_{i}"]["kernel"].shape[-1]
        for s, i in ((1, 1), (2, 1), (3, 1), (3, 2), (4, 1), (4, 2), (5, 1), (5, 2))
    ]
    assert widths == [8, 16, 32, 32, 64, 64, 64, 64]
    assert "fc1" not in params and params["head"]["kernel"].shape == (64, 10)
    with pytest.raises(ValueError, match="width_multiplier > 0"):
        jax.eval_shape(
            lambda x: models.create("vgg11", width_multiplier=0.0).init(
                jax.random.PRNGKey(0), x, train=False
            ),
            jnp.zeros((1, 32, 32, 3)),
        )


# --- a stand-in run ---------------------------------------------------------------------------


class Quadratic(nn.Module):
    """Outputs its parameter vector w; the task below makes the loss 0.5 w^T A w."""

    dim: int = 3

    @nn.compact
    def __call__(self, x, *, train: bool):
        del x, train
        return self.param("w", nn.initializers.ones, (self.dim,))


class TwoLayers(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool):
        del train
        h = jnp.tanh(nn.Dense(4, name="first")(x))
        return nn.Dense(2, name="second")(h)


class _Task:
    def __init__(self, fn):
        self.fn = fn

    def loss(self, outputs, batch):
        return self.fn(outputs, batch), {}


def _fake_run(model, task, tx, lr: float, batch):
    return types.SimpleNamespace(
        model=model,
        task=task,
        tx=tx,
        schedule=optax.constant_schedule(lr),
        mesh=parallel.make_mesh(),
        config=types.SimpleNamespace(batch_size=len(batch["image"]), steps_per_eval=1),
        train_batches=lambda start, size: iter([batch]),
        example_input=lambda: jnp.zeros((1, *batch["image"].shape[1:])),
    )


def _state(run, params):
    return steps.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats={},
        opt_state=run.tx.init(params),
        rng=jax.random.PRNGKey(0),
    )


A = jnp.diag(jnp.array([4.0, 1.0, 0.5]))


@pytest.mark.parametrize("relative", [False, True])
def test_landscape_of_a_quadratic_has_its_curvature_as_beta(relative):
    """L(w) = 0.5 w^T A w with w an eigenvector of A (eigenvalue 4): the gradient is 4w,
    x - eta g = (1 - 4 eta) w, so L = 2 (1 - 4 eta)^2 |w|^2, the gradient changes by
    eta 16 |w| and the effective beta is exactly 4 (the largest eigenvalue)."""
    batch = {"image": np.zeros((2, 1), np.float32)}
    task = _Task(lambda w, _: 0.5 * w @ A @ w)
    lr = 0.5
    run = _fake_run(Quadratic(), task, optax.sgd(lr), lr, batch)
    sizes = (0.05, 0.1, 0.2)
    ev = Landscape(name="ls", run=run, step_sizes=sizes, relative_to_lr=relative)
    w = jnp.array([0.5, 0.0, 0.0])
    out = ev(_state(run, {"w": w}))
    etas = np.array(sizes) * (lr if relative else 1.0)
    losses = [2.0 * 0.25] + [2.0 * (1 - 4 * e) ** 2 * 0.25 for e in etas]
    assert out["loss"] == pytest.approx(0.5)
    assert out["loss_min"] == pytest.approx(min(losses), rel=1e-5)
    assert out["loss_max"] == pytest.approx(max(losses), rel=1e-5)
    assert out["loss_range"] == pytest.approx(max(losses) - min(losses), rel=1e-5)
    assert out["grad_diff_min"] == pytest.approx(16 * 0.5 * etas.min(), rel=1e-5)
    assert out["grad_diff_max"] == pytest.approx(16 * 0.5 * etas.max(), rel=1e-5)
    assert out["beta"] == pytest.approx(4.0, rel=1e-5)
    assert out["eta_max"] == pytest.approx(etas.max())
    assert out["num_examples"] == 2
    # Off an eigenvector the effective beta lies between the eigenvalues it mixes.
    out = ev(_state(run, {"w": jnp.array([0.3, 1.0, 0.0])}))
    assert 1.0 < out["beta"] < 4.0


def _two_layer_setup(tx):
    x = jax.random.normal(jax.random.PRNGKey(4), (6, 3))
    y = jax.random.normal(jax.random.PRNGKey(5), (6, 2))
    batch = {"image": x, "target": y}
    task = _Task(lambda out, b: jnp.mean((out - b["target"]) ** 2))
    model = TwoLayers()
    params = model.init(jax.random.PRNGKey(6), x, train=False)["params"]
    return model, task, batch, params


def test_ics_equals_the_gradient_change_after_updating_the_preceding_layer():
    lr = 0.3
    model, task, batch, params = _two_layer_setup(optax.sgd(lr))
    run = _fake_run(model, task, optax.sgd(lr), lr, batch)
    out = InternalCovariateShift(name="ics", run=run, layers=("first", "second"))(
        _state(run, params)
    )

    def loss(p):
        return task.loss(model.apply({"params": p}, batch["image"], train=True), batch)[0]

    g = jax.grad(loss)(params)
    moved = {**params, "first": jax.tree.map(lambda p, d: p - lr * d, params["first"], g["first"])}
    g2 = jax.grad(loss)(moved)
    a, b = (np.concatenate([np.ravel(v) for v in jax.tree.leaves(t["second"])]) for t in (g, g2))
    assert out["second_l2"] == pytest.approx(np.linalg.norm(a - b), rel=1e-4)
    assert out["second_cos"] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert out["second_rel"] == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(a), rel=1e-4)
    assert out["second_l2"] > 1e-4  # a real shift, not a trivially zero one
    # Nothing runs before the first layer: no shift at all.
    assert out["first_l2"] == 0.0 and out["first_cos"] == pytest.approx(1.0)


def test_ics_is_zero_when_the_preceding_layers_do_not_learn():
    lr = 0.3
    tx = optax.multi_transform(
        {"sgd": optax.sgd(lr), "frozen": optax.set_to_zero()},
        {"first": "frozen", "second": "sgd"},
    )
    model, task, batch, params = _two_layer_setup(tx)
    run = _fake_run(model, task, tx, lr, batch)
    out = InternalCovariateShift(name="ics", run=run, layers=("second",))(_state(run, params))
    assert out["second_l2"] == 0.0 and out["second_cos"] == pytest.approx(1.0)
    assert out["second_grad_norm"] > 0


def test_preceding_layers_follow_the_forward_pass_not_the_names():
    model = models.create(
        "vgg11", num_classes=10, norm="batch", width_multiplier=0.125, pool_size=1, fc_width=0
    )
    x = jnp.zeros((1, 32, 32, 3))
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    order = module_call_order(model, variables, x)
    assert [p[0] for p in order[:4]] == ["conv1_1", "conv1_1_norm", "conv2_1", "conv2_1_norm"]
    own, before = layer_masks(order, variables["params"], "conv3_1")
    leaves = [
        "/".join(str(k.key) for k in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    ]
    assert {n for n, o in zip(leaves, own, strict=True) if o} == {
        "conv3_1/bias",
        "conv3_1/kernel",
    }
    assert {n.split("/")[0] for n, b in zip(leaves, before, strict=True) if b} == {
        "conv1_1",
        "conv1_1_norm",
        "conv2_1",
        "conv2_1_norm",
    }
    with pytest.raises(ValueError, match="no parameters"):
        layer_masks(order, variables["params"], "conv9_9")


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"kind": "ics"}, "layers="),
        ({"kind": "ics", "layers": "conv1_1"}, "layers="),
        ({"kind": "ics", "layers": ["conv1_1"], "batch_size": -1}, "batch_size"),
        ({"kind": "landscape", "step_sizes": []}, "step_sizes"),
        ({"kind": "landscape", "step_sizes": [0.1, -0.2]}, "step_sizes"),
        ({"kind": "landscape", "relative_to_lr": "yes"}, "relative_to_lr"),
        ({"kind": "landscape", "steps": [0.1]}, "unknown options"),
    ],
)
def test_options_are_checked_with_a_sentence(spec, message):
    with pytest.raises(ValueError, match=message):
        evaluators.check({"probe": spec}, None)


def test_noisy_batch_is_a_norm_kind():
    assert "noisy_batch" in layers.NORMS
    assert {"ics", "landscape"} <= set(evaluators.kinds())
