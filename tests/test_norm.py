"""The BatchNorm lab (cnn_arch.norm): each piece against an independent reference.

Algorithm 1 vs flax.linen.BatchNorm, the hand-derived backward vs autodiff, ghost BN
vs plain BN on each sub-batch, per-device BN (8 fake CPU devices, in a subprocess)
vs ghost BN, sync BN vs one device, Algorithm 2's population statistics vs numpy, and
folded vs unfolded networks.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnn_arch.models as models
from cnn_arch.models import layers
from cnn_arch.norm import (
    BatchNorm,
    GhostBatchNorm,
    batch_norm_train,
    batch_norm_train_manual,
    fold_batch_norm,
    population_statistics,
)

REPO = Path(__file__).resolve().parents[1]


def max_rel_err(got, want) -> float:
    """Largest |got - want| over a pytree, relative to the largest |want| of each leaf."""
    errs = jax.tree.map(
        lambda g, w: float(
            np.max(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64)))
            / (np.max(np.abs(np.asarray(w, np.float64))) + 1e-12)
        ),
        got,
        want,
    )
    return max(jax.tree.leaves(errs))


def perturb_bn(variables, seed: int = 0):
    """Non-trivial BN state: gamma, beta, running mean and var away from 1, 0, 0, 1."""
    rng = np.random.default_rng(seed)

    def f(path, v):
        name = path[-1].key
        shape = np.shape(v)
        if name == "mean":
            return jnp.asarray(0.3 * rng.standard_normal(shape), jnp.float32)
        if name == "var":
            return jnp.asarray(rng.uniform(0.5, 2.0, shape), jnp.float32)
        if name == "scale":
            return jnp.asarray(rng.uniform(0.5, 1.5, shape), jnp.float32)
        if name == "bias":
            return v + jnp.asarray(0.1 * rng.standard_normal(shape), jnp.float32)
        return v

    return jax.tree_util.tree_map_with_path(f, variables)


def random_variables(model, x, seed: int):
    """``model``'s variables filled from numpy: He-scaled kernels, perturbed BN state.

    Shapes come from ``jax.eval_shape`` of ``init``, so no random-init ops run (an eager
    or jitted ``init`` costs seconds on a 2-core CPU).
    """
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(s.shape[:-1]))
            k = rng.standard_normal(s.shape, dtype=np.float32) * np.float32(np.sqrt(2 / fan_in))
            return jnp.asarray(k, s.dtype)
        if name == "var":
            return jnp.ones(s.shape, s.dtype)
        if name == "scale":
            return jnp.ones(s.shape, s.dtype)
        return jnp.zeros(s.shape, s.dtype)

    return perturb_bn(jax.tree_util.tree_map_with_path(fill, shapes), seed)


# --- Algorithm 1 ---------------------------------------------------------------------

SHAPES = [(16, 5), (4, 6, 6, 3), (2, 3, 3, 4)]  # dense, conv, conv at batch size 2


def _train_step(module, variables, x, w):
    """(loss, (y, new batch_stats), grads wrt (params, x)) of sum(y * w) in training mode."""

    def loss(params, x):
        y, upd = module.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            x,
            use_running_average=False,
            mutable=["batch_stats"],
        )
        return jnp.sum(y * w), (y, upd["batch_stats"])

    (value, aux), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        variables["params"], x
    )
    return value, aux, grads


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_alg1_equals_flax_batchnorm(shape):
    kx, kw = jax.random.split(jax.random.key(0))
    x = 2.0 * jax.random.normal(kx, shape) + 1.5
    w = jax.random.normal(kw, shape)
    ref = nn.BatchNorm(momentum=0.9, epsilon=1e-5)
    variables = perturb_bn(ref.init(jax.random.key(1), x, use_running_average=False))
    step = jax.jit(_train_step, static_argnums=0)
    want = step(ref, variables, x, w)
    axes = tuple(range(len(shape) - 1))
    biased = np.var(np.asarray(x, np.float64), axis=axes)
    for backward in ("autodiff", "manual"):
        ours = BatchNorm(momentum=0.9, epsilon=1e-5, backward=backward)
        # Same variable names and shapes as flax: a checkpoint moves between the two.
        ours_vars = jax.eval_shape(
            functools.partial(ours.init, use_running_average=False), jax.random.key(1), x
        )
        assert jax.tree.map(jnp.shape, ours_vars) == jax.tree.map(jnp.shape, variables)
        got = step(ours, variables, x, w)
        assert max_rel_err(got[1][0], want[1][0]) < 1e-5, backward  # forward
        assert max_rel_err(got[1][1], want[1][1]) < 1e-5, backward  # running mean / var
        assert max_rel_err(got[2], want[2]) < 1e-4, backward  # d/dgamma, d/dbeta, d/dx
        # the running var moved with the *biased* batch variance, as flax's does
        expect = 0.9 * np.asarray(variables["batch_stats"]["var"]) + 0.1 * biased
        np.testing.assert_allclose(got[1][1]["var"], expect, rtol=1e-5)
    # eval mode normalizes with the running averages
    y_eval = ours.apply(variables, x, use_running_average=True)
    assert max_rel_err(y_eval, ref.apply(variables, x, use_running_average=True)) < 1e-6


def test_alg1_half_precision_dtype_matches_flax():
    x = jax.random.normal(jax.random.key(0), (8, 4, 4, 6)).astype(jnp.bfloat16)
    ref = nn.BatchNorm(use_running_average=False, momentum=0.9, dtype=jnp.bfloat16)
    ours = BatchNorm(use_running_average=False, momentum=0.9, dtype=jnp.bfloat16)
    variables = perturb_bn(ref.init(jax.random.key(1), x))
    y_ref, s_ref = jax.jit(lambda v, x: ref.apply(v, x, mutable=["batch_stats"]))(variables, x)
    y, s = jax.jit(lambda v, x: ours.apply(v, x, mutable=["batch_stats"]))(variables, x)
    assert y.dtype == y_ref.dtype == jnp.bfloat16
    assert s["batch_stats"]["mean"].dtype == jnp.float32  # statistics stay float32
    assert max_rel_err(y.astype(jnp.float32), y_ref.astype(jnp.float32)) < 1e-2
    assert max_rel_err(s, s_ref) < 1e-5


@pytest.mark.parametrize("shape", [(6, 7), (2, 5, 5, 3)], ids=str)
def test_manual_backward_equals_autodiff(shape):
    keys = jax.random.split(jax.random.key(3), 6)
    x = 3.0 * jax.random.normal(keys[0], shape) - 1.0
    c = shape[-1]
    bshape = (1,) * (len(shape) - 1) + (c,)
    gamma = jax.random.uniform(keys[1], bshape, minval=0.5, maxval=1.5)
    beta = jax.random.normal(keys[2], bshape)
    axes = tuple(range(len(shape) - 1))
    # cotangents for all three outputs (y and the mu_B, sigma2_B that feed running stats)
    cts = (
        jax.random.normal(keys[3], shape),
        jax.random.normal(keys[4], bshape),
        jax.random.normal(keys[5], bshape),
    )

    @jax.jit
    def both(x, gamma, beta, cts):
        res = {}
        for name, fn in (("autodiff", batch_norm_train), ("manual", batch_norm_train_manual)):
            out, vjp = jax.vjp(lambda *a, fn=fn: fn(*a, axes, 1e-5), x, gamma, beta)
            res[name] = (out, vjp(cts))
        return res

    res = both(x, gamma, beta, cts)
    assert max_rel_err(res["manual"][0], res["autodiff"][0]) < 1e-6  # same forward
    assert max_rel_err(res["manual"][1], res["autodiff"][1]) < 1e-5  # dx, dgamma, dbeta
    # only the y cotangent (the training case): dgamma = sum dy*xhat, dbeta = sum dy
    zero = (cts[0], jnp.zeros(bshape), jnp.zeros(bshape))
    dx, dgamma, dbeta = both(x, gamma, beta, zero)["manual"][1]
    xn = np.asarray(x, np.float64)
    xhat = (xn - xn.mean(axes, keepdims=True)) / np.sqrt(xn.var(axes, keepdims=True) + 1e-5)
    np.testing.assert_allclose(dbeta, np.sum(cts[0], axes, keepdims=True), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        dgamma, np.sum(cts[0] * xhat, axes, keepdims=True), rtol=1e-4, atol=1e-5
    )


def _model_train(name: str, norm: str, variables, x, w):
    model = models.create(name, norm=norm)

    def loss(params):
        logits, upd = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            x,
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.sum(logits * w), (logits, upd["batch_stats"])

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])


@pytest.mark.parametrize("name,kind", [("lenet5", "batch_alg1_manual"), ("mlp", "batch_alg1")])
def test_norm_kinds_registered_and_equal_to_flax_in_models(name, kind):
    assert {"batch_alg1", "batch_alg1_manual", "ghost_batch"} <= set(layers.NORMS)
    x = jax.random.normal(jax.random.key(0), (8, 28, 28, 1))
    w = jax.random.normal(jax.random.key(1), (8, 10))
    variables = random_variables(models.create(name, norm="batch"), x, seed=2)
    other = jax.eval_shape(
        functools.partial(models.create(name, norm=kind).init, train=False), jax.random.key(0), x
    )
    assert jax.tree.map(jnp.shape, other) == jax.tree.map(jnp.shape, variables)
    want = _model_train(name, "batch", variables, x, w)
    got = _model_train(name, kind, variables, x, w)
    assert max_rel_err(got[0][1], want[0][1]) < 1e-5  # logits and running stats
    assert max_rel_err(got[1], want[1]) < 1e-4  # gradients of every parameter


# --- Ghost BN ------------------------------------------------------------------------


def test_ghost_bn_equals_bn_on_each_sub_batch():
    x = 1.5 * jax.random.normal(jax.random.key(0), (12, 3, 3, 4)) + 0.5
    k = 3
    ghost = GhostBatchNorm(ghost_batch_size=k, momentum=0.9, use_running_average=False)
    ref = nn.BatchNorm(momentum=0.9, use_running_average=False)
    variables = perturb_bn(ref.init(jax.random.key(1), x))

    def run(module, x):
        def loss(params, x):
            y, upd = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
            return jnp.sum(y * jnp.cos(x)), (y, upd)

        return jax.value_and_grad(loss, (0, 1), has_aux=True)(variables["params"], x)

    @jax.jit
    def everything(x):
        parts = [run(ref, x[i : i + k])[0][1] for i in range(0, len(x), k)]
        return {
            "ghost": run(ghost, x),
            "manual": run(ghost.clone(backward="manual"), x),
            "full_ghost": run(ghost.clone(ghost_batch_size=len(x)), x)[0][1],
            "full_ref": run(ref, x)[0][1],
            "parts_y": jnp.concatenate([p[0] for p in parts]),
            "parts_stats": jax.tree.map(lambda *s: sum(s) / len(s), *[p[1] for p in parts]),
        }

    r = everything(x)
    (_, (y, upd)), grads = r["ghost"]
    assert max_rel_err(y, r["parts_y"]) < 1e-5
    # running averages move with the mean over sub-batches of their statistics
    assert max_rel_err(upd, r["parts_stats"]) < 1e-6
    assert max_rel_err(r["full_ghost"], r["full_ref"]) < 1e-5  # k = batch is plain BN
    assert max_rel_err(r["manual"][1], grads) < 1e-5  # hand-derived backward, ghost-shaped
    with pytest.raises(ValueError, match="ghost_batch_size=5 must divide"):
        ghost.clone(ghost_batch_size=5).apply(variables, x, mutable=["batch_stats"])


def test_ghost_batch_kind_in_a_model():
    """MLP with norm='ghost_batch' (k=32) on 64 examples = the BN MLP on each half."""
    x = jax.random.normal(jax.random.key(0), (64, 28, 28, 1))
    ghost = models.create("mlp", norm="ghost_batch")
    plain = models.create("mlp", norm="batch")
    variables = random_variables(plain, x, seed=1)
    logits, upd = ghost.apply(variables, x, train=True, mutable=["batch_stats"])
    halves = [
        plain.apply(variables, h, train=True, mutable=["batch_stats"]) for h in (x[:32], x[32:])
    ]
    assert max_rel_err(logits, jnp.concatenate([h[0] for h in halves])) < 1e-5
    want = jax.tree.map(lambda a, b: (a + b) / 2, halves[0][1], halves[1][1])
    assert max_rel_err(upd, want) < 1e-6
    # the sub-batch size goes through make_norm's **extra
    bn = layers.make_norm("ghost_batch", train=True, ghost_batch_size=16)(name="n")
    assert bn.ghost_batch_size == 16


# --- Multi-device: per-device BN, sync BN, axis_name (8 fake CPU devices) ---------------

MULTI_DEVICE = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    import flax.linen as nn
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import cnn_arch.models as models
    from cnn_arch.models import layers
    from cnn_arch.norm import BatchNorm, apply_per_device
    from cnn_arch.norm.kinds import ghost_batch_kind
    from tests.test_norm import max_rel_err, perturb_bn, random_variables

    assert jax.device_count() == 8, jax.devices()
    # an Auto-axis mesh, as cnn_arch.parallel.make_mesh builds (jax.make_mesh's Explicit
    # axes reject e.g. LeNet's edge padding of a batch-sharded array in jax 0.10)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    N = 32
    k = N // 8
    layers.NORMS["ghost_batch_per_device"] = ghost_batch_kind(k)
    x = jax.random.normal(jax.random.key(0), (N, 28, 28, 1))
    w = jax.random.normal(jax.random.key(1), (N, 10))
    bn_model = models.create("lenet5", norm="batch")
    ghost_model = models.create("lenet5", norm="ghost_batch_per_device")
    v = random_variables(bn_model, x[:2], seed=2)
    out = {}

    # per-device statistics == ghost BN with k = N / 8
    pd = jax.jit(lambda v, x: apply_per_device(bn_model, v, x, mesh=mesh))
    logits_pd, stats_pd = pd(v, x)
    train = lambda m: jax.jit(lambda v, x: m.apply(v, x, train=True, mutable=["batch_stats"]))
    logits_g, upd_g = train(ghost_model)(v, x)
    out["per_device_vs_ghost_logits"] = max_rel_err(logits_pd, logits_g)
    out["per_device_vs_ghost_stats"] = max_rel_err(stats_pd, upd_g["batch_stats"])
    out["per_device_logits_sharded"] = len(logits_pd.sharding.device_set) == 8

    def loss_pd(params):
        logits, _ = apply_per_device(bn_model, {**v, "params": params}, x, mesh=mesh)
        return jnp.sum(logits * w)

    def loss_g(params):
        variables = {**v, "params": params}
        logits = ghost_model.apply(variables, x, train=True, mutable=["batch_stats"])[0]
        return jnp.sum(logits * w)

    out["per_device_vs_ghost_grads"] = max_rel_err(
        jax.jit(jax.grad(loss_pd))(v["params"]), jax.jit(jax.grad(loss_g))(v["params"]))

    # sync BN: plain flax BN under jit with the batch sharded == one device
    step = train(bn_model)
    logits_1, upd_1 = step(v, x)
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    vs = jax.device_put(v, NamedSharding(mesh, P()))
    logits_s, upd_s = step(vs, xs)
    out["sync_sharded_inputs"] = len(xs.sharding.device_set) == 8
    out["sync_vs_1dev_logits"] = max_rel_err(logits_s, logits_1)
    out["sync_vs_1dev_stats"] = max_rel_err(upd_s, upd_1)
    # the two regimes really differ (so the equalities above can fail)
    out["per_device_vs_sync_logits"] = max_rel_err(logits_pd, logits_1)

    # Algorithm 1 with axis_name under shard_map == global batch, for both backward passes
    xb = 2.0 * jax.random.normal(jax.random.key(3), (16, 5, 5, 6)) + 1.0
    wb = jax.random.normal(jax.random.key(4), xb.shape)
    ref = nn.BatchNorm(momentum=0.9, use_running_average=False)
    vb = perturb_bn(ref.init(jax.random.key(5), xb), seed=1)

    def fwd_bwd(module, vb, xb, wb, axis_name=None):
        def loss(params, xb):
            y, upd = module.apply({**vb, "params": params}, xb, mutable=["batch_stats"])
            s = jnp.sum(y * wb)
            return (s if axis_name is None else jax.lax.psum(s, axis_name)), (y, upd)
        (_, aux), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(vb["params"], xb)
        return aux, grads

    want = jax.jit(lambda: fwd_bwd(ref, vb, xb, wb))()
    for backward in ("autodiff", "manual"):
        mod = BatchNorm(
            momentum=0.9, use_running_average=False, axis_name="data", backward=backward
        )
        f = jax.shard_map(
            functools.partial(fwd_bwd, mod, axis_name="data"), mesh=mesh,
            in_specs=(P(), P("data"), P("data")),
            out_specs=((P("data"), P()), (P(), P("data"))))
        put = lambda a, s: jax.device_put(a, NamedSharding(mesh, s))
        got = jax.jit(f)(put(vb, P()), put(xb, P("data")), put(wb, P("data")))
        out[f"axis_name_{backward}_forward_and_stats"] = max_rel_err(got[0], want[0])
        out[f"axis_name_{backward}_grads"] = max_rel_err(got[1], want[1])
    print("RESULT " + json.dumps(out))
    """
).replace("import json\n", "import functools, json\n", 1)


