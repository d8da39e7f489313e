"""experiments/norm_batch_size.py (Wu & He 2018 Fig. 1 at CPU scale): every setting is
the same recipe at the same global batch with only its norm changed, the ghost sizes
the models build are the requested ones, the table keeps every setting and the paper's
numbers beside ours; the smoke scale runs end to end under -m slow."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import ROOT, run_experiment

sys.path.insert(0, str(ROOT / "experiments"))
import norm_batch_size as nbs  # noqa: E402

from cnn_arch.errors import UserError  # noqa: E402
from cnn_arch.models import layers  # noqa: E402
from cnn_arch.validate import validate_config  # noqa: E402


@pytest.mark.parametrize("setting", list(nbs.settings()))
def test_every_setting_is_the_same_recipe_with_its_own_norm(setting):
    from cnn_arch import optim

    scale = nbs.SCALES["default"]
    config = nbs.config_for(setting, scale, seed=0, data_dir="/tmp", num_steps=scale["steps"])
    validate_config(config, device_count=1)
    assert config.batch_size == nbs.GLOBAL_BATCH == 128
    assert config.model == "resnet20" and list(config.model_kwargs.widths) == [8, 16, 32]
    assert (config.momentum, config.weight_decay, config.learning_rate) == (0.9, 1e-4, 0.1)
    steps = scale["steps"]
    schedule = optim.make_schedule(config, scale["train"] // 128, steps)
    assert float(schedule(steps // 2 - 1)) == pytest.approx(0.1)
    assert float(schedule(3 * steps // 4 + 1)) == pytest.approx(0.001)
    norm = layers.make_norm(config.model_kwargs.norm, train=True)(name="n")
    k = nbs.settings()[setting]["examples_per_bn_batch"]
    if k is None:
        assert not hasattr(norm, "ghost_batch_size")
    else:  # the model builds ghost BN over exactly the requested number of examples
        assert norm.ghost_batch_size == k and nbs.GLOBAL_BATCH % k == 0


def test_settings_are_the_issues_ghost_sizes_and_alternatives():
    s = nbs.settings()
    ghost = sorted(v["examples_per_bn_batch"] for v in s.values() if v["examples_per_bn_batch"])
    assert ghost == [2, 4, 8, 16, 32, 128]
    assert {v["norm"] for v in s.values() if not v["examples_per_bn_batch"]} == {
        "group4",
        "layer",
        "instance",
        "none",
    }


def _runs(errors):
    return [
        {"setting": name, "test_error": e, "diverged": e is None}
        for name, e in zip(nbs.settings(), errors, strict=True)
    ]


def test_table_has_every_setting_and_the_papers_numbers_beside_ours():
    errors = [0.5 + 0.01 * i for i in range(9)] + [None]  # 'none' diverged
    chosen = list(nbs.settings())
    summary = nbs.summarize(_runs(errors), chosen)
    assert set(summary) == set(chosen)
    assert summary["none"]["test_error_mean"] == 0.9 and summary["none"]["diverged"] == 1
    assert summary["bn2"]["test_error_mean"] == pytest.approx(0.5)
    discrepancy = {
        s: {"0": {n: 0.6 for n in nbs.discrepancy_evals()}} for s in nbs.DISCREPANCY_SETTINGS
    }
    meta = {
        "command": "python experiments/norm_batch_size.py",
        "wall_seconds": 60.0,
        "cpu_seconds": 100.0,
        "train_wall_seconds_sum": 200.0,
        "workers": 2,
        "seeds": [0],
        "widths": [4, 8, 16],
        "num_steps": 200,
    }
    md = nbs._markdown(meta, summary, discrepancy, nbs.SCALES["default"])
    rows = [line for line in md.splitlines() if line.startswith("| BN (") or "(group4)" in line]
    assert len(rows) == 7  # six BN sizes and GN
    assert "| 34.7 | 50.0 |" in md  # Wu & He's BN at 2 images per GPU beside ours
    assert "1 of 1 diverged" in md
    assert "| bn4 | " + " | ".join(["60.0"] * len(nbs.discrepancy_evals())) + " |" in md


def test_bad_input_is_a_user_error_before_anything_trains(tmp_path):
    for argv, message in (
        (["--seeds", "-1"], "seeds must be >= 0"),
        (["--settings", "bn3"], "unknown"),
        (["--num_steps=-5"], "--num_steps"),
        (["--workers=0"], "--workers"),
    ):
        with pytest.raises(UserError, match=message):
            nbs.main([*argv, f"--out_dir={tmp_path}", f"--workdir={tmp_path / 'w'}"])
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_smoke_scale_writes_every_setting_and_the_discrepancy(tmp_path, shared_tfds):
    proc = run_experiment(
        "norm_batch_size.py",
        "--scale=smoke",
        f"--data_dir={shared_tfds}",
        f"--out_dir={tmp_path}",
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "norm_batch_size.json").read_text())
    assert (tmp_path / "norm_batch_size.png").stat().st_size > 10_000
    runs = {r["setting"]: r for r in report["runs"]}
    assert set(runs) == set(nbs.settings()) == set(report["summary"])
    for setting, run in runs.items():
        assert 0.0 <= run["test_error"] <= 1.0, setting
        assert run["test_error_curve"][-1][0] == nbs.SCALES["smoke"]["steps"]
        assert run["examples_per_bn_batch"] == nbs.settings()[setting]["examples_per_bn_batch"]
    ghost = sorted(r["examples_per_bn_batch"] for r in runs.values() if r["examples_per_bn_batch"])
    assert ghost == list(nbs.GHOST_SIZES)
    assert set(report["discrepancy"]) == set(nbs.DISCREPANCY_SETTINGS)
    for per_seed in report["discrepancy"].values():
        errors = per_seed["0"]
        assert list(errors) == nbs.discrepancy_evals()
        assert all(np.isfinite(e) and 0.0 <= e <= 1.0 for e in errors.values())
    md = (tmp_path / "norm_batch_size.md").read_text()
    assert "python experiments/norm_batch_size.py --scale=smoke" in md
