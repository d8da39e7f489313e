"""The BN paper's (Ioffe & Szegedy 2015) stated properties, and short versions of the
experiments that reproduce it (experiments/bn_mnist.py, ...).

Properties, checked on our Algorithm 1 (``cnn_arch.norm.BatchNorm``, autodiff and the
hand-derived backward) and on ``flax.linen.BatchNorm``:
- Sec. 3.3: BN((aW)u) = BN(Wu); the Jacobian w.r.t. u is unchanged; the gradient
  w.r.t. aW is 1/a times the gradient w.r.t. W.
- Sec. 3: with gamma = sqrt(Var[x] + eps) and beta = E[x] the transform is the identity
  (with the mini-batch statistics in training, with the running ones in inference).
"""

from __future__ import annotations

import functools
import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, run_experiment

from cnn_arch import norm

EPS = 1e-5
SCALES = (0.1, 40.0)
BATCH_NORMS = {
    "ours": functools.partial(norm.BatchNorm, epsilon=EPS),
    "ours_manual_backward": functools.partial(norm.BatchNorm, epsilon=EPS, backward="manual"),
    "flax": functools.partial(nn.BatchNorm, epsilon=EPS),
}
# The forward pass is the same function with either backward: forward-only checks run on
# ours and flax's, gradient checks on all three.
FORWARD_KINDS = ("ours", "flax")


def _inputs(m: int = 16, n_in: int = 8, n_out: int = 6):
    ku, kw, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    u = jax.random.normal(ku, (m, n_in))
    w = jax.random.normal(kw, (n_in, n_out))
    upstream = jax.random.normal(kg, (m, n_out))  # a fixed dL/dy for the gradient checks
    return u, w, upstream


def _bn_of_linear(make_bn, **overrides):
    """(W, u) -> BN(Wu) in training mode (mini-batch statistics), gamma=1, beta=0."""
    bn = make_bn(use_running_average=False, **overrides)
    variables = bn.init(jax.random.PRNGKey(1), jnp.zeros((2, 6)))

    def f(w, u):
        y, _ = bn.apply(variables, u @ w, mutable=["batch_stats"])
        return y

    return f


@pytest.mark.parametrize("kind", FORWARD_KINDS)
@pytest.mark.parametrize("a", SCALES)
def test_scale_invariance_of_the_output(kind, a):
    """Sec. 3.3, BN(Wu) = BN((aW)u). Only eps breaks it, and exactly so: scaling x by a
    is the same as dividing eps by a^2, so BN_eps((aW)u) = BN_{eps/a^2}(Wu) to rounding;
    and the two outputs differ by at most about eps / (2 a^2 Var[Wu]) relative."""
    f = _bn_of_linear(BATCH_NORMS[kind])
    f_eps_over_a2 = _bn_of_linear(BATCH_NORMS[kind], epsilon=EPS / a**2)
    u, w, _ = _inputs()
    y, y_scaled = f(w, u), f(a * w, u)
    np.testing.assert_allclose(y_scaled, f_eps_over_a2(w, u), rtol=2e-5, atol=2e-5)
    min_var = float(jnp.min(jnp.var(u @ w, axis=0)))
    bound = EPS / (2 * a**2 * min_var) + 2e-5
    np.testing.assert_allclose(y_scaled, y, rtol=bound, atol=2e-5)
    assert float(jnp.max(jnp.abs(y))) > 0.5  # not a degenerate all-zero output


@pytest.mark.parametrize("kind", sorted(BATCH_NORMS))
@pytest.mark.parametrize("a", [40.0])
def test_jacobian_wrt_layer_input_is_scale_invariant(kind, a):
    """Sec. 3.3: d BN((aW)u) / du = d BN(Wu) / du."""
    f = _bn_of_linear(BATCH_NORMS[kind])
    u, w, _ = _inputs()
    jac = jax.jacrev(f, argnums=1)(w, u)
    jac_scaled = jax.jacrev(f, argnums=1)(a * w, u)
    assert jac.shape == (16, 6, 16, 8)
    np.testing.assert_allclose(jac_scaled, jac, atol=1e-3 * float(jnp.max(jnp.abs(jac))))


