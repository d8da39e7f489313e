"""The loop's named parts on their own: the clock, tasks, evaluator specs, the schema."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import ROOT, small_config

from cnn_arch import evaluators, metrics, schema, tasks
from cnn_arch.errors import UserError
from cnn_arch.train import _occurrences
from cnn_arch.validate import validate_config


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_chrono_counts_only_timed_steps_with_evals_more_often_than_logs():
    """steps_per_eval (5) < log_every_steps (10): every eval is paused out of the window,
    and the window counts exactly the steps it timed (the old bug divided the whole
    window's steps by the time since the last eval)."""
    clock = FakeClock()
    chrono = metrics.Chrono(total_steps=40, batch_size=8, clock=clock)
    clock.now += 30.0  # compile: before start, not counted
    chrono.start(step=0)
    for step in range(1, 21):
        clock.now += 0.1  # one training step
        if step % 5 == 0:
            with chrono.paused("eval:eval"):
                clock.now += 2.0
        if step % 10 == 0:
            remaining = {"eval:eval": _occurrences(5, step, 40)}
            w = chrono.window(step, remaining)
            assert w["steps_per_sec"] == pytest.approx(10.0)
            assert w["images_per_sec"] == pytest.approx(80.0)
    # at step 20: 20 steps left at 10/s = 2 s, plus 4 evals of 2 s each still to come
    assert w["eta_seconds"] == pytest.approx(2.0 + 4 * 2.0)
    assert chrono.pause_seconds("eval:eval") == pytest.approx(2.0)


def test_chrono_after_resume_counts_from_the_resumed_step():
    clock = FakeClock()
    chrono = metrics.Chrono(total_steps=1000, batch_size=1, clock=clock)
    chrono.start(step=900)
    clock.now += 5.0
    w = chrono.window(950)
    assert w["steps_per_sec"] == pytest.approx(10.0)
    assert w["eta_seconds"] == pytest.approx(5.0)


@pytest.mark.parametrize(
    "period,after,total,want",
    [(5, 0, 40, 8), (5, 20, 40, 4), (7, 0, 20, 3), (7, 14, 20, 1), (10, 20, 20, 0), (3, 19, 20, 1)],
)
def test_occurrences_counts_periodic_and_final(period, after, total, want):
    brute = sum(1 for s in range(after + 1, total + 1) if s % period == 0 or s == total)
    assert _occurrences(period, after, total) == want == brute


def test_classification_takes_soft_labels_and_aux_heads():
    task = tasks.create("classification", small_config(label_smoothing=0.0))
    logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    hard = {"label": jnp.array([0, 2])}
    soft = {"label": jax.nn.one_hot(jnp.array([0, 2]), 3)}
    (l_hard, m_hard), (l_soft, m_soft) = task.loss(logits, hard), task.loss(logits, soft)
    np.testing.assert_allclose(l_hard, l_soft, rtol=1e-6)
    assert float(m_hard["top1"]) == float(m_soft["top1"]) == 0.5
    aux = logits * 0.5
    l_aux, _ = task.loss((logits, aux), hard)
    l_aux_alone, _ = task.loss(aux, hard)
    np.testing.assert_allclose(l_aux, l_hard + 0.3 * l_aux_alone, rtol=1e-6)


def test_top1_by_argmax_equals_top_k_including_ties():
    from cnn_arch.tasks.classification import correct_topk

    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.integers(0, 3, size=(256, 5)).astype(np.float32))  # many ties
    labels = jnp.asarray(rng.integers(0, 5, size=256))
    by_top_k = jnp.any(jax.lax.top_k(logits, 1)[1] == labels[:, None], axis=-1)
    np.testing.assert_array_equal(correct_topk(logits, labels, 1), by_top_k.astype(jnp.float32))
    assert 0 < float(correct_topk(logits, labels, 1).mean()) < 1


def test_global_norm_is_optax_global_norm():
    import optax

    from cnn_arch.steps import global_norm

    rng = np.random.default_rng(1)
    tree = {"a": jnp.asarray(rng.normal(size=(3, 4, 5))), "b": [jnp.asarray(rng.normal(size=7))]}
    np.testing.assert_allclose(global_norm(tree), optax.global_norm(tree), rtol=1e-5)
    flat = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])
    np.testing.assert_allclose(global_norm(tree), np.linalg.norm(flat), rtol=1e-5)
    assert float(global_norm({})) == 0.0
    assert not np.isfinite(float(global_norm({**tree, "d": jnp.array([np.inf])})))


def test_rbf_task_sums_equal_the_papers_mean_loss():
    from cnn_arch.models.lenet1998 import rbf_loss

    task = tasks.create("rbf", small_config())
    outputs = -jnp.abs(jax.random.normal(jax.random.PRNGKey(0), (6, 10))) * 5
    labels = jnp.arange(6)
    sums = task.eval_sums(outputs, {"label": labels, "mask": jnp.ones(6)})
    np.testing.assert_allclose(sums["loss"] / 6, rbf_loss(outputs, labels), rtol=1e-5)
    with pytest.raises(ValueError, match="lenet5_1998"):
        tasks.check_model("rbf", "lenet5")


def test_segmentation_task_crops_labels_to_the_unpadded_output():
    task = tasks.create("segmentation", small_config())
    labels = jnp.zeros((2, 8, 8), jnp.int32).at[:, 2:6, 2:6].set(1)
    logits = jnp.stack([jnp.zeros((2, 4, 4)), jnp.ones((2, 4, 4))], -1)  # predicts 1
    sums = task.eval_sums(logits, {"label": labels, "mask": jnp.array([1.0, 0.0])})
    assert float(sums["count"]) == 16 and float(sums["top1"]) == 16  # one image's centre


@pytest.mark.parametrize(
    "evals,message",
    [
        ({}, "config.evals is empty"),
        ({"x": {"kind": "nope"}}, "config.evals.x.kind='nope' is not known"),
        ({"x": {"kind": "running", "num_batches": 3}}, "unknown options ['num_batches']"),
        ({"x": {"kind": "population", "num_batches": 0}}, "num_batches=0"),
        ({"x": {"kind": "folded", "statistics": "ema"}}, "statistics='ema'"),
        ({"x": {"kind": "running", "every_steps": 0}}, "every_steps=0"),
    ],
)
def test_bad_evaluator_specs_are_one_sentence(evals, message):
    config = small_config()
    config.evals = ml_collections.ConfigDict(evals)
    with pytest.raises(UserError) as e:
        validate_config(config, device_count=1)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_task_and_wrong_model_for_task():
    with pytest.raises(UserError, match="config.task='regression' is not allowed"):
        validate_config(small_config(task="regression"), device_count=1)
    with pytest.raises(UserError, match="cannot train it"):
        validate_config(small_config(task="segmentation"), device_count=1)


def test_every_registered_evaluator_kind_is_known():
    assert {"folded", "population", "running"} <= set(evaluators.kinds())


def test_readme_key_table_is_the_schema():
    readme = (ROOT / "README.md").read_text()
    assert schema.markdown_table() in readme, "regenerate with schema.markdown_table()"


def test_base_config_is_the_schema_and_eval_batch_need_not_divide_devices():
    from configs import base, quickstart

    assert base.get_config().to_dict() == schema.default_config().to_dict()
    validate_config(quickstart.get_config(), device_count=8)  # eval_batch_size=500
    keys = re.findall(r"^\| `(\w+)` \|", schema.markdown_table(), re.M)
    assert sorted(keys) == sorted(schema.KEYS)