@pytest.fixture(scope="module")
def multi_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE], env=env, cwd=REPO, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def test_per_device_bn_equals_ghost_bn(multi_device):
    r = multi_device
    assert r["per_device_logits_sharded"]
    assert r["per_device_vs_ghost_logits"] < 1e-5
    assert r["per_device_vs_ghost_stats"] < 1e-5
    assert r["per_device_vs_ghost_grads"] < 2e-4
    assert r["per_device_vs_sync_logits"] > 1e-3  # 4-example statistics are not global ones


def test_sync_bn_under_jit_equals_single_device(multi_device):
    r = multi_device
    assert r["sync_sharded_inputs"]
    assert r["sync_vs_1dev_logits"] < 1e-5
    assert r["sync_vs_1dev_stats"] < 1e-5


@pytest.mark.parametrize("backward", ["autodiff", "manual"])
def test_axis_name_pmean_equals_global_batch(multi_device, backward):
    assert multi_device[f"axis_name_{backward}_forward_and_stats"] < 1e-5
    assert multi_device[f"axis_name_{backward}_grads"] < 1e-4


# --- Algorithm 2: population statistics ---------------------------------------------


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_population_statistics_mlp_all_layers_vs_numpy():
    model = models.create("mlp", norm="batch")
    batches = [np.random.default_rng(i).normal(0.3, 1.0, (32, 28, 28, 1)).astype(np.float32)
               for i in range(4)]  # fmt: skip
    variables = random_variables(model, batches[0], seed=0)
    apply_fn = functools.partial(model.apply, train=True, mutable=["batch_stats"])
    new = population_statistics(apply_fn, variables, batches)

    # numpy float64 forward in training mode (Alg. 1 at every layer), collecting mu_B, sigma2_B
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
    mus, var_sums = {}, {}
    for xb in batches:
        h = xb.reshape(len(xb), -1).astype(np.float64)
        for i in (1, 2, 3):
            z = h @ p[f"hidden{i}"]["kernel"]  # no bias: BN follows
            mu, var = z.mean(0), z.var(0)  # biased
            mus[i] = mus.get(i, 0) + mu / len(batches)
            var_sums[i] = var_sums.get(i, 0) + var / len(batches)
            bn = p[f"hidden{i}_norm"]
            h = _sigmoid(bn["scale"] * (z - mu) / np.sqrt(var + layers.BN_EPSILON) + bn["bias"])
    m = 32
    for i in (1, 2, 3):
        stats = new["batch_stats"][f"hidden{i}_norm"]
        np.testing.assert_allclose(stats["mean"], mus[i], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stats["var"], var_sums[i] * m / (m - 1), rtol=1e-4)
    assert jax.tree.all(jax.tree.map(np.array_equal, new["params"], variables["params"]))
    # the running averages really were replaced
    assert max_rel_err(variables["batch_stats"], new["batch_stats"]) > 0.1