@pytest.mark.parametrize("kind", sorted(BATCH_NORMS))
@pytest.mark.parametrize("a", SCALES)
def test_gradient_wrt_scaled_weights_is_one_over_a(kind, a):
    """Sec. 3.3: dL/d(aW) = (1/a) dL/dW: larger weights get smaller gradients."""
    f = _bn_of_linear(BATCH_NORMS[kind])
    u, w, upstream = _inputs()

    def loss(v):
        return jnp.sum(f(v, u) * upstream)

    g, g_scaled = jax.grad(loss)(w), jax.grad(loss)(a * w)
    scale = float(jnp.max(jnp.abs(g)))
    assert scale > 1e-2
    np.testing.assert_allclose(g_scaled, g / a, atol=2e-4 * scale / a)
    # And not trivially: the gradient does change with a (it is not scale-free itself).
    assert not np.allclose(g_scaled, g, atol=1e-3 * scale)


@pytest.mark.parametrize("kind", FORWARD_KINDS)
@pytest.mark.parametrize("shape", [(32, 5), (4, 6, 6, 3)])
def test_identity_with_gamma_std_and_beta_mean_in_training(kind, shape):
    """Sec. 3: gamma = sqrt(Var[x] + eps), beta = E[x] recover the original activations
    (mini-batch statistics; for conv maps over N, H and W)."""
    x = 3.0 + 2.5 * jax.random.normal(jax.random.PRNGKey(2), shape)
    axes = tuple(range(x.ndim - 1))
    mean, var = jnp.mean(x, axes), jnp.var(x, axes)
    bn = BATCH_NORMS[kind](use_running_average=False)
    variables = bn.init(jax.random.PRNGKey(0), x)
    params = {"scale": jnp.sqrt(var + EPS), "bias": mean}
    y, _ = bn.apply({**variables, "params": params}, x, mutable=["batch_stats"])
    np.testing.assert_allclose(y, x, atol=2e-5 * float(jnp.max(jnp.abs(x))))
    # The default gamma=1, beta=0 does change x: the test above is not vacuous.
    y0, _ = bn.apply(variables, x, mutable=["batch_stats"])
    assert float(jnp.max(jnp.abs(y0 - x))) > 1.0


@pytest.mark.parametrize("kind", FORWARD_KINDS)
def test_identity_with_running_statistics_in_inference(kind):
    """The same in inference: gamma = sqrt(running var + eps), beta = running mean."""
    x = -1.0 + 0.3 * jax.random.normal(jax.random.PRNGKey(3), (8, 4))
    bn = BATCH_NORMS[kind](use_running_average=True)
    ra_mean, ra_var = jnp.array([0.5, -2.0, 1.0, 0.0]), jnp.array([4.0, 0.25, 1.0, 9.0])
    params = {"scale": jnp.sqrt(ra_var + EPS), "bias": ra_mean}
    stats = {"mean": ra_mean, "var": ra_var}
    y = bn.apply({"params": params, "batch_stats": stats}, x)
    np.testing.assert_allclose(y, x, atol=1e-5)


# --- Fig. 1 (b, c): the activations evaluator --------------------------------------------


@functools.cache
def _mlp_run(shared_tfds):
    """One MLP run (no BN) on MNIST, built once for the evaluator tests."""
    from conftest import small_config

    from cnn_arch import run as run_lib

    config = small_config(
        model="mlp",
        dataset="mnist",
        data_dir=shared_tfds,
        eval_split="test[:300]",
        eval_batch_size=128,  # 300 = 2 full batches + a padded one
    )
    return run_lib.build(config)


