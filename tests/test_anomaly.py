"""Anomaly detection (issue 12): AUROC, the detectors, the one-class protocol, the CLIs.

The default run checks AUROC against hand-computed values and the rank-sum / pairwise
definitions, the transformation sets, Deep SVDD's centre pass, the class filter and the
errors; under ``-m slow``: one detector end to end through both commands (train + score
a folder of PNGs), every detector a few hundred steps, the MSP baseline and the
experiment's short version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from conftest import ROOT

from cnn_arch import data, models
from cnn_arch.anomaly import __main__ as anomaly_cli
from cnn_arch.anomaly import auroc, roc_curve, score, threshold_at_fpr, transforms
from cnn_arch.errors import UserError
from configs.anomaly import _common

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}


# -- AUROC ------------------------------------------------------------------------------


def test_auroc_hand_computed():
    # Anomalies 0.35 and 0.8 against normals 0.1 and 0.4: 0.35 beats 0.1 only, 0.8 beats
    # both -> 3 of 4 pairs.
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # A tie between an anomalous and a normal example counts one half: (0.5 + 0) / 2.
    assert auroc([1.0, 1.0, 2.0], [1, 0, 0]) == pytest.approx(0.25)
    assert auroc([0, 1, 2, 3], [0, 0, 1, 1]) == 1.0
    assert auroc([0, 1, 2, 3], [1, 1, 0, 0]) == 0.0


def test_auroc_matches_pairwise_rank_sum_and_roc_area():
    rng = np.random.default_rng(0)
    score = rng.integers(0, 20, 300).astype(float)  # many ties
    is_anomaly = rng.random(300) < 0.3
    a, n = score[is_anomaly], score[~is_anomaly]
    pairwise = ((a[:, None] > n[None]).sum() + 0.5 * (a[:, None] == n[None]).sum()) / (
        len(a) * len(n)
    )
    ranks = scipy.stats.rankdata(score)  # average ranks for ties
    rank_sum = (ranks[is_anomaly].sum() - len(a) * (len(a) + 1) / 2) / (len(a) * len(n))
    u = scipy.stats.mannwhitneyu(a, n).statistic / (len(a) * len(n))
    fpr, tpr, _ = roc_curve(score, is_anomaly)
    assert auroc(score, is_anomaly) == pytest.approx(pairwise, abs=1e-12)
    assert auroc(score, is_anomaly) == pytest.approx(rank_sum, abs=1e-12)
    assert auroc(score, is_anomaly) == pytest.approx(u, abs=1e-12)
    assert auroc(score, is_anomaly) == pytest.approx(np.trapezoid(tpr, fpr), abs=1e-12)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1


def test_auroc_refuses_one_kind_only_and_nonfinite():
    with pytest.raises(ValueError, match="both normal and anomalous"):
        auroc([1, 2], [0, 0])
    with pytest.raises(ValueError, match="finite"):
        auroc([1, np.nan], [0, 1])


def test_threshold_flags_about_fpr_of_normals():
    normal = np.random.default_rng(1).normal(size=1000)
    t = threshold_at_fpr(normal, 0.05)
    assert 0.04 <= np.mean(normal > t) <= 0.05
    with pytest.raises(UserError, match="fpr"):
        threshold_at_fpr(normal, 1.5)


# -- detectors' parts -------------------------------------------------------------------


def test_transformation_sets():
    x = jnp.arange(2 * 32 * 32 * 3, dtype=jnp.float32).reshape(2, 32, 32, 3)
    geom = transforms.apply(x, "geom72")
    assert geom.shape == (2, 72, 32, 32, 3)
    np.testing.assert_array_equal(geom[:, 0], x)  # the identity first
    flat = np.asarray(geom[0]).reshape(72, -1)
    assert len({row.tobytes() for row in flat}) == 72  # all different
    rot = transforms.apply(x, "rot4")
    np.testing.assert_array_equal(rot[:, 1], jnp.rot90(x, 1, axes=(1, 2)))
    # a +8 translation to the right: column 8 of the result is column 0 of the input
    (i,) = [j for j, p in enumerate(transforms.parameters("geom72")) if p == (False, 8, 0, 0)]
    np.testing.assert_array_equal(geom[:, i, :, 8:], x[:, :, :24])


def test_deep_svdd_centre_is_the_initial_mean_and_has_no_bias():
    model = models.create("deep_svdd", center_images=32)
    x = jax.random.normal(jax.random.PRNGKey(0), (32, 28, 28, 1))
    variables = model.init(jax.random.PRNGKey(1), x[:1], train=False)
    leaves = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    assert all("kernel" in jax.tree_util.keystr(p) for p, _ in leaves)  # Ruff et al. Sec. 3.3
    stats = variables["batch_stats"]
    z_all = []
    for batch in (x[:16], x[16:]):  # 32 images: the centre pass
        (z, _, ready), new = model.apply(
            {**variables, "batch_stats": stats}, batch, train=True, mutable=["batch_stats"]
        )
        assert float(ready) == 0.0
        stats = new["batch_stats"]
        z_all.append(z)
    np.testing.assert_allclose(stats["center"], jnp.concatenate(z_all).mean(0), rtol=1e-5)
    (_, c, ready), after = model.apply(
        {**variables, "batch_stats": stats}, x[:16], train=True, mutable=["batch_stats"]
    )
    assert float(ready) == 1.0
    np.testing.assert_array_equal(after["batch_stats"]["center"], stats["center"])  # fixed
    assert float(jnp.min(jnp.abs(c))) >= 0.1 - 1e-7  # eps away from 0


def test_every_anomaly_config_validates():
    from cnn_arch.validate import validate_config

    for method in _common.METHODS:
        for dataset in _common.DATASETS:
            for scale in _common.SCALES:
                validate_config(_common.config(method, dataset, scale), device_count=1)
    validate_config(_common.msp_config(), device_count=1)


def test_normal_class_filters_training_split_only(shared_tfds):
    config = _common.config("reconstruction", "mnist")
    config.data_dir, config.normal_class, config.train_split = shared_tfds, 7, "train[:3000]"
    info = data.dataset_info(config)
    batches = data.train_batches(config, info, local_batch_size=50)
    seen = np.concatenate([next(batches)["label"] for _ in range(info.num_train // 50)])
    assert set(seen.tolist()) == {7}
    assert 250 < info.num_train < 400  # ~10% of 3,000
    assert info.num_eval == 10_000  # the test split stays whole


@pytest.mark.parametrize(
    "change, message",
    [
        ({"normal_class": 10}, "config.normal_class=10 is out of range: 'mnist' has classes 0..9"),
        ({"normal_class": -3}, "config.normal_class=-3 is not allowed"),
        ({"model": "lenet5", "model_kwargs": {}}, "'classification' is not an anomaly task"),
    ],
)
def test_bad_input_is_a_user_error_before_training(change, message, shared_tfds, tmp_path):
    config = _common.config("deep_svdd", "mnist")
    config.data_dir = shared_tfds
    for k, v in change.items():
        config[k] = v
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")):
        anomaly_cli.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_cli_class_out_of_range_is_one_error_line(shared_tfds, tmp_path):
    proc = subprocess.run(
        [
            sys.executable, "-m", "cnn_arch.anomaly",
            "--config=configs/anomaly/reconstruction_mnist.py",
            "--config.normal_class=12", f"--config.data_dir={shared_tfds}",
            f"--workdir={tmp_path / 'w'}",
        ],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: config.normal_class=12 is out of range: 'mnist' has classes 0..9"]
    assert not (tmp_path / "w" / "checkpoints").exists()


def _tiny(method: str, dataset: str, steps: int, data_dir: str, normal_class: int = 1):
    config = _common.config(method, dataset)
    config.data_dir, config.normal_class = data_dir, normal_class
    config.num_train_steps = steps
    config.eval_split = "test[:1000]"
    config.evals.anomaly.calibration_split = "train[90%:93%]"
    return config


@pytest.mark.slow  # ~30 s alone; minutes on the shared 2 cores
def test_reconstruction_end_to_end_and_scoring_a_png_folder(shared_tfds, tmp_path):
    from PIL import Image

    workdir = str(tmp_path / "w")
    config = _tiny("reconstruction", "mnist", 60, shared_tfds)
    result = anomaly_cli.run(config, workdir)
    arrays = np.load(os.path.join(workdir, "scores.npz"))
    assert arrays["score"].shape == arrays["is_anomaly"].shape == (1000,)
    assert arrays["is_anomaly"].sum() == (arrays["label"] != 1).sum()
    assert result["auroc"] == pytest.approx(auroc(arrays["score"], arrays["is_anomaly"]))
    assert result["auroc"] > 0.7  # digit 1 is the easiest class; chance is 0.5
    saved = json.load(open(os.path.join(workdir, "auroc.json")))
    assert saved["normal_class"] == 1 and saved["auroc"] == result["auroc"]
    # New images: four 1s and four 0s from the test split, as PNG files.
    import tensorflow_datasets as tfds

    ds = tfds.load("mnist", split="test[:200]", data_dir=shared_tfds, download=False)
    examples = list(tfds.as_numpy(ds))
    folder = tmp_path / "new"
    folder.mkdir()
    chosen = [e for e in examples if e["label"] == 1][:4] + [
        e for e in examples if e["label"] == 0
    ][:4]
    for i, e in enumerate(chosen):
        Image.fromarray(e["image"][..., 0]).save(folder / f"{i}_label{e['label']}.png")
    out = score.score_images(workdir, str(folder), 0.05)
    flags = [r["anomalous"] for r in out["images"]]
    assert len(flags) == 8 and sum(flags[4:]) >= 3 and sum(flags[:4]) <= 1
    # The same images through the eval pipeline get the same scores as in scores.npz.
    split = score.score_images(workdir, "test[:5]", 0.05)
    np.testing.assert_allclose(
        [r["score"] for r in split["images"]], arrays["score"][:5], rtol=1e-4
    )
    # Wrong channels / size: one error line, exit status 2.
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(folder / "rgb.png")
    with pytest.raises(UserError, match=r"rgb\.png is 28x28x3 \(HxWxC\); the detector was"):
        score.score_images(workdir, str(folder), 0.05)
    (folder / "rgb.png").unlink()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "big.png")
    proc = subprocess.run(
        [sys.executable, "-m", "cnn_arch.anomaly.score", f"--workdir={workdir}",
         f"--images={folder}", "--fpr=0.05"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "big.png is 32x32x1" in proc.stderr


# -- every detector, a few hundred steps (slow) ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, dataset, steps, floor",
    [
        ("reconstruction", "mnist", 300, 0.9),
        ("continuation", "mnist", 300, 0.8),
        ("deep_svdd", "mnist", 300, 0.8),
        ("rotation", "mnist", 300, 0.8),
        ("geom", "mnist", 200, 0.7),
        ("knn", "mnist", 300, 0.9),
        ("rotation", "cifar10", 300, 0.55),
    ],
)
def test_each_detector_learns_digit_one(method, dataset, steps, floor, shared_tfds, tmp_path):
    result = anomaly_cli.run(_tiny(method, dataset, steps, shared_tfds), str(tmp_path))
    assert result["auroc"] > floor, result


@pytest.mark.slow
def test_msp_fashion_mnist_against_mnist(shared_tfds, tmp_path):
    config = _common.msp_config()
    config.data_dir, config.num_train_steps, config.eval_split = shared_tfds, 300, "test[:1000]"
    result = anomaly_cli.run(config, str(tmp_path))
    arrays = np.load(tmp_path / "scores.npz")
    assert arrays["is_anomaly"].sum() == 1000 and (~arrays["is_anomaly"]).sum() == 1000
    assert result["auroc"] > 0.6, result


@pytest.mark.slow
def test_experiment_short_version(shared_tfds, tmp_path):
    sys.path.insert(0, str(ROOT / "experiments"))
    from experiments import one_class

    one_class.main(
        [
            f"--work_root={tmp_path / 'runs'}", f"--out_dir={tmp_path / 'out'}",
            f"--data_dir={shared_tfds}", "--steps=30", "--classes=1",
            "--datasets=mnist", "--methods=reconstruction,deep_svdd", "--msp=0",
        ]
    )  # fmt: skip
    table = json.loads((tmp_path / "out" / "one_class.json").read_text())["table"]
    assert set(table) == {"reconstruction", "knn", "deep_svdd"}
    assert table["deep_svdd"]["mnist"]["published_mean"] == 94.8
    assert (tmp_path / "out" / "one_class.png").stat().st_size > 0
    assert "| deep_svdd | mnist | 1 |" in (tmp_path / "out" / "one_class.md").read_text()
