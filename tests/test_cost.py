"""The cost counter (cnn_arch.models.cost) and the small facts the notes state (issue 14,
items 2 and 4): Inception module costs, receptive fields, 1x1 conv = dense layer."""

from __future__ import annotations

import importlib.util

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

from cnn_arch import models
from cnn_arch.models import blocks, cost


def module_cost(module, shape) -> tuple[int, int]:
    """(weights, multiply-adds) of ``module`` on one input of ``shape``, by the counter."""
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    v = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), x)
    macs = sum(
        t.macs for t in cost.function_mac_terms(lambda v, x: module.apply(v, x, train=False), v, x)
    )
    kernels = [
        a for p, a in jax.tree_util.tree_flatten_with_path(v["params"])[0] if "kernel" in str(p)
    ]
    return sum(int(a.size) for a in kernels), macs


def reduced(c1, c3r, c3, c5r, c5, pool_proj):
    branches = (((c1, 1, 1),), ((c3r, 1, 1), (c3, 3, 1)), ((c5r, 1, 1), (c5, 5, 1)))
    return blocks.Inception(branches, "max", 1, pool_proj)


HW = 28 * 28  # every conv of these modules keeps the 28x28 grid


def test_inception_modules_on_28x28x256_as_the_csc413_slide():
    naive = blocks.Inception((((128, 1, 1),), ((192, 3, 1),), ((96, 5, 1),)), "max", 1, 0)
    # the slide's terms 28x28xC_out x k x k x C_in: 1x1/128 + 3x3/192 + 5x5/96 on 256
    assert module_cost(naive, (28, 28, 256))[1] == HW * 256 * (128 + 9 * 192 + 25 * 96)
    assert HW * 256 * (128 + 9 * 192 + 25 * 96) == 854_196_224  # the slide's "854M" holds
    # the slide's six convs (reductions 64 / 64, pool proj 64) sum to 271M, not its 358M
    six = HW * (64 * 256 + 64 * 256 + 128 * 256 + 192 * 9 * 64 + 96 * 25 * 64 + 64 * 256)
    assert module_cost(reduced(128, 64, 192, 64, 96, 64), (28, 28, 256))[1] == six == 271_351_808
    assert six + HW * 192 * 9 * 64 == 358_055_936  # 358M = the 3x3 term counted twice
    # GoogLeNet 3b (Table 1) on the same input: 304M
    assert module_cost(reduced(128, 128, 192, 32, 96, 64), (28, 28, 256))[1] == 304_267_264


