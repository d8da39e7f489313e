"""ResNet / plain / pre-act / WRN / ResNeXt / SE-ResNet / DenseNet: exact sizes and behaviour.

Big models are only traced (``jax.eval_shape``); real forward passes use small nets.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_arch import models

# name -> parameters at the registered default classes (1000 ImageNet, 10 CIFAR).
PARAM_COUNTS = {
    # torchvision
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
    "densenet121": 7_978_856,
    "densenet161": 28_681_000,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    # plain nets = resnet18/34 minus the 3 projections (1x1 conv + BN):
    # (64*128 + 2*128) + (128*256 + 2*256) + (256*512 + 2*512) = 173,824
    "plain18": 11_689_512 - 173_824,
    "plain34": 21_797_672 - 173_824,
    # Cadene pretrainedmodels (SE FCs with biases)
    "se_resnet50": 28_088_024,
    "se_resnet101": 49_326_872,
    "se_resnet152": 66_821_848,
    "se_resnext50_32x4d": 27_559_896,
    # akamaster/pytorch_resnet_cifar10 (option A: shortcuts add no parameters)
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "plain20": 269_722,
    "plain32": 464_154,
    "plain44": 658_586,
    "plain56": 853_018,
    "plain110": 1_727_962,
    # pre-activation: same convs; BN moves onto unit inputs, projections lose their BN.
    # resnet18 - stem BN 128 - projection BNs 1,792 + final BN 1,024 - 896 (the first
    # BN of each downsampling unit sees the narrower input: 64+128+256 fewer channels x2)
    "preact_resnet18": 11_687_720,
    # resnet110 - stem BN 32 + final BN 128 - 96 (narrower inputs of 2 downsampling units)
    "preact_resnet110": 1_727_962,
    "preact_resnet164": 1_703_258,  # "Identity Mappings" Table 3: 1.7M
    "wrn28_10": 36_479_194,  # xternalz/WideResNet-pytorch; WRN paper Table 5: 36.5M
    "densenet_bc100": 769_162,  # bamos/densenet.pytorch; DenseNet paper Table 2: 0.8M
}


def trace(model, shape, **kw):
    """(logits, variables) as ShapeDtypeStructs: the model is traced, never run."""
    init = functools.partial(model.init_with_output, train=False, **kw)
    return jax.eval_shape(init, jax.random.key(0), jnp.zeros(shape))


def real_init(model, x):
    """Initial variables from the model's own initializers, compiled as one program with
    rbg keys (threefry's per-parameter RNG graph compiles several times slower on CPU)."""
    init = jax.jit(functools.partial(model.init, train=False))
    return init(jax.random.key(0, impl="rbg"), x)


def n_params(variables) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_param_count_and_output_shape(name):
    spec = models.spec(name)
    model = models.create(name)
    logits, variables = trace(model, (2, *spec.input_shape))
    assert n_params(variables) == PARAM_COUNTS[name]
    assert logits.shape == (2, model.num_classes) and logits.dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))


def test_option_b_shortcuts_add_projections():
    # 1x1 conv + BN where the shape changes: (16*32 + 2*32) + (32*64 + 2*64)
    _, v = trace(models.create("resnet20", shortcut="B"), (1, 32, 32, 3))
    assert n_params(v) == 269_722 + 2_752
    _, v = trace(models.create("resnet20", shortcut="C"), (1, 32, 32, 3))
    # ... plus 1x1 conv + BN on the 7 same-shape units: 3 at 16, 2 at 32, 2 at 64 channels
    same_shape = 3 * (16 * 16 + 32) + 2 * (32 * 32 + 64) + 2 * (64 * 64 + 128)
    assert n_params(v) == 269_722 + 2_752 + same_shape


@pytest.mark.parametrize("version,stride_in", [("v1", "conv1"), ("v1.5", "conv2")])
def test_bottleneck_stride_position(version, stride_in):
    model = models.create("resnet50", version=version)
    _, state = jax.eval_shape(
        lambda x: model.apply(
            model.init(jax.random.key(0), x, train=False),
            x,
            train=False,
            capture_intermediates=True,
            mutable=["intermediates"],
        ),
        jnp.zeros((1, 64, 64, 3)),
    )
    unit = state["intermediates"]["layer2_0"]  # 16x16 in, 8x8 out
    sizes = {c: unit[c]["__call__"][0].shape[1] for c in ("conv1", "conv2", "conv3")}
    assert sizes == {"conv1": 8 if stride_in == "conv1" else 16, "conv2": 8, "conv3": 8}


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "resnet20", "densenet_bc100"])
def test_any_input_size(name):
    """Global average pooling: 28x28 grey digits and 224x224 RGB work for every model."""
    for shape in [(1, 28, 28, 1), (1, 224, 224, 3)]:
        logits, _ = trace(models.create(name, num_classes=7), shape)
        assert logits.shape == (1, 7)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    logits, v = trace(models.create("resnet18", dtype=jnp.bfloat16), (2, 32, 32, 3))
    assert logits.dtype == jnp.float32
    assert {p.dtype for p in jax.tree.leaves(v)} == {jnp.dtype(jnp.float32)}