def test_population_statistics_conv_counts_spatial_positions():
    """For a conv BN, m = N*H*W (Sec. 3.2): checked on LeNet's first BN vs numpy."""
    model = models.create("lenet5", norm="batch")
    batches = [np.random.default_rng(i).normal(0.0, 1.0, (8, 28, 28, 1)).astype(np.float32)
               for i in range(3)]  # fmt: skip
    variables = random_variables(model, batches[0], seed=0)
    new = population_statistics(
        functools.partial(model.apply, train=True, mutable=["batch_stats"]), variables, batches
    )
    mean, var = 0.0, 0.0
    conv1_output = jax.jit(
        lambda xb: model.apply(
            variables, xb, train=True, mutable=["batch_stats", "intermediates"],
            capture_intermediates=lambda mdl, _: mdl.name == "conv1",
        )[1]["intermediates"]["conv1"]["__call__"][0]
    )  # fmt: skip
    for xb in batches:
        c1 = np.asarray(conv1_output(xb), np.float64)  # (8, 28, 28, 6)
        m = c1.shape[0] * c1.shape[1] * c1.shape[2]
        mean += c1.mean((0, 1, 2)) / len(batches)
        var += c1.var((0, 1, 2)) * m / (m - 1) / len(batches)
    np.testing.assert_allclose(new["batch_stats"]["conv1_norm"]["mean"], mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new["batch_stats"]["conv1_norm"]["var"], var, rtol=1e-4)
    # every BN layer got population statistics
    changed = jax.tree.map(
        lambda a, b: not np.allclose(a, b), new["batch_stats"], variables["batch_stats"]
    )
    assert all(jax.tree.leaves(changed))


