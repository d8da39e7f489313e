"""experiments/bn_landscape.py (Santurkar et al. 2018, scaled) in a short version."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, run_experiment

from cnn_arch.errors import UserError

sys.path.insert(0, str(ROOT / "experiments"))
import bn_landscape  # noqa: E402


def _run(*args: str) -> subprocess.CompletedProcess:
    return run_experiment("bn_landscape.py", *args, timeout=900)


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--seeds=a", "--seeds"),
        ("--num_steps=25", "multiple of --eval_every"),
        ("--step_sizes=0.1,-1", "--step_sizes"),
        ("--eval_examples=0", "--eval_examples"),
    ],
)
def test_bad_flags_are_user_errors(flag, message):
    """Refused before anything is built (``run_main`` turns them into one error line)."""
    with pytest.raises(UserError, match=message):
        bn_landscape.parse([flag])


def test_the_networks_differ_only_in_their_norm_and_learning_rate():
    args = bn_landscape.parse(["--seeds=0", "--high_lr=0.3"])
    assert bn_landscape.networks(args) == ["standard", "bn", "noisy_bn", "bn_high_lr"]
    configs = {n: bn_landscape.network_config(n, args, 0) for n in bn_landscape.networks(args)}
    norms = {n: c.model_kwargs.norm for n, c in configs.items()}
    assert norms == {
        "standard": "none",
        "bn": "batch",
        "noisy_bn": "noisy_batch",
        "bn_high_lr": "batch",
    }
    assert {n: c.learning_rate for n, c in configs.items()} == {
        "standard": 0.05,
        "bn": 0.05,
        "noisy_bn": 0.05,
        "bn_high_lr": 0.3,
    }
    base = configs["bn"].to_dict()
    for n, c in configs.items():
        diff = {k for k, v in c.to_dict().items() if v != base[k]}
        assert diff <= {"model_kwargs", "learning_rate"}, (n, diff)


@pytest.mark.slow
def test_bn_landscape_short(shared_tfds, tmp_path):
    """Three networks, 20 steps, measured at steps 10 and 20: every series is there and
    finite where it must be, and the table's numbers are those of the curves."""
    out = tmp_path / "out"
    proc = _run(
        f"--out_dir={out}",
        f"--workdir={tmp_path / 'work'}",
        f"--data_dir={shared_tfds}",
        "--num_steps=20",
        "--eval_every=10",
        "--log_every=10",
        "--eval_examples=200",
        "--train_split=train[:2000]",
        "--shuffle_buffer=1000",
        "--high_lr=0",
        "--workers=1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "bn_landscape.json").read_text())
    assert (out / "bn_landscape.png").stat().st_size > 20_000
    md = (out / "bn_landscape.md").read_text()
    assert "| final training loss |" in md and "Paper vs ours" in md
    assert report["networks"] == ["standard", "bn", "noisy_bn"]
    for network in report["networks"]:
        c = report["curves"][network]["0"]
        assert c["train_steps"] == [10, 20] and c["eval_steps"] == [10, 20]
        for layer in report["ics_layers"]:
            l2, cos = np.array(c[f"ics_{layer}_l2"]), np.array(c[f"ics_{layer}_cos"])
            assert np.isfinite(l2).all() and (l2 >= 0).all()
            assert (np.abs(cos) <= 1 + 1e-5).all()
            rel = np.array(c[f"ics_{layer}_rel"])
            np.testing.assert_allclose(rel, l2 / np.array(c[f"ics_{layer}_grad_norm"]), rtol=1e-4)
        lo, hi = np.array(c["landscape_loss_min"]), np.array(c["landscape_loss_max"])
        assert (lo <= np.array(c["landscape_loss"]) + 1e-6).all()
        np.testing.assert_allclose(np.array(c["landscape_loss_range"]), hi - lo, rtol=1e-4)
        g_lo, g_hi = np.array(c["landscape_grad_diff_min"]), np.array(c["landscape_grad_diff_max"])
        assert (0 <= g_lo).all() and (g_lo <= g_hi).all()
        # beta is the largest ratio, so at least the largest eta's one
        eta = max(report["step_sizes"])
        assert (
            np.array(c["landscape_beta"])
            >= g_hi / (eta * np.array(c["landscape_grad_norm"])) - 1e-4
        ).all()
        s = report["summary"][network]
        assert s["final_test_top1"]["values"] == [c["test_top1"][-1]]
        assert s["beta_max"]["mean"] == pytest.approx(max(c["landscape_beta"]))