def test_zero_init_residual():
    """The last BN scale of each unit (post-act) or its last conv (pre-act) starts at 0."""
    model = models.create("resnet20", zero_init_residual=True, stage_sizes=(1, 1, 1))
    v = real_init(model, jnp.zeros((1, 8, 8, 3)))
    assert float(jnp.abs(v["params"]["layer1_0"]["bn2"]["scale"]).max()) == 0.0
    assert float(v["params"]["layer1_0"]["bn1"]["scale"].min()) == 1.0
    pre = models.create("preact_resnet110", zero_init_residual=True, stage_sizes=(1, 1, 1))
    v = real_init(pre, jnp.zeros((1, 8, 8, 3)))
    assert float(jnp.abs(v["params"]["layer2_0"]["conv2"]["kernel"]).max()) == 0.0


def test_batch_stats_update_in_train_only():
    model = models.create("resnet20")
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3)) * 2.0 + 1.0
    v = real_init(model, x)

    @jax.jit
    def run(v):
        train_out = model.apply(v, x, train=True, mutable=["batch_stats"])
        return train_out, model.apply(v, x, train=False, mutable=["batch_stats"])

    (logits, new), (out, state) = run(v)
    assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
    old_mean = v["batch_stats"]["bn1"]["mean"]
    assert not np.allclose(new["batch_stats"]["bn1"]["mean"], old_mean)
    assert not np.allclose(
        new["batch_stats"]["layer3_2"]["bn2"]["var"], v["batch_stats"]["layer3_2"]["bn2"]["var"]
    )
    jax.tree.map(np.testing.assert_array_equal, state["batch_stats"], v["batch_stats"])
    np.testing.assert_array_equal(out, run(v)[1][0])  # evaluation is deterministic


def test_group_norm_has_no_batch_stats():
    # 32 groups need multiples of 32 channels: a slim resnet18.
    slim = dict(stage_sizes=(1, 1, 1, 1), stem_width=32, widths=(32, 32, 64, 64), num_classes=10)
    model = models.create("resnet18", norm="group", **slim)
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    _, v = trace(model, x.shape)
    assert "batch_stats" not in v and set(v["params"]["bn1"]) == {"scale", "bias"}
    forward(model, x)


def test_norm_none_gives_conv_biases():
    _, v = trace(models.create("resnet20", norm="none"), (1, 32, 32, 3))
    assert "bias" in v["params"]["conv1"] and "bn1" not in v["params"]


def forward(model, x, rngs=(0,)):
    """Init + training-mode forward passes (one per dropout key), compiled as one program."""

    @jax.jit
    def run(x):
        v = model.init(jax.random.key(0, impl="rbg"), x, train=False)
        return [
            model.apply(
                v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(r)}
            )[0]
            for r in rngs
        ]

    outs = run(x)
    for out in outs:
        assert out.shape == (x.shape[0], model.num_classes) and bool(jnp.all(jnp.isfinite(out)))
    return outs


def test_small_wrn_with_se_and_dropout_runs():
    # Pre-activation units, projection shortcuts, SE blocks, dropout between the convs.
    model = models.create(
        "wrn28_10", stage_sizes=(1, 1, 1), widths=(16, 32, 64), dropout_rate=0.3, se_ratio=4
    )
    a, b = forward(model, jax.random.normal(jax.random.key(2), (2, 32, 32, 3)), rngs=(0, 1))
    assert not np.allclose(a, b)  # dropout is on in training


def test_small_densenet_runs_on_grey_28x28():
    model = models.create("densenet121", block_sizes=(1, 1, 1, 1), num_classes=10, drop_rate=0.2)
    forward(model, jax.random.normal(jax.random.key(3), (2, 28, 28, 1)))


@pytest.mark.parametrize("option", [{"shortcut": "D"}, {"version": "v2"}, {"stem": "tiny"}])
def test_bad_options_are_clear_errors(option):
    with pytest.raises(ValueError, match=next(iter(option))):
        trace(models.create("resnet20", **option), (1, 32, 32, 3))