# --- Folding BN into conv/dense for inference -----------------------------------------


CORE_FOLD = {  # name: (overrides, input shape, BN multiply-adds per example)
    "lenet5": ({"norm": "batch"}, (28, 28, 1), 28 * 28 * 6 + 10 * 10 * 16 + 120 + 84),
    "mlp": ({"norm": "batch"}, (28, 28, 1), 3 * 100),
}
# Written concurrently by other helpers: tested when registered, reported as skipped if not.
OPTIONAL_FOLD = {
    "vgg11_bn": ({}, (32, 32, 3), None),
    "resnet20": ({}, (32, 32, 3), 7 * 32 * 32 * 16 + 6 * 16 * 16 * 32 + 6 * 8 * 8 * 64),
    "resnet50": ({}, (32, 32, 3), None),
}
FOLD_CASES = [pytest.param(n, id=n) for n in CORE_FOLD] + [
    pytest.param(
        n,
        id=n,
        marks=pytest.mark.skipif(n not in models.names(), reason=f"{n} is not registered yet"),
    )
    for n in OPTIONAL_FOLD
]


def test_core_fold_models_exist():
    assert set(CORE_FOLD) <= set(models.names())


@pytest.mark.parametrize("name", FOLD_CASES)
def test_folded_equals_unfolded(name):
    overrides, shape, macs = {**CORE_FOLD, **OPTIONAL_FOLD}[name]
    model = models.create(name, num_classes=10, **overrides)
    x = jax.random.normal(jax.random.key(1), (2,) + shape)
    variables = random_variables(model, x, seed=3)
    want = jax.jit(functools.partial(model.apply, train=False))(variables, x)
    folded = fold_batch_norm(model, variables, x)
    got = jax.jit(folded.apply)(folded.variables, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(want))))
    # every BN of these networks directly follows a conv/dense: all are gone
    n_bn = sum(1 for p in jax.tree_util.tree_leaves_with_path(variables["batch_stats"])
               if p[0][-1].key == "mean")  # fmt: skip
    assert len(folded.pairs) == n_bn > 0 and folded.unfolded == ()
    assert not jax.tree.leaves(folded.variables.get("batch_stats", {}))
    if macs is not None:
        assert folded.macs_removed == macs


def test_fold_leaves_bn_after_activation_alone():
    """norm_position='after' puts the activation between conv and BN: nothing to fold."""
    model = models.create("lenet5", norm="batch", norm_position="after")
    x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
    variables = random_variables(model, x, seed=4)
    folded = fold_batch_norm(model, variables, x, check=True)
    assert folded.pairs == () and len(folded.unfolded) == 4 and folded.macs_removed == 0
