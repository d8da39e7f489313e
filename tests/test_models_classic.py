"""AlexNet, VGG, GoogLeNet, BN-Inception, SqueezeNet: exact counts, paper shapes, small
inputs, dropout and auxiliary heads, and the pooling / LRN helpers they share."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_arch.models import create, spec
from cnn_arch.models.bn_inception import PAPER_NETWORKS
from cnn_arch.models.layers import adaptive_avg_pool, local_response_norm, pool2d

KEY = jax.random.key(0)
CLASSIC = (
    ["alexnet", "alexnet_paper", "googlenet", "inception_v1", "bn_inception"]
    + ["squeezenet1_0", "squeezenet1_1"]
    + [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]
)


def abstract_variables(model, shape):
    """Variable shapes without computing anything."""
    rngs = {"params": KEY, "dropout": KEY}
    return jax.eval_shape(lambda x: model.init(rngs, x, train=False), jnp.zeros(shape))


def abstract_apply(model, shape, *, train: bool, **kw):
    variables = abstract_variables(model, shape)
    mutable = ["batch_stats"] if train else False

    def fn(v, x):
        return model.apply(v, x, train=train, rngs={"dropout": KEY}, mutable=mutable, **kw)

    return jax.eval_shape(fn, variables, jnp.zeros(shape))


def count(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


# --- independent arithmetic from the papers' tables (not the model code) -------------


def conv(cin, cout, k=1, bias=True, bn=False):
    return k * k * cin * cout + (cout if bias else 0) + (2 * cout if bn else 0)


def googlenet_paper_count(classes=1000, aux=False):
    """Table 1 of Szegedy et al. 2014 with 5x5 convs, biases, no BN."""
    n = conv(3, 64, 7) + conv(64, 64) + conv(64, 192, 3)
    rows = [(64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), (192, 96, 208, 16, 48, 64)]
    rows += [(160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64)]
    rows += [(112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)]
    rows += [(256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)]
    cin, aux_in = 192, []
    for i, (c1, c3r, c3, c5r, c5, pp) in enumerate(rows):
        n += conv(cin, c1) + conv(cin, c3r) + conv(c3r, c3, 3) + conv(cin, c5r) + conv(c5r, c5, 5)
        n += conv(cin, pp)
        cin = c1 + c3 + c5 + pp
        if i in (2, 5):  # after 4a and 4d
            aux_in.append(cin)
    if aux:  # Sec. 5: 1x1 conv 128 on a 4x4 map, FC 1024, linear classifier
        n += sum(conv(c, 128) + 2048 * 1024 + 1024 + 1024 * classes + classes for c in aux_in)
    return n + 1024 * classes + classes


def bn_inception_count(classes=1000, bn=True):
    """Figure 5 of the BN paper: separable first conv (x8), BN convs without bias."""
    c = lambda cin, cout, k=1: conv(cin, cout, k, bias=not bn, bn=bn)  # noqa: E731
    n = 7 * 7 * 24 + c(24, 64) + c(64, 64) + c(64, 192, 3)
    rows = [(64, 64, 64, 64, 96, 32), (64, 64, 96, 64, 96, 64), (0, 128, 160, 64, 96, 0)]
    rows += [(224, 64, 96, 96, 128, 128), (192, 96, 128, 96, 128, 128)]
    rows += [(160, 128, 160, 128, 160, 128), (96, 128, 192, 160, 192, 128)]
    rows += [(0, 128, 192, 192, 256, 0), (352, 192, 320, 160, 224, 128)]
    rows += [(352, 192, 320, 192, 224, 128)]
    cin = 192
    for c1, c3r, c3, d3r, d3, pp in rows:
        n += (c(cin, c1) if c1 else 0) + c(cin, c3r) + c(c3r, c3, 3) + c(cin, d3r)
        n += c(d3r, d3, 3) + c(d3, d3, 3) + (c(cin, pp) if pp else 0)
        cin = c1 + c3 + d3 + (pp if pp else cin)  # stride-2 modules pass the pool through
    assert cin == 1024
    return n + 1024 * classes + classes


VGG11_CONVS = (64, 128, 256, 256, 512, 512, 512, 512)  # config A


@pytest.mark.parametrize(
    "name, overrides, expected",
    [
        ("alexnet", {}, 61_100_840),  # torchvision
        # Krizhevsky 2012 Fig. 2, grouped conv2/4/5: 34,944 + 307,456 + 885,120 + 663,936
        # + 442,624 + 37,752,832 + 16,781,312 + 4,097,000
        ("alexnet_paper", {}, 60_965_224),
        ("vgg11", {}, 132_863_336),  # torchvision, this and the next seven
        ("vgg11_bn", {}, 132_868_840),
        ("vgg13", {}, 133_047_848),
        ("vgg13_bn", {}, 133_053_736),
        ("vgg16", {}, 138_357_544),
        ("vgg16_bn", {}, 138_365_992),
        ("vgg19", {}, 143_667_240),
        ("vgg19_bn", {}, 143_678_248),
        ("vgg11", {"norm": "group"}, 132_868_840),  # GN has BN's scale+shift per channel
        ("vgg11_bn", {"conv_bias": False}, 132_868_840 - sum(VGG11_CONVS)),
        ("vgg11_bn", {"norm_position": "after"}, 132_868_840),
        # 'layer_input': BN on each conv's input channels (3, 64, 128, 256, 256, 512, 512, 512)
        (
            "vgg11_bn",
            {"norm_position": "layer_input"},
            132_863_336 + 2 * (3 + sum(VGG11_CONVS[:-1])),
        ),
        # 'network_input': vgg11 plus one BN on the 3 input channels; 'none': vgg11
        ("vgg11_bn", {"norm_position": "network_input"}, 132_863_336 + 2 * 3),
        ("vgg11_bn", {"norm_position": "none"}, 132_863_336),
        ("googlenet", {}, 6_624_904),  # torchvision, aux_logits=False
        ("googlenet", {"aux_logits": True}, 13_004_888),  # torchvision, aux_logits=True
        ("inception_v1", {}, googlenet_paper_count()),  # 6,998,552
        ("inception_v1", {"aux_logits": True}, googlenet_paper_count(aux=True)),  # 13,378,280
        ("bn_inception", {}, bn_inception_count()),  # 11,278,528
        ("bn_inception", {"norm": "none"}, bn_inception_count(bn=False)),  # 11,268,512
        ("bn_inception", {"separable_stem": False}, bn_inception_count() - 1176 - 1536 + 9408),
        ("squeezenet1_0", {}, 1_248_424),  # torchvision
        ("squeezenet1_1", {}, 1_235_496),  # torchvision
    ],
)
def test_param_count(name, overrides, expected):
    model = create(name, **overrides)
    variables = abstract_variables(model, (1, *spec(name).input_shape))
    assert count(variables["params"]) == expected


def test_table_counts():
    assert googlenet_paper_count() == 6_998_552
    assert bn_inception_count() == 11_278_528


def test_googlenet_naive_module_passes_pool_through():
    # Naive module (Fig. 2a): output = #1x1 + #3x3 + #5x5 + input channels.
    out = abstract_apply(
        create("inception_v1", reduction=False), (1, 224, 224, 3), train=False,
        capture_intermediates=lambda mdl, _: mdl.name == "inception3a",
    )  # fmt: skip
    _, state = out
    assert state["intermediates"]["inception3a"]["__call__"][0].shape == (
        1,
        28,
        28,
        64 + 128 + 32 + 192,
    )


@pytest.mark.parametrize(
    "name, expected",
    [
        # GoogLeNet Table 1 output sizes.
        ("googlenet", {"inception3b": (28, 28, 480), "inception4e": (14, 14, 832),
                       "inception5b": (7, 7, 1024)}),
        ("inception_v1", {"inception3a": (28, 28, 256), "inception4a": (14, 14, 512),
                          "inception5b": (7, 7, 1024)}),
        # BN paper Fig. 5 (4c/4d/4e: the widths' sums, see bn_inception.py).
        ("bn_inception", {"inception3b": (28, 28, 320), "inception3c": (14, 14, 576),
                          "inception4c": (14, 14, 608), "inception4e": (7, 7, 1056),
                          "inception5b": (7, 7, 1024)}),
        # Krizhevsky Fig. 2 at 227: 55x55x96, 27x27x256, 13x13x384/384/256.
        ("alexnet_paper", {"conv1": (55, 55, 96), "conv2": (27, 27, 256),
                           "conv5": (13, 13, 256)}),
        ("vgg16", {"conv1_2": (224, 224, 64), "conv5_3": (14, 14, 512)}),
        ("squeezenet1_0", {"fire9_squeeze": (13, 13, 64), "conv10": (13, 13, 1000)}),
    ],
)  # fmt: skip
def test_paper_shapes(name, expected):
    model = create(name)
    _, state = abstract_apply(
        model, (1, *spec(name).input_shape), train=False,
        capture_intermediates=lambda mdl, _: mdl.name in expected,
    )  # fmt: skip
    got = {k: v["__call__"][0].shape[1:] for k, v in state["intermediates"].items()}
    assert got == expected


@pytest.mark.parametrize("name", CLASSIC)
@pytest.mark.parametrize("shape", [(2, 28, 28, 1), (2, 32, 32, 3)])
def test_small_inputs_shapes(name, shape):
    out = abstract_apply(create(name, num_classes=10), shape, train=False)
    assert out.shape == (2, 10) and out.dtype == jnp.float32


@pytest.mark.parametrize("name", ["googlenet", "inception_v1"])
def test_aux_heads_only_in_training(name):
    model = create(name, num_classes=10, aux_logits=True)
    main, aux1, aux2 = abstract_apply(model, (2, 32, 32, 3), train=True)[0]
    assert main.shape == aux1.shape == aux2.shape == (2, 10)
    assert abstract_apply(model, (2, 32, 32, 3), train=False).shape == (2, 10)
    plain = create(name, num_classes=10)
    assert abstract_apply(plain, (2, 32, 32, 3), train=True)[0].shape == (2, 10)


@pytest.mark.parametrize("config", sorted(PAPER_NETWORKS))
def test_bn_paper_networks_build(config):
    overrides = {k: v for k, v in PAPER_NETWORKS[config].items() if k != "learning_rate"}
    model = create("bn_inception", num_classes=10, **overrides)
    variables = abstract_variables(model, (1, 224, 224, 3))
    assert ("batch_stats" in variables) == (overrides["norm"] == "batch")
    assert abstract_apply(model, (2, 32, 32, 3), train=False).shape == (2, 10)


def test_bfloat16_compute_float32_params_and_logits():
    model = create("googlenet", num_classes=10, dtype=jnp.bfloat16)
    variables = abstract_variables(model, (2, 32, 32, 3))
    assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert abstract_apply(model, (2, 32, 32, 3), train=False).dtype == jnp.float32


# --- real computation on the small models ---------------------------------------------


def quick_variables(model, shape):
    """Real-valued variables without compiling ``init`` (its RNG graph compiles slowly on
    CPU): He-normal kernels, unit scales/variances, zero shifts/means."""
    rng = np.random.default_rng(0)

    def fill(path, s):
        leaf = path[-1].key
        if leaf in ("scale", "var"):
            return jnp.ones(s.shape, s.dtype)
        if leaf in ("bias", "mean"):
            return jnp.zeros(s.shape, s.dtype)
        std = np.sqrt(2.0 / np.prod(s.shape[:-1]))
        return jnp.asarray(rng.normal(scale=std, size=s.shape), s.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract_variables(model, shape))


@pytest.mark.parametrize(
    "name, shape, real_init",
    [("squeezenet1_0", (2, 28, 28, 1), False), ("squeezenet1_1", (2, 32, 32, 3), True)],
)
def test_dropout_only_in_training(name, shape, real_init):
    model = create(name, num_classes=10)
    x = jax.random.normal(jax.random.key(1), shape)
    if real_init:  # the model's own initializers (rbg keys compile faster than threefry)
        variables = jax.jit(lambda x: model.init(jax.random.key(0, impl="rbg"), x, train=False))(x)
    else:
        variables = quick_variables(model, shape)
    train = jax.jit(lambda r: model.apply(variables, x, train=True, rngs={"dropout": r}))
    evaluate = jax.jit(lambda: model.apply(variables, x, train=False))
    a, b = train(jax.random.key(2)), train(jax.random.key(3))
    assert a.shape == (2, 10) and bool(jnp.isfinite(a).all())
    assert not np.allclose(a, b)  # different dropout masks
    np.testing.assert_array_equal(a, train(jax.random.key(2)))
    e = evaluate()
    np.testing.assert_array_equal(e, evaluate())  # eval is deterministic
    assert not np.allclose(a, e)


def test_bn_inception_train_step_updates_batch_stats():
    model = create("bn_inception", num_classes=10)
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    variables = quick_variables(model, x.shape)
    logits, new = jax.jit(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables
    )
    assert logits.shape == (4, 10) and bool(jnp.isfinite(logits).all())
    old_mean = variables["batch_stats"]["conv1"]["norm"]["mean"]
    assert not np.allclose(old_mean, new["batch_stats"]["conv1"]["norm"]["mean"])


def test_googlenet_aux_forward():
    model = create("googlenet", num_classes=10, aux_logits=True)
    x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
    variables = quick_variables(model, x.shape)
    outs, _ = jax.jit(
        lambda v, r: model.apply(v, x, train=True, rngs={"dropout": r}, mutable=["batch_stats"])
    )(variables, jax.random.key(2))
    assert len(outs) == 3
    for o in outs:
        assert o.shape == (2, 10) and o.dtype == jnp.float32 and bool(jnp.isfinite(o).all())
    assert not np.allclose(outs[0], outs[1]) and not np.allclose(outs[1], outs[2])


# --- helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize("n_in, n_out", [(13, 6), (5, 7), (1, 7), (7, 3), (6, 6), (9, 1)])
def test_adaptive_avg_pool_matches_pytorch_rule(n_in, n_out):
    x = np.random.default_rng(0).normal(size=(1, n_in, n_in, 2)).astype(np.float32)
    ref = np.zeros((1, n_out, n_out, 2), np.float32)
    for i in range(n_out):
        for j in range(n_out):
            h0, h1 = int(np.floor(i * n_in / n_out)), int(np.ceil((i + 1) * n_in / n_out))
            w0, w1 = int(np.floor(j * n_in / n_out)), int(np.ceil((j + 1) * n_in / n_out))
            ref[0, i, j] = x[0, h0:h1, w0:w1].mean(axis=(0, 1))
    np.testing.assert_allclose(adaptive_avg_pool(jnp.asarray(x), n_out), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "size, window, stride, pad, ceil, expected",
    [
        (112, 3, 2, 0, True, 56),  # GoogLeNet stem (Caffe ceil mode); floor would give 55
        (112, 3, 2, 0, False, 55),
        (14, 2, 2, 0, True, 7),  # torchvision GoogLeNet maxpool4
        (55, 3, 2, 0, False, 27),  # AlexNet overlapping pool
        (7, 3, 2, 1, True, 4),  # PyTorch: last window must start inside the input
        (2, 3, 2, 0, False, 1),  # small-input rule: clipped window, 1x1
        (1, 2, 2, 0, True, 1),
    ],
)
def test_pool2d_sizes(size, window, stride, pad, ceil, expected):
    x = jnp.arange(size * size, dtype=jnp.float32).reshape(1, size, size, 1)
    assert pool2d(x, "max", window, stride, pad, ceil).shape == (1, expected, expected, 1)
    assert pool2d(x, "avg", window, stride, pad, ceil).shape == (1, expected, expected, 1)


def test_pool2d_clipped_window_sees_only_real_pixels():
    x = jnp.asarray([[1.0, -2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    assert float(pool2d(x, "max", 3, 2)[0, 0, 0, 0]) == 4.0
    assert float(pool2d(x, "avg", 3, 2)[0, 0, 0, 0]) == 1.5
    y = -jnp.ones((1, 5, 5, 1))  # ceil-mode overhang must not see a 0 pad
    assert float(pool2d(y, "max", 3, 2, ceil_mode=True).max()) == -1.0


def test_local_response_norm_matches_formula():
    # Krizhevsky et al. 2012, Sec. 3.3, k=2, n=5, alpha=1e-4, beta=0.75, summed over
    # channels max(0, i-2)..min(N-1, i+2).
    a = np.random.default_rng(0).normal(scale=30.0, size=(2, 3, 3, 8)).astype(np.float32)
    ref = np.empty_like(a)
    for i in range(8):
        s = (a[..., max(0, i - 2) : min(8, i + 3)] ** 2).sum(-1)
        ref[..., i] = a[..., i] / (2.0 + 1e-4 * s) ** 0.75
    np.testing.assert_allclose(local_response_norm(jnp.asarray(a)), ref, rtol=1e-5)


def test_googlenet_shallow_stages_keep_aux_heads():
    from cnn_arch.models.googlenet import STAGES

    shallow = (STAGES[0][:1], STAGES[1][::3], STAGES[2][1:])  # 3a / 4a, 4d / 5b
    model = create("googlenet", num_classes=10, aux_logits=True, stages=shallow)
    main, aux1, aux2 = abstract_apply(model, (2, 32, 32, 3), train=True)[0]
    assert main.shape == aux1.shape == aux2.shape == (2, 10)
    no_4d = (STAGES[0][:1], STAGES[1][:1], STAGES[2][1:])
    with pytest.raises(ValueError, match="aux_logits=True needs the modules"):
        abstract_apply(
            create("googlenet", aux_logits=True, stages=no_4d), (1, 32, 32, 3), train=True
        )


def test_bn_inception_variants_do_not_reach_the_papers_13_6m():
    """The variants of bn_inception.py's docstring, recounted: none gives the Appendix's 13.6M."""
    import itertools

    from cnn_arch.models.bn_inception import MODULES

    base = bn_inception_count()
    five_by_five = sum(
        25 * r * d - (9 * r * d + 9 * d * d + 2 * d) for *_, r, d, _, _, _ in MODULES
    )

    def aux_head(cin):  # GoogLeNet Sec. 5 with BN: 1x1 conv 128 (+BN), FC 2048->1024, FC 1000
        return conv(cin, 128, bias=False, bn=True) + 2048 * 1024 + 1024 + 1024 * 1000 + 1000

    variants = {
        "plain_stem": bn_inception_count() - 1176 - 1536 + 9408 - base,
        "no_bn": bn_inception_count(bn=False) - base,
        "5x5": five_by_five,
        "aux_4a": aux_head(576),
        "aux_4d": aux_head(608),
    }
    assert variants == {
        "plain_stem": 6_696, "no_bn": -10_016, "5x5": 953_216,
        "aux_4a": 3_197_160, "aux_4d": 3_201_256,
    }  # fmt: skip
    import cnn_arch.models.bn_inception as module

    for v in variants.values():
        assert f"{abs(v):,}" in " ".join(module.__doc__.split())  # the docstring's figures
    totals = [
        base + sum(combo)
        for n in range(len(variants) + 1)
        for combo in itertools.combinations(variants.values(), n)
    ]
    assert min(abs(t - 13.6e6) for t in totals) > 0.5e6
