"""LeNet-5 (1998), U-Net, MobileNet v1, ShuffleNet v2: exact counts, shapes, losses."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_arch.models import create, layers, spec
from cnn_arch.models.lenet1998 import C3_TABLE, PartialConv, rbf_loss, rbf_prototypes
from cnn_arch.models.shufflenet import channel_shuffle
from cnn_arch.models.unet import center_crop_to, segmentation_loss, unet_output_size


def abstract_variables(model, shape):
    """Variable shapes without computing anything."""
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), jnp.zeros(shape))


def count(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    "name, overrides, expected",
    [
        ("lenet5_1998", {}, 60_000),  # LeCun et al. 1998, Sec. II.B
        # norm_position='network_input': the norm-free net (biases kept) + one norm on the
        # input (1 channel for LeNet-5, the 784 flattened pixels for the MLP); 'none': no norm
        ("lenet5", {"norm": "batch", "norm_position": "network_input"}, 61_706 + 2),
        ("lenet5", {"norm": "batch", "norm_position": "none"}, 61_706),
        # MLP 784-100-100-100-10 with biases: 78,500 + 10,100 + 10,100 + 1,010 = 99,710
        ("mlp", {"norm": "batch", "norm_position": "network_input"}, 99_710 + 2 * 784),
        ("mlp", {"norm": "batch", "norm_position": "none"}, 99_710),
        ("unet", {}, 31_030_658),  # paper net, 1 input channel, 2 classes, biases
        ("unet", {"norm": "batch"}, 31_036_546),  # BN scale+shift replace 5,888 biases
        ("unet_padded", {}, 31_031_810),  # 3 input channels: + 2 * 9 * 64
        ("mobilenet_v1", {}, 4_231_976),  # Keras: 4,253,864 less 21,888 BN statistics
        ("mobilenet_v1", {"width_multiplier": 0.5}, 1_331_592),  # Keras: 1,342,536 - 10,944
        ("shufflenet_v2_x0_5", {}, 1_366_792),  # torchvision
        ("shufflenet_v2_x1_0", {}, 2_278_604),
        ("shufflenet_v2_x1_5", {}, 3_503_624),
        ("shufflenet_v2_x2_0", {}, 7_393_996),
    ],
)
def test_param_count(name, overrides, expected):
    model = create(name, **overrides)
    variables = abstract_variables(model, (1, *spec(name).input_shape))
    assert count(variables["params"]) == expected


def test_lenet1998_layer_counts_and_fixed_prototypes():
    variables = abstract_variables(create("lenet5_1998"), (1, 32, 32, 1))
    assert set(variables) == {"params"}  # RBF prototypes are constants, not variables
    per_layer = {k: count(v) for k, v in variables["params"].items()}
    assert per_layer == {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 10164}
    protos = rbf_prototypes(10)
    assert protos.shape == (10, 84) and set(np.unique(protos)) == {-1.0, 1.0}
    assert len({p.tobytes() for p in protos}) == 10
    assert rbf_prototypes(26).shape == (26, 84)
    np.testing.assert_array_equal(rbf_prototypes(26), rbf_prototypes(26))  # deterministic


def test_c3_connection_table():
    # Table I: 60 connections; each S2 map feeds 10 C3 maps; columns 0-5 take three
    # contiguous maps, 6-11 four contiguous, 12-14 four discontinuous, 15 all six.
    assert sum(len(ins) for ins in C3_TABLE) == 60
    assert [sum(i in ins for ins in C3_TABLE) for i in range(6)] == [10] * 6
    assert C3_TABLE[0] == (0, 1, 2) and C3_TABLE[5] == (5, 0, 1)
    assert C3_TABLE[6] == (0, 1, 2, 3) and C3_TABLE[11] == (5, 0, 1, 2)
    assert C3_TABLE[12:] == ((0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5), tuple(range(6)))
    # Functionally: perturbing S2 map i changes exactly the C3 maps connected to it.
    x = jax.random.normal(jax.random.key(0), (1, 10, 10, 6))
    conv = PartialConv()
    params = conv.init(jax.random.key(1), x)
    apply = jax.jit(conv.apply)
    for i in range(6):
        delta = apply(params, x.at[..., i].add(1.0)) - apply(params, x)
        changed = np.flatnonzero(np.abs(np.asarray(delta)).max(axis=(0, 1, 2)) > 1e-6)
        assert changed.tolist() == [j for j, ins in enumerate(C3_TABLE) if i in ins]


@pytest.fixture(scope="module")
def lenet():
    """LeNet-5 (1998), its initial parameters and a toy batch of 16 28x28 digits."""
    model = create("lenet5_1998")
    x = jax.random.normal(jax.random.key(0), (16, 28, 28, 1))
    params = jax.jit(lambda x: model.init(jax.random.key(1, impl="rbg"), x, train=False))(x)
    return model, params, x, jnp.arange(16) % 10


def test_lenet1998_forward_is_negative_rbf_distance(lenet):
    model, params, x, _ = lenet
    x = x[:2]
    fn = partial(model.apply, train=False, capture_intermediates=True)
    out, state = jax.jit(fn)(params, x)
    assert out.shape == (2, 10) and out.dtype == jnp.float32
    f6 = layers.scaled_tanh(state["intermediates"]["F6"]["__call__"][0])
    dist = ((np.asarray(f6)[:, None, :] - rbf_prototypes(10)[None]) ** 2).sum(-1)
    np.testing.assert_allclose(out, -dist, rtol=1e-5, atol=1e-4)


def test_rbf_loss_matches_equations_and_decreases(lenet):
    model, params, x, labels = lenet
    out = jax.jit(partial(model.apply, train=False))(params, x)
    y = -np.asarray(out, np.float64)
    y_correct = y[np.arange(16), np.asarray(labels)]
    np.testing.assert_allclose(rbf_loss(out, labels, contrast=False), y_correct.mean(), rtol=1e-5)
    j = 2.0
    eq9 = (y_correct + np.log(np.exp(-j) + np.exp(-y).sum(-1))).mean()
    np.testing.assert_allclose(rbf_loss(out, labels, j=j), eq9, rtol=1e-5)

    tx = optax.sgd(3e-2)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        loss_fn = lambda p: rbf_loss(model.apply(p, x, train=False), labels)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(5):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.85 * losses[0], losses


def test_unet_output_size_rule():
    assert unet_output_size(572) == 388  # Fig. 1
    assert unet_output_size(188) == 4  # the smallest valid tile
    assert [s for s in range(100, 240) if _valid(s)] == [188, 204, 220, 236]
    assert unet_output_size(64, padding="SAME") == 64
    with pytest.raises(ValueError):
        unet_output_size(60, padding="SAME")


def _valid(size):
    try:
        unet_output_size(size)
    except ValueError:
        return False
    return True


def _variables(model, x):
    """He-scaled random variables with the model's structure, made with numpy.

    Compiling ``model.init`` costs ~6-9 s of CPU per network (one RNG program per
    parameter); the count tests already trace every initializer.
    """
    rng = np.random.default_rng(0)

    def leaf(path, s):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            std = np.sqrt(2.0 / np.prod(s.shape[:-1]))
            return (rng.standard_normal(s.shape) * std).astype(np.float32)
        fill = 1.0 if ("scale" in name or "var" in name) else 0.0
        return np.full(s.shape, fill, np.float32)

    abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    return jax.tree_util.tree_map_with_path(leaf, abstract)


def _forward(model, x, train=False):
    variables = _variables(model, x)
    if train:
        fn = lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
    else:
        fn = lambda v, x: (model.apply(v, x, train=False), None)
    return jax.jit(fn)(variables, x)


def test_unet_forward_shapes():
    model = create("unet")
    x = jnp.zeros((1, 572, 572, 1))
    variables = abstract_variables(model, x.shape)
    assert jax.eval_shape(partial(model.apply, train=False), variables, x).shape == (1, 388, 388, 2)
    out, _ = _forward(model, jnp.ones((2, 188, 188, 1)))
    assert out.shape == (2, 4, 4, 2) and out.dtype == jnp.float32
    assert np.isfinite(out).all()
    # Narrow (features=16) to keep CI fast; the padded net's shapes do not depend on width.
    padded = create("unet_padded", num_classes=3, features=16)
    out, _ = _forward(padded, jnp.ones((2, 64, 64, 3)))
    assert out.shape == (2, 64, 64, 3) and np.isfinite(out).all()
    with pytest.raises(ValueError):
        create("unet").init(jax.random.key(0), jnp.ones((1, 190, 190, 1)), train=False)


def test_segmentation_loss_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    masks = rng.integers(0, 3, size=(2, 5, 6))
    weights = rng.uniform(0.5, 10.0, size=(2, 5, 6)).astype(np.float32)
    z = logits.astype(np.float64)
    logp = z - z.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, masks[..., None], -1)[..., 0]
    np.testing.assert_allclose(segmentation_loss(logits, masks), nll.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        segmentation_loss(logits, masks, weights), (weights * nll).mean(), rtol=1e-5
    )


def test_center_crop_to():
    masks = np.arange(2 * 188 * 188).reshape(2, 188, 188)
    cropped = center_crop_to(masks, (2, 4, 4, 2))
    np.testing.assert_array_equal(cropped, masks[:, 92:96, 92:96])
    np.testing.assert_array_equal(center_crop_to(masks, (2, 188, 188, 2)), masks)


@pytest.mark.parametrize("name", ["mobilenet_v1", "shufflenet_v2_x0_5"])
def test_classifier_forward(name):
    model = create(name, num_classes=10)
    out, state = _forward(model, jnp.ones((2, 32, 32, 3)), train=True)
    assert out.shape == (2, 10) and out.dtype == jnp.float32
    assert np.isfinite(out).all() and "batch_stats" in state


@pytest.mark.parametrize("name", ["shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"])
def test_shufflenet_shapes(name):
    model = create(name, num_classes=10)
    x = jnp.zeros((2, 32, 32, 3))
    out = jax.eval_shape(partial(model.apply, train=False), abstract_variables(model, x.shape), x)
    assert out.shape == (2, 10)


def test_channel_shuffle_matches_torchvision_order():
    # torchvision: view(b, g, c/g, h, w).transpose(1, 2) interleaves the two halves.
    x = jnp.arange(8.0).reshape(1, 1, 1, 8)
    shuffled = channel_shuffle(x, 2)
    np.testing.assert_array_equal(shuffled[0, 0, 0], [0, 4, 1, 5, 2, 6, 3, 7])


@pytest.mark.parametrize(
    "name, overrides, shape",
    [
        ("lenet5_1998", {}, (2, 28, 28, 1)),
        ("unet", {"norm": "batch"}, (1, 188, 188, 1)),
        ("unet_padded", {"norm": "group"}, (1, 64, 64, 3)),
        ("mobilenet_v1", {"width_multiplier": 0.25}, (2, 64, 64, 3)),
        ("shufflenet_v2_x1_0", {}, (2, 64, 64, 3)),
    ],
)
def test_bfloat16_compute_keeps_float32_params_and_logits(name, overrides, shape):
    model = create(name, dtype=jnp.bfloat16, **overrides)
    x = jnp.zeros(shape)
    variables = abstract_variables(model, shape)
    assert {a.dtype for a in jax.tree.leaves(variables["params"])} == {jnp.dtype("float32")}
    fn = lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0]
    assert jax.eval_shape(fn, variables, x).dtype == jnp.float32