def test_notes_table_on_28x28x192_to_256_channels():
    # GoogLeNet 3a: the notes' 128M holds; its weights are 163,328, not 16,000
    assert module_cost(reduced(64, 96, 128, 16, 32, 32), (28, 28, 192)) == (163_328, 128_049_152)
    conv = lambda k: blocks.ConvNormAct(256, k, 1, k // 2)  # noqa: E731
    assert module_cost(conv(3), (28, 28, 192)) == (442_368, 346_816_512)  # notes: 44,000 / 346M
    assert module_cost(conv(5), (28, 28, 192)) == (1_228_800, 963_379_200)  # 1,22,000 / 963M


def test_inception_cost_experiment_short():
    spec = importlib.util.spec_from_file_location(
        "inception_cost", ROOT / "experiments" / "inception_cost.py"
    )
    experiment = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(experiment)
    r = experiment.run("short")
    assert r["slide"]["reduced"]["slide_terms_sum"] == r["slide"]["reduced"]["counter"]["macs"]
    assert r["slide"]["naive"]["counter"]["output"] == [28, 28, 672]  # pool passes 256 through
    assert r["slide"]["reduced"]["counter"]["output"] == [28, 28, 480]
    # the only inputs that print as the notes' 3x3 / 5x5 rows: 19 channels at 89x89
    for row in ("conv3x3", "conv5x5"):
        assert {(s["c_in"], s["size"]) for s in r["notes"][row]["solutions"]} == {(19, 89)}
    assert r["notes"]["inception"]["min_weights_any_input"] > 16_000


@pytest.mark.parametrize(
    "name, macs",
    [
        # by hand: conv1 28x28x6 x 25, conv2 10x10x16 x 150, FCs 400x120, 120x84, 84x10
        ("lenet5", 28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 400 * 120 + 120 * 84 + 84 * 10),
        ("alexnet", 714_188_480),  # torchvision's 0.714 GFLOPS
    ],
)
def test_model_macs(name, macs):
    assert cost.model_macs(models.create(name), models.spec(name).input_shape) == macs


def _field_by_gradient(kernels: list[int], size: int = 21) -> int:
    """Width of the input region that one centre output depends on, from its gradient."""

    def centre(x):
        for k in kernels:
            w = jnp.ones((k, k, 1, 1))
            x = jax.lax.conv_general_dilated(
                x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        return x[0, size // 2, size // 2, 0]

    g = np.asarray(jax.grad(centre)(jnp.ones((1, size, size, 1))))[0, :, :, 0]
    return int((np.abs(g).sum(axis=0) > 0).sum())


@pytest.mark.parametrize("n, single", [(2, 5), (3, 7)])
def test_stacked_3x3_convs_see_what_one_larger_conv_sees_with_fewer_parameters(n, single):
    assert cost.receptive_field([(3, 1)] * n) == single == _field_by_gradient([3] * n)
    assert cost.receptive_field([(single, 1)]) == _field_by_gradient([single])
    # VGG Sec. 2.3: n x 3x3 convs with C channels have 9nC^2 weights against single^2 C^2
    c = 64
    stacked = sum(int(np.prod(k.shape)) for k in _conv_kernels([3] * n, c))
    assert (
        stacked
        == n * 9 * c * c
        < single * single * c * c
        == sum(int(np.prod(k.shape)) for k in _conv_kernels([single], c))
    )


def _conv_kernels(kernels, channels):
    model = nn.Sequential([nn.Conv(channels, (k, k), use_bias=False) for k in kernels])
    v = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, channels)))
    return jax.tree.leaves(v)


def test_receptive_field_with_strides():
    # AlexNet's conv1 (11/4) + max pool (3/2): 11 + 2 * 4 = 19
    assert cost.receptive_field([(11, 4), (3, 2)]) == 19
    assert cost.receptive_field([]) == 1


def test_1x1_conv_is_a_dense_layer_on_every_pixel():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 7, 6)).astype(np.float32)
    kernel, bias = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    conv, dense = nn.Conv(4, (1, 1)), nn.Dense(4)

    @jax.jit
    def both(x):
        y_conv = conv.apply({"params": {"kernel": kernel.reshape(1, 1, 6, 4), "bias": bias}}, x)
        d = {"params": {"kernel": kernel, "bias": bias}}
        return (
            y_conv,
            dense.apply(d, x),
            dense.apply(d, x.reshape(-1, 6)).reshape(x.shape[:3] + (4,)),
        )

    y_conv, y_dense, per_pixel = both(x)
    np.testing.assert_allclose(y_conv, y_dense, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_conv, per_pixel, rtol=1e-5, atol=1e-5)  # each pixel alike
    np.testing.assert_allclose(y_conv, x @ kernel + bias, rtol=1e-5, atol=1e-5)
    # and the same multiply-adds: 2 x 5 x 7 pixels x 6 inputs x 4 outputs
    conv_v = {"params": {"kernel": kernel.reshape(1, 1, 6, 4), "bias": bias}}
    dense_v = {"params": {"kernel": kernel, "bias": bias}}
    macs = [
        sum(t.macs for t in cost.function_mac_terms(m.apply, v, x))
        for m, v in ((conv, conv_v), (dense, dense_v))
    ]
    assert macs == [2 * 5 * 7 * 6 * 4] * 2


@pytest.mark.slow
def test_architecture_claims_experiment():
    spec = importlib.util.spec_from_file_location(
        "architecture_claims", ROOT / "experiments" / "architecture_claims.py"
    )
    experiment = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(experiment)
    r = experiment.run()
    assert r["models"]["alexnet"]["params"] == 61_100_840
    assert r["models"]["lenet5"]["macs"] == 416_520
    params_claim = r["claims"][1]
    ratio = {(p["num"], p["den"]): p["ratio"] for p in params_claim["pairs"]}
    assert ratio[("alexnet", "lenet5")] == pytest.approx(61_100_840 / 61_706)
    assert not any(p["holds"] for p in params_claim["pairs"])  # ~990x, not 10x
