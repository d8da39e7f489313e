"""experiments/degradation.py (He et al. 2016 Fig. 6 at CPU scale): its configs keep the
paper's recipe, its verdict follows the training errors, its layers come in network
order; the smoke scale runs end to end under -m slow."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import ROOT, run_experiment

sys.path.insert(0, str(ROOT / "experiments"))
import degradation  # noqa: E402

from cnn_arch.validate import validate_config  # noqa: E402


@pytest.mark.parametrize("model", degradation.MODELS)
def test_scaled_config_keeps_the_recipe_and_decays_at_half_and_three_quarters(model):
    from cnn_arch import optim

    scale = degradation.SCALES["default"]
    config = degradation.config_for(model, scale, seed=0, data_dir="/tmp", num_steps=7)
    validate_config(config, device_count=1)
    assert config.model == model and config.num_train_steps == 7
    assert list(config.model_kwargs.widths) == [8, 16, 32]  # (16, 32, 64) x 0.5
    assert (config.momentum, config.weight_decay, config.learning_rate) == (0.9, 1e-4, 0.1)
    steps_per_epoch = scale["train"] // scale["batch"]
    schedule = optim.make_schedule(config, steps_per_epoch, scale["steps"])
    half, three_quarters = scale["steps"] // 2, 3 * scale["steps"] // 4
    assert float(schedule(half - 1)) == pytest.approx(0.1)
    assert float(schedule(half + 1)) == pytest.approx(0.01)
    assert float(schedule(three_quarters + 1)) == pytest.approx(0.001)
    assert config.evals.train_clean.split == f"train[:{scale['train_eval']}]"


def _result(model, train_error):
    return {"model": model, "train_error": train_error, "test_error": 0.5}


@pytest.mark.parametrize(
    "errors, plain, residual",
    [
        ((0.30, 0.40, 0.20, 0.15), True, True),
        ((0.30, 0.25, 0.20, 0.15), False, True),
        ((0.30, 0.40, 0.20, 0.25), True, False),
        ((0.30, 0.40, 0.20, 0.20), True, True),  # "at or below"
    ],
)
def test_the_verdict_follows_the_training_errors(errors, plain, residual):
    results = [_result(m, e) for m, e in zip(degradation.MODELS, errors, strict=True)]
    lesson = degradation.summarize(results)["lesson"]
    assert lesson["plain56_above_plain20"] is plain
    assert lesson["resnet56_at_or_below_resnet20"] is residual
    assert lesson["shown"] is (plain and residual)


def test_layers_sort_in_network_order():
    names = ["fc", "layer2_0/conv1", "layer1_10/conv1", "conv1", "layer1_2/conv2", "layer1_2/conv1"]
    ordered = sorted(names, key=degradation._layer_order)
    assert ordered == [
        "conv1",
        "layer1_2/conv1",
        "layer1_2/conv2",
        "layer1_10/conv1",
        "layer2_0/conv1",
        "fc",
    ]


def test_bad_seed_is_one_error_line_and_exit_2(tmp_path):
    proc = run_experiment(
        "degradation.py", "--seeds", "-1", "--out_dir", str(tmp_path), timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --seeds=[-1]")


@pytest.mark.slow
def test_smoke_scale_writes_every_number_and_a_gradient_profile_per_layer(tmp_path, shared_tfds):
    proc = run_experiment(
        "degradation.py",
        "--scale=smoke",
        f"--data_dir={shared_tfds}",
        f"--out_dir={tmp_path}",
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "degradation.json").read_text())
    assert (tmp_path / "degradation.png").stat().st_size > 10_000
    assert "lesson" in (tmp_path / "degradation.md").read_text().lower()
    runs = {r["model"]: r for r in report["runs"]}
    assert set(runs) == set(degradation.MODELS)
    for model, run in runs.items():
        assert 0.0 <= run["train_error"] <= 1.0 and 0.0 <= run["test_error"] <= 1.0
        assert run["curves"]["eval"][-1][0] == degradation.SCALES["smoke"]["steps"]
        if model in degradation.GRAD_MODELS:
            # 55 convs (stem + 27 units x 2; option A adds none) and the FC layer
            assert set(run["grad_norms"]) == {"0", str(degradation.SCALES["smoke"]["grad_step"])}
            for norms in run["grad_norms"].values():
                assert len(norms) == 56 and list(norms)[0] == "conv1"
                assert list(norms)[-1] == "fc" and all(v > 0 for v in norms.values())
        else:
            assert run["grad_norms"] == {}