def test_activations_evaluator_equals_the_hand_computed_preactivation(shared_tfds):
    """The captured input to the last hidden layer's sigmoid is x -> 3 sigmoid layers'
    pre-activation computed by hand, over exactly the first num_images eval images."""
    from cnn_arch import data
    from cnn_arch.evaluators.activations import Activations

    run = _mlp_run(shared_tfds)
    state = run.init_state()
    evaluator = Activations(name="sig", run=run, module="hidden3", unit=2, num_images=200)
    result = evaluator(state)

    images = np.concatenate(
        [b["image"] for b in data.eval_batches(run.config, run.info, local_batch_size=128)]
    )
    h = images[:200].reshape(200, -1).astype(np.float64)
    p = jax.device_get(state.params)
    for layer in ("hidden1", "hidden2"):
        h = 1 / (1 + np.exp(-(h @ p[layer]["kernel"] + p[layer]["bias"])))
    expected = (h @ p["hidden3"]["kernel"] + p["hidden3"]["bias"])[:, 2]
    np.testing.assert_allclose(evaluator.values(state.variables), expected, rtol=1e-4, atol=1e-5)
    for q in (15, 50, 85):
        assert result[f"p{q}"] == pytest.approx(np.percentile(expected, q), rel=1e-4, abs=1e-5)
    assert result["num_examples"] == 200
    assert result["p15"] < result["p50"] < result["p85"]


def test_activations_evaluator_refuses_unknown_modules_and_units(shared_tfds):
    from cnn_arch import evaluators
    from cnn_arch.evaluators.activations import Activations

    run = _mlp_run(shared_tfds)
    state = run.init_state()
    with pytest.raises(ValueError, match="not a submodule"):
        Activations(name="a", run=run, module="hidden9", num_images=10)(state)
    with pytest.raises(ValueError, match="unit=100"):
        Activations(name="a", run=run, module="hidden3", unit=100, num_images=10)(state)
    with pytest.raises(ValueError, match="module must name"):
        evaluators.check({"a": {"kind": "activations"}}, run.config)
    with pytest.raises(ValueError, match="percentiles"):
        evaluators.check(
            {"a": {"kind": "activations", "module": "x", "percentiles": [50, 120]}}, run.config
        )


# --- the experiments, short --------------------------------------------------------------


