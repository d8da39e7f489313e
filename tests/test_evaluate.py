"""`python -m cnn_arch.evaluate` on a real (tiny) training run: Algorithm 2 end to end.

A LeNet-5 with BN is trained for 60 steps on MNIST in-process; the command then restores
it, re-estimates the population statistics and evaluates running averages vs population
statistics vs the folded network. The library part (cnn_arch.evaluators.bn) is
checked against numpy on the first BN layer over the same training batches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import ROOT, small_config

from cnn_arch import evaluators, train
from cnn_arch import run as run_lib
from cnn_arch.evaluators.bn import reestimate

NUM_BATCHES = 20
EVAL_EXAMPLES = 2000


@pytest.fixture(scope="module")
def trained(shared_tfds, tmp_path_factory):
    """(workdir, final eval) of 60 steps of LeNet-5 + BN on MNIST, batch 32."""
    config = small_config(
        model="lenet5",
        dataset="mnist",
        data_dir=shared_tfds,
        num_train_steps=60,
        log_every_steps=20,
        eval_split=f"test[:{EVAL_EXAMPLES}]",
        shuffle_buffer=2000,
    )
    config.model_kwargs = {"norm": "batch"}
    workdir = tmp_path_factory.mktemp("lenet5_bn")
    final = train.train_and_evaluate(config, str(workdir))
    return str(workdir), final


@pytest.fixture(scope="module")
def report(trained):
    workdir, _ = trained
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnn_arch.evaluate",
            f"--workdir={workdir}",
            "--evals=running,alg2,folded_alg2",
            f"--num_batches={NUM_BATCHES}",
        ],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "folded_alg2" in proc.stdout, proc.stdout
    with open(os.path.join(workdir, "evaluate.json")) as f:
        return json.load(f)


def test_script_compares_running_population_and_folded(trained, report):
    _, final = trained
    results = report["results"]
    running, population, folded = results["running"], results["alg2"], results["folded_alg2"]
    assert report["checkpoint_step"] == 60
    assert report["evals"]["alg2"] == {"kind": "population", "num_batches": 20, "batch_size": 0}
    for result in (running, population, folded):
        assert result["num_examples"] == EVAL_EXAMPLES
    # the running-average row is the network exactly as the training run evaluated it
    assert running["top1"] == final["top1"]
    np.testing.assert_allclose(running["loss"], final["loss"], rtol=1e-5)
    # population statistics give a working classifier after only 60 steps
    assert population["top1"] >= 0.80
    # the folded network is the population-statistics network without its BN layers
    assert abs(folded["top1"] - population["top1"]) * EVAL_EXAMPLES <= 1
    np.testing.assert_allclose(folded["loss"], population["loss"], rtol=1e-3)
    assert sorted(report["folded_pairs"]) == [
        ["conv1", "conv1_norm"],
        ["conv2", "conv2_norm"],
        ["fc1", "fc1_norm"],
        ["fc2", "fc2_norm"],
    ]
    assert report["unfolded"] == []
    assert sorted(report["bn_layers"]) == ["conv1_norm", "conv2_norm", "fc1_norm", "fc2_norm"]


def test_population_statistics_of_checkpoint_vs_numpy(trained, report, shared_tfds):
    """First BN layer (conv1_norm, m = 32*28*28 per batch) against a float64 numpy
    computation on the very same training batches; and the library reproduces the
    script's population-statistics evaluation."""
    workdir, _ = trained
    run, state = run_lib.from_workdir(workdir, data_dir=shared_tfds)
    assert int(state.step) == 60

    stats = reestimate(run, state, num_batches=3)
    conv1 = jax.jit(
        lambda x: run.model.apply(
            state.variables,
            x,
            train=True,
            mutable=["batch_stats", "intermediates"],
            capture_intermediates=lambda mdl, _: mdl.name == "conv1",
        )[1]["intermediates"]["conv1"]["__call__"][0]
    )
    mean, var = 0.0, 0.0
    for images in run.training_images(num_batches=3):
        c1 = np.asarray(conv1(images), np.float64)  # (32, 28, 28, 6): no bias, BN follows
        m = c1.shape[0] * c1.shape[1] * c1.shape[2]
        mean = mean + c1.mean((0, 1, 2)) / 3
        var = var + c1.var((0, 1, 2)) * m / (m - 1) / 3
    np.testing.assert_allclose(stats["conv1_norm"]["mean"], mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["conv1_norm"]["var"], var, rtol=1e-4)
    # population statistics really differ from the running averages in every layer
    for name in ("conv1_norm", "conv2_norm", "fc1_norm", "fc2_norm"):
        assert not np.allclose(stats[name]["var"], state.batch_stats[name]["var"])

    # the same N batches as the command give the command's numbers
    (population,) = evaluators.build_all(
        run, {"alg2": {"kind": "population", "num_batches": NUM_BATCHES}}
    )
    again = population(state)
    assert again["top1"] == report["results"]["alg2"]["top1"]
    np.testing.assert_allclose(again["loss"], report["results"]["alg2"]["loss"], rtol=1e-5)


@pytest.mark.slow  # ~1 CPU-minute: trains a U-Net workdir first
def test_unet_workdir_evaluates_with_running_alg2_and_folded(offline_tfds, tmp_path):
    """The run builder knows the task: a segmentation workdir restores and evaluates."""
    from configs import unet_digits

    config = unet_digits.get_config()
    config.data_dir = offline_tfds
    config.num_train_steps = 2
    config.model_kwargs.features = 4
    config.eval_split = "test[:64]"
    config.batch_size = 8
    config.eval_batch_size = 32
    config.model_kwargs.norm = "batch"
    train.train_and_evaluate(config, str(tmp_path))
    from cnn_arch import evaluate

    report = evaluate.evaluate_workdir(
        str(tmp_path), ["running", "alg2", "folded"], num_batches=2, data_dir=offline_tfds
    )
    for name in ("running", "alg2", "folded"):
        result = report["results"][name]
        assert result["num_examples"] > 64 * 100  # pixels, not images
        assert np.isfinite(result["loss"])
    # folding with the running averages is the running-average network without BN
    np.testing.assert_allclose(
        report["results"]["folded"]["loss"], report["results"]["running"]["loss"], rtol=1e-3
    )
