"""experiments/bn_population_stats.py on a real (tiny) training run: Algorithm 2 end to end.

A LeNet-5 with BN is trained for 60 steps on MNIST in-process; the script then restores
it, re-estimates the population statistics and evaluates running averages vs population
statistics vs the folded network. The library part (cnn_arch.bn_population) is
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

from cnn_arch import bn_population as checkpoint_stats
from cnn_arch import train

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
            str(ROOT / "experiments" / "bn_population_stats.py"),
            f"--workdir={workdir}",
            f"--num_batches={NUM_BATCHES}",
        ],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "population stats (N=20, m=32)" in proc.stdout, proc.stdout
    with open(os.path.join(workdir, "bn_population_stats.json")) as f:
        return json.load(f)


def test_script_compares_running_population_and_folded(trained, report):
    _, final = trained
    running, population, folded = report["running_average"], report["population"], report["folded"]
    assert report["checkpoint_step"] == 60
    assert report["num_batches"] == NUM_BATCHES and report["batch_size"] == 32
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
    assert sorted(report["layers"]) == ["conv1_norm", "conv2_norm", "fc1_norm", "fc2_norm"]
    diff = population["top1"] - running["top1"]
    assert report["top1_population_minus_running"] == pytest.approx(diff)


def test_population_statistics_of_checkpoint_vs_numpy(trained, report, shared_tfds):
    """First BN layer (conv1_norm, m = 32*28*28 per batch) against a float64 numpy
    computation on the very same training batches; and the library reproduces the
    script's population-statistics evaluation."""
    workdir, _ = trained
    run = checkpoint_stats.load_trained(workdir, data_dir=shared_tfds)
    assert run.step == 60

    stats = checkpoint_stats.reestimate(run, num_batches=3)
    conv1 = jax.jit(
        lambda x: run.model.apply(
            run.variables,
            x,
            train=True,
            mutable=["batch_stats", "intermediates"],
            capture_intermediates=lambda mdl, _: mdl.name == "conv1",
        )[1]["intermediates"]["conv1"]["__call__"][0]
    )
    mean, var = 0.0, 0.0
    for images in checkpoint_stats.training_images(run, num_batches=3):
        c1 = np.asarray(conv1(images), np.float64)  # (32, 28, 28, 6): no bias, BN follows
        m = c1.shape[0] * c1.shape[1] * c1.shape[2]
        mean = mean + c1.mean((0, 1, 2)) / 3
        var = var + c1.var((0, 1, 2)) * m / (m - 1) / 3
    np.testing.assert_allclose(stats["conv1_norm"]["mean"], mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["conv1_norm"]["var"], var, rtol=1e-4)
    # population statistics really differ from the running averages in every layer
    for name in ("conv1_norm", "conv2_norm", "fc1_norm", "fc2_norm"):
        assert not np.allclose(stats[name]["var"], run.state.batch_stats[name]["var"])

    # the same N batches as the script give the script's numbers
    again = checkpoint_stats.evaluate(
        run, checkpoint_stats.reestimate(run, num_batches=NUM_BATCHES)
    )
    assert again["top1"] == report["population"]["top1"]
    np.testing.assert_allclose(again["loss"], report["population"]["loss"], rtol=1e-5)
