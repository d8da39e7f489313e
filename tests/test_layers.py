"""The layer factories in cnn_arch.models.layers: norm='group' on narrow layers."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

from cnn_arch.models import layers


def numpy_group_norm(x, num_groups, scale, bias, eps):
    """Wu & He 2018, Eq. (1)-(2): statistics per example over (H, W, C/G), float64."""
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, num_groups, c // num_groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    y = ((g - mean) / np.sqrt(var + eps)).reshape(n, h, w, c)
    return y * scale + bias


class _Block(nn.Module):
    """A conv-free stand-in for a model: norm(name=...) the way architectures call it."""

    norm_kwargs: dict

    @nn.compact
    def __call__(self, x):
        norm = layers.make_norm("group", train=True, **self.norm_kwargs)
        return norm(name="conv1_norm")(x)


@pytest.mark.parametrize(("channels", "groups"), [(16, 16), (24, 8), (144, 16), (64, 32)])
def test_group_norm_fits_narrow_layers_and_matches_numpy(channels, groups):
    x = np.random.default_rng(channels).normal(0.5, 2.0, (3, 5, 4, channels)).astype(np.float32)
    model = _Block({})
    variables = model.init(jax.random.key(0), x)
    # the caller's name holds scale/bias directly, as with a plain nn.GroupNorm
    assert jax.tree.map(np.shape, variables) == {
        "params": {"conv1_norm": {"scale": (channels,), "bias": (channels,)}}
    }
    rng = np.random.default_rng(1)
    params = {
        "conv1_norm": {
            "scale": rng.normal(1.0, 0.3, channels).astype(np.float32),
            "bias": rng.normal(0.0, 0.3, channels).astype(np.float32),
        }
    }
    got = model.apply({"params": params}, x)
    want = numpy_group_norm(
        x, groups, params["conv1_norm"]["scale"], params["conv1_norm"]["bias"], layers.BN_EPSILON
    )
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
    # the group count is gcd(32, C): with a different count the output would differ
    wrong = numpy_group_norm(
        x, 1, params["conv1_norm"]["scale"], params["conv1_norm"]["bias"], layers.BN_EPSILON
    )
    assert np.max(np.abs(np.asarray(got) - wrong)) > 1e-2


def test_group_norm_explicit_num_groups_is_kept():
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 144)).astype(np.float32)
    model = _Block({"num_groups": 4})
    variables = model.init(jax.random.key(0), x)
    p = variables["params"]["conv1_norm"]
    want = numpy_group_norm(x, 4, np.asarray(p["scale"]), np.asarray(p["bias"]), layers.BN_EPSILON)
    np.testing.assert_allclose(np.asarray(model.apply(variables, x)), want, rtol=1e-4, atol=1e-4)
    # an explicit count that does not divide the channels is an error, not silently changed
    with pytest.raises(ValueError, match="does not divide"):
        _Block({"num_groups": 32}).init(jax.random.key(0), x)


def test_lenet5_with_group_norm_initializes():
    """LeNet-5's 6- and 16-channel convs failed with a fixed G=32; now G=gcd(32, C)."""
    from cnn_arch import models

    model = models.create("lenet5", norm="group")
    x = np.random.default_rng(0).normal(size=(2, 28, 28, 1)).astype(np.float32)

    @jax.jit
    def init_and_apply(x):
        variables = model.init(jax.random.key(0, impl="rbg"), x, train=False)
        return variables, model.apply(variables, x, train=True)

    variables, logits = init_and_apply(x)
    assert variables["params"]["conv1_norm"]["scale"].shape == (6,)
    assert variables["params"]["conv2_norm"]["scale"].shape == (16,)
    assert "batch_stats" not in variables
    assert logits.shape == (2, 10) and bool(np.isfinite(logits).all())


# --- layer and instance normalization (issue 8 item 10) --------------------------------


def numpy_layer_norm(x, scale, bias, eps):
    """Ba et al. 2016, Eq. (4): per example over all its hidden units (every non-batch axis)."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(1, x.ndim))
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def numpy_instance_norm(x, scale, bias, eps):
    """Ulyanov et al. 2016: per example and channel over the spatial axes (H, W)."""
    x = np.asarray(x, np.float64)
    mean, var = x.mean(axis=(1, 2), keepdims=True), x.var(axis=(1, 2), keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


class _Norm(nn.Module):
    kind: str

    @nn.compact
    def __call__(self, x):
        return layers.make_norm(self.kind, train=True)(name="n")(x)


def _random_affine(channels, seed):
    rng = np.random.default_rng(seed)
    return {
        "n": {
            "scale": rng.normal(1.0, 0.3, channels).astype(np.float32),
            "bias": rng.normal(0.0, 0.3, channels).astype(np.float32),
        }
    }


@pytest.mark.parametrize("shape", [(3, 5, 4, 6), (4, 7)], ids=["conv_nhwc", "dense"])
def test_layer_norm_normalizes_each_example_over_all_units(shape):
    # per-channel offsets and scales: per-pixel normalization would remove them, LN keeps them
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape) * rng.uniform(0.5, 3.0, shape[-1]) + rng.normal(size=shape[-1])
    x = x.astype(np.float32)
    model = _Norm("layer")
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.tree.map(np.shape, abstract) == {
        "params": {"n": {"scale": (shape[-1],), "bias": (shape[-1],)}}
    }  # the parameter tree of nn.LayerNorm: per-channel gain and bias
    params = _random_affine(shape[-1], 1)
    got = np.asarray(model.apply({"params": params}, x))
    want = numpy_layer_norm(x, params["n"]["scale"], params["n"]["bias"], layers.BN_EPSILON)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    if len(shape) == 4:  # the old per-pixel normalization differs
        s, b = params["n"]["scale"], params["n"]["bias"]
        x64 = x.astype(np.float64)
        per_pixel = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
        assert np.max(np.abs(got - (per_pixel * s + b))) > 0.1


def test_instance_norm_on_conv_maps_and_refused_on_dense():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(3, 5, 4, 6)) * 2.0 + rng.normal(size=6)).astype(np.float32)
    model = _Norm("instance")
    params = _random_affine(6, 3)
    got = np.asarray(model.apply({"params": params}, x))
    want = numpy_instance_norm(x, params["n"]["scale"], params["n"]["bias"], layers.BN_EPSILON)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # a dense (N, C) input has nothing to average over: an error, not a constant output
    with pytest.raises(ValueError, match="norm='instance' needs spatial axes"):
        model.init(jax.random.key(0), x[:, 0, 0, :])