def _run_experiment(script: str, *args: str) -> None:
    proc = run_experiment(script, *args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _bn_mnist(tmp_path, shared_tfds, *args: str) -> dict:
    out = tmp_path / "out"
    _run_experiment(
        "bn_mnist.py",
        f"--out_dir={out}",
        f"--work_root={tmp_path / 'work'}",
        f"--data_dir={shared_tfds}",
        "--num_steps=200",
        "--eval_every=100",
        "--log_every=100",
        "--num_images=500",
        "--shuffle_buffer=1000",
        "--workers=1",
        *args,
    )
    assert (out / "bn_mnist.png").stat().st_size > 10_000
    assert "| 200 |" in (out / "bn_mnist.md").read_text()
    return json.loads((out / "bn_mnist.json").read_text())


def test_bn_mnist_short(shared_tfds, tmp_path):
    """Figure 1 at 200 steps, both networks, 2 seeds: every logged step has the accuracy
    and the three ordered percentiles; the table's statistics are those of the curves."""
    report = _bn_mnist(tmp_path, shared_tfds, "--seeds=0,1", "--learning_rate=0.5")
    assert "lr_sweep" not in report and report["learning_rate"] == 0.5
    for network in ("baseline", "bn"):
        for seed in ("0", "1"):
            c = report["curves"][network][seed]
            assert c["steps"] == [100, 200]
            # every logged step has the accuracy and the three percentiles, in order
            assert c["top1"][1] > 0.2  # above chance (0.1) after 200 steps
            for i in range(2):
                assert 0.0 < c["top1"][i] <= 1.0
                assert np.isfinite([c["p15"][i], c["p50"][i], c["p85"][i]]).all()
                assert c["p15"][i] < c["p50"][i] < c["p85"][i]
        top1 = report["summary"][network]["top1"]["200"]
        values = [report["curves"][network][s]["top1"][1] for s in ("0", "1")]
        assert top1["values"] == values
        assert top1["mean"] == pytest.approx(np.mean(values))
        assert top1["std"] == pytest.approx(np.std(values, ddof=1))
        drift = report["summary"][network]["drift"]
        c0 = report["curves"][network]["0"]
        assert drift["median_change"]["values"][0] == pytest.approx(c0["p50"][1] - c0["p50"][0])


@pytest.mark.slow
def test_bn_mnist_short_with_learning_rate_sweep(shared_tfds, tmp_path):
    """The sweep picks the rate with the best mean held-out accuracy of both networks."""
    report = _bn_mnist(tmp_path, shared_tfds, "--seeds=0", "--lr_grid=0.5,2", "--sweep_steps=50")
    sweep = report["lr_sweep"]
    means = {lr: row["mean"] for lr, row in sweep["validation_top1"].items()}
    assert set(means) == {"0.5", "2"}
    assert report["learning_rate"] == float(max(means, key=means.get))
    for lr, row in sweep["validation_top1"].items():
        assert row["mean"] == pytest.approx((row["baseline"] + row["bn"]) / 2), lr


# --- Figure 4's mechanisms: multi-crop views and ensembles --------------------------------


def test_view_tables_count_the_views():
    from cnn_arch.evaluators.multicrop import view_table

    counts = {k: len(view_table(k, 32, 32, 32)) for k in ("single", "flip", "10crop", "144crop")}
    assert counts == {"single": 1, "flip": 2, "10crop": 10, "144crop": 144}
    # Distinct views: the square resized to the crop does not depend on the scale; on a
    # square image the three squares coincide as well.
    assert len({tuple(r) for r in view_table("144crop", 32, 32, 32)}) == 42
    assert len({tuple(r) for r in view_table("144crop", 256, 341, 224)}) == 126
    assert len(view_table("144crop", 32, 32, 32, scales=(1.25, 1.5))) == 2 * 3 * 6 * 2
    with pytest.raises(ValueError, match="views="):
        view_table("5crop", 32, 32, 32)


def test_views_at_unit_scale_are_exact_crops_and_mirrors():
    """With a resize factor of 1 every crop is a slice of the image and every mirrored
    view its left-right flip; the single view of a crop-sized image is the image; the
    square resized to the crop side is that resize (in the interior: views resample the
    whole image, so a border pixel may also weigh the pixel just outside its square)."""
    from cnn_arch.evaluators.multicrop import render, view_table

    images = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 16, 3))
    single = view_table("single", 8, 8, 8)
    small = images[:, :8, :8]
    np.testing.assert_allclose(render(small, jnp.asarray(single[0]), 8), small, atol=1e-5)
    # 144-crop scheme at scale 12/8: shorter side 12 = the image's, so factor 1; squares
    # at x = 0, 2, 4; crops at the square's corners (offset 0 or 4) and centre (2).
    table = view_table("144crop", 12, 16, 8, scales=(12 / 8,))
    assert len(table) == 3 * 6 * 2
    for mirror in (False, True):
        rows = iter(table[18:] if mirror else table[:18])
        for sx in (0, 2, 4):
            for dy, dx in ((0, 0), (0, 4), (4, 0), (4, 4), (2, 2)):
                want = images[:, dy : dy + 8, sx + dx : sx + dx + 8]
                want = want[:, :, ::-1] if mirror else want
                got = render(images, jnp.asarray(next(rows)), 8)
                np.testing.assert_allclose(got, want, atol=1e-5)
            square = jax.image.resize(images[:, :, sx : sx + 12], (2, 8, 8, 3), "linear")
            square = square[:, :, ::-1] if mirror else square
            got = render(images, jnp.asarray(next(rows)), 8)
            np.testing.assert_allclose(got[:, 1:-1, 1:-1], square[:, 1:-1, 1:-1], atol=1e-5)
    # On a square image the square is the image: the whole view is exactly the resize.
    sq = images[:, :, :12]
    row = view_table("144crop", 12, 12, 8, scales=(12 / 8,))[5]
    want = jax.image.resize(sq, (2, 8, 8, 3), "linear", antialias=True)
    np.testing.assert_allclose(render(sq, jnp.asarray(row), 8), want, atol=1e-5)


