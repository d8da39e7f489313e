"""A wrong config value is one sentence naming the key and what is allowed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT, small_config

from cnn_arch.errors import UserError
from cnn_arch.validate import validate_config

BAD = [
    ("model", "resnet9000", "choose one of"),
    ("optimizer", "sgdd", "sgd, adam, adamw, rmsprop"),
    ("schedule", "linear", "constant, step, exponential, cosine"),
    ("weight_decay_mode", "both", "l2, decoupled"),
    ("lr_scaling", "sqrt", "none, linear"),
    ("augment", "heavy", "default, none"),
    ("batch_size", 0, "> 0"),
    ("batch_size", -8, "> 0"),
    ("eval_batch_size", 0, "> 0"),
    ("learning_rate", 0.0, "> 0"),
    ("learning_rate", -0.1, "> 0"),
    ("log_every_steps", 0, "> 0"),
    ("checkpoint_every_steps", -5, "> 0"),
    ("keep_checkpoints", 0, "> 0"),
    ("steps_per_eval", 0, "or -1"),
    ("num_train_steps", 0, "or -1"),
    ("weight_decay", -1e-4, ">= 0"),
    ("momentum", 1.5, "[0, 1)"),
    ("label_smoothing", 1.0, "[0, 1)"),
]


@pytest.mark.parametrize("key,value,allowed", BAD)
def test_bad_value_names_key_and_allowed(key, value, allowed):
    config = small_config(**{key: value})
    with pytest.raises(UserError) as e:
        validate_config(config, device_count=1)
    assert f"config.{key}=" in str(e.value)
    assert allowed in str(e.value)


def test_batch_not_divisible_by_devices():
    with pytest.raises(UserError, match=r"config.batch_size=.*divisible by the 3 devices"):
        validate_config(small_config(batch_size=32), device_count=3)


def test_step_schedule_needs_epochs():
    with pytest.raises(UserError, match="lr_decay_epochs"):
        validate_config(small_config(schedule="step"), device_count=1)


def test_unknown_model_option():
    config = small_config()
    config.model_kwargs.widht = 3
    with pytest.raises(UserError, match="model_kwargs"):
        validate_config(config, device_count=1)


def test_good_config_passes():
    validate_config(small_config(), device_count=1)


def test_cli_user_error_is_one_line_exit_2(tmp_path):
    """No traceback for a user error: one 'error:' line and exit status 2."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnn_arch.main",
            f"--config={ROOT / 'configs' / 'quickstart.py'}",
            f"--workdir={tmp_path / 'w'}",
            "--config.optimizer=sgdd",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: config.optimizer='sgdd' is not allowed: choose one of sgd, adam, adamw, rmsprop"
    ]