def cifar_resnet_params(n: int, classes: int = 10) -> int:
    """He et al. Sec. 4.2, option A, convs without bias + BN (scale, shift): the 3x3 stem to
    16, stage 1 of n units at 16, stages 2-3 whose first unit widens 16->32 / 32->64."""
    unit = lambda cin, c: 9 * cin * c + 9 * c * c + 4 * c  # noqa: E731
    stem = 9 * 3 * 16 + 2 * 16
    stages = n * unit(16, 16) + unit(16, 32) + (n - 1) * unit(32, 32)
    stages += unit(32, 64) + (n - 1) * unit(64, 64)
    return stem + stages + 64 * classes + classes


def test_resnet1202_is_registered_with_table6_size():
    for depth in (20, 32, 44, 56, 110):  # the formula against the traced counts above
        assert cifar_resnet_params((depth - 2) // 6) == PARAM_COUNTS[f"resnet{depth}"]
    spec = models.spec("resnet1202")
    assert spec.defaults["stage_sizes"] == (200, 200, 200) and spec.defaults["shortcut"] == "A"
    assert cifar_resnet_params(200) == 19_421_274  # He et al. Table 6: 19.4M


@pytest.mark.slow
def test_resnet1202_traced_count():
    _, v = trace(models.create("resnet1202"), (1, 32, 32, 3))
    assert n_params(v) == cifar_resnet_params(200)


SMALL = dict(stage_sizes=(1, 1, 1))  # resnet20's code paths, one unit per stage


def tree_shapes(variables):
    return jax.tree.map(lambda a: a.shape, variables)


def test_norm_position_none_and_network_input_trees():
    _, plain = trace(models.create("resnet20", norm="none", **SMALL), (1, 32, 32, 3))
    _, none = trace(models.create("resnet20", norm_position="none", **SMALL), (1, 32, 32, 3))
    assert tree_shapes(none) == tree_shapes(plain)  # the network of norm='none'
    _, inp = trace(models.create("resnet20", norm_position="network_input", **SMALL), (1, 8, 8, 3))
    assert inp["params"]["input_norm"]["scale"].shape == (3,)
    assert set(inp["batch_stats"]) == {"input_norm"}  # the only norm: on the raw input
    del inp["params"]["input_norm"]
    assert tree_shapes(inp["params"]) == tree_shapes(plain["params"])


def _norm_inputs(model, x):
    """The input of every BatchNorm call of one training forward, by module path, with
    random variables of the model's shapes (one compiled program, no init to compile)."""
    _, shapes = trace(model, x.shape)
    rng = np.random.default_rng(0)
    v = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)

    @jax.jit
    def run(v, x):
        seen = {}

        def record(next_fun, args, kwargs, context):
            if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
                seen["/".join(context.module.path)] = args[0]
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(record):
            model.apply(v, x, train=True, mutable=["batch_stats"])
        return seen

    return run(v, x), v


@pytest.mark.parametrize("preact", [False, True])
def test_norm_position_after_puts_norm_after_the_activation(preact):
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
    model = models.create("resnet20", norm_position="after", preact=preact, **SMALL)
    seen, v = _norm_inputs(model, x)
    after_relu = [p for p in seen if p.endswith(("bn1", "bn_final")) or "/bn1" in p]
    assert after_relu and all(float(seen[p].min()) >= 0.0 for p in after_relu)
    if not preact:  # the branch's last norm follows its conv (no act before the addition)
        assert float(seen["layer1_0/bn2"].min()) < 0.0
    # a conv a ReLU follows keeps its bias, one a norm follows directly drops it (Sec. 3.2):
    # post-activation: the stem and each unit's conv1 (conv2 ends in bn2); pre-activation:
    # every conv (each one's output meets a ReLU before the next norm)
    before = models.create("resnet20", preact=preact, **SMALL)
    _, v_before = trace(before, x.shape)
    n_biases = n_params(v) - n_params(v_before)
    conv_out = 16 + (16 + 32 + 64) + (16 + 32 + 64 if preact else 0)
    assert n_biases == conv_out


def test_old_norm_position_input_is_refused_with_the_new_names():
    with pytest.raises(ValueError, match="layer_input, network_input"):
        models.create("lenet5", norm="batch", norm_position="input")
    with pytest.raises(ValueError, match="before, after, network_input, none$"):
        models.create("resnet20", norm_position="layer_input")