@pytest.mark.slow  # about a CPU-minute: trains two networks, evaluates 144 crops
def test_multicrop_ensemble_short(shared_tfds, tmp_path):
    """The experiment at 10 steps on 640 CIFAR-10 images, 2 networks, 100 test images, one
    view and 144 crops for each network and the ensemble; then, on its workdirs, an
    ensemble of a network with itself is that network (the averaging is exact)."""
    from cnn_arch import evaluate as evaluate_lib
    from cnn_arch.errors import UserError

    out, work = tmp_path / "out", tmp_path / "work"
    _run_experiment(
        "multicrop_ensemble.py",
        f"--out_dir={out}",
        f"--work_root={work}",
        f"--data_dir={shared_tfds}",
        "--train_examples=640",
        "--epochs=1",
        "--batch_size=64",
        "--eval_examples=100",
        "--views=single,144crop",
        "--shuffle_buffer=1000",
        "--seeds=0,1",
        "--workers=1",
    )
    report = json.loads((out / "multicrop_ensemble.json").read_text())
    assert (out / "multicrop_ensemble.png").stat().st_size > 5_000
    assert "| 144 crops |" in (out / "multicrop_ensemble.md").read_text()
    assert report["checkpoint_step"] == 10 and report["eval_examples"] == 100
    networks, ensemble = report["results"]["networks"], report["results"]["ensemble"]
    assert len(networks) == 2
    assert set(ensemble) == {"single", "144crop"}
    for views, n in (("single", 1), ("144crop", 144)):
        e = ensemble[views]
        assert (e["views"], e["members"], e["num_examples"]) == (n, 2, 100)
        members = [r[views] for r in networks.values()]
        # Jensen: the cross-entropy of the averaged distribution is at most the mean
        # cross-entropy of the members' (each a mean over the same views).
        assert e["loss"] <= np.mean([m["loss"] for m in members]) + 1e-5
        row = report["table"][views]
        assert row["single_top1_err"] == pytest.approx([100 * (1 - m["top1"]) for m in members])
        assert row["ensemble_top1_err"] == pytest.approx(100 * (1 - e["top1"]))

    w0 = str(work / next(iter(networks)))
    data_dir = {"data_dir": shared_tfds}
    alone = evaluate_lib.evaluate_workdir(w0, ["running", "ensemble"], workdirs=[w0], **data_dir)
    r = alone["results"]
    assert r["ensemble"]["members"] == 2 and r["ensemble"]["top1"] == r["running"]["top1"]
    assert r["ensemble"]["loss"] == pytest.approx(r["running"]["loss"], rel=1e-4)
    with pytest.raises(UserError, match="--workdirs"):
        evaluate_lib.evaluate_workdir(w0, ["ensemble"], **data_dir)


# --- Sec. 4.2.2 scaled to CIFAR-10: the 32x32 stem, the width, the switches ---------------


def test_bn_inception_cifar_stem_and_width_shapes():
    """stem='cifar' puts the modules on 16/8/4 grids for 32x32 inputs and width scales
    every conv (the defaults' ImageNet network is counted in test_models_classic.py).
    Shapes only, from one abstract trace: nothing is compiled."""
    from cnn_arch import models

    model = models.create("bn_inception", num_classes=10, stem="cifar", width=0.125)
    # Figure 5's output widths x 1/8 (rounded): 3a 64+64+96+32, 4a 224+96+128+128,
    # 4e 0+192+256+576 passed through, 5b 352+320+224+128.
    expected = {
        "conv2": (2, 32, 32, 24),
        "inception3a": (2, 16, 16, 32),
        "inception4a": (2, 8, 8, 72),
        "inception4e": (2, 4, 4, 132),
        "inception5b": (2, 4, 4, 128),
    }

    def outputs(x):
        variables = model.init(jax.random.PRNGKey(0), x, train=False)
        logits, state = model.apply(
            variables,
            x,
            train=False,
            mutable=["intermediates"],
            capture_intermediates=lambda m, method: len(m.path) == 1 and m.path[0] in expected,
        )
        return logits, {k: v["__call__"][0] for k, v in state["intermediates"].items()}

    logits, captured = jax.eval_shape(outputs, jnp.zeros((2, 32, 32, 3)))
    assert logits.shape == (2, 10)
    assert {k: v.shape for k, v in captured.items()} == expected
    with pytest.raises(ValueError, match="stem"):
        models.create("bn_inception", stem="tiny")


def test_bn_inception_cifar_switches_compose_the_networks():
    """Each Sec. 4.2.1 switch changes only its own config keys; BN-x5 is BN-Baseline with
    all seven (x5); '+change' / '-change' are the ablations."""
    sys.path.insert(0, str(ROOT))
    from configs import bn_inception_cifar as cfg

    def flat(c) -> dict:
        d = c.to_dict()
        return {**{k: v for k, v in d.items() if k != "model_kwargs"}, **d["model_kwargs"]}

    keys = {
        "lr_x5": {"learning_rate"},
        "no_dropout": {"dropout_rate"},
        "l2_div5": {"weight_decay"},
        "decay_x6": {"lr_decay_every_epochs"},
        "no_lrn": {"lrn"},
        "thorough_shuffle": {"shuffle_buffer"},
        "less_distortion": {"train_pp"},
    }
    base, x5 = flat(cfg.get_config("bn_baseline")), flat(cfg.get_config("bn_x5"))
    for change, changed in keys.items():
        plus = flat(cfg.get_config(f"bn_baseline+{change}"))
        assert {k for k in base if base[k] != plus[k]} == changed, change
        minus = flat(cfg.get_config(f"bn_x5-{change}"))
        assert {k for k in x5 if x5[k] != minus[k]} == changed, change
    assert {k for k in base if base[k] != x5[k]} == set().union(*keys.values())
    assert x5["learning_rate"] == pytest.approx(5 * base["learning_rate"])
    assert flat(cfg.get_config("bn_x30"))["learning_rate"] == pytest.approx(0.045)
    assert flat(cfg.get_config("inception"))["norm"] == "none"
    with pytest.raises(ValueError, match="already has"):
        cfg.get_config("bn_x5+no_lrn")


@pytest.mark.slow
def test_bn_inception_cifar_short(shared_tfds, tmp_path):
    """The study at 20 steps (two networks): curves at every eval, Figure 3's columns."""
    out = tmp_path / "out"
    _run_experiment(
        "bn_inception_cifar.py",
        f"--out_dir={out}",
        f"--work_root={tmp_path / 'work'}",
        f"--data_dir={shared_tfds}",
        "--scale=short",
        "--num_steps=20",
        "--eval_every=10",
        "--eval_examples=100",
        "--networks=inception,bn_x5",
        "--workers=1",
    )
    report = json.loads((out / "bn_inception_cifar.json").read_text())
    assert "Short run" in (out / "bn_inception_cifar.md").read_text()
    a = report["analysis"]
    for name in ("inception", "bn_x5"):
        c = report["curves"][name]
        assert c["steps"] == [10, 20] and all(0 <= t <= 1 for t in c["top1"])
        assert a["networks"][name]["max_top1"] == max(c["top1"])
    assert a["inception_max"] == max(report["curves"]["inception"]["top1"])
    assert a["networks"]["inception"]["steps_to_inception_max"] is not None
