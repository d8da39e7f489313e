"""Short versions of the data experiments (slow: each traces every op or trains ResNet-20)."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "experiments"))


@pytest.mark.slow
def test_augmentations_picture_and_table(shared_tfds, tmp_path):
    import augmentations

    augmentations.main(
        ["--dataset=cifar10", f"--data_dir={shared_tfds}", f"--out_dir={tmp_path}"]
        + ["--num_images=3", "--timing_images=64"]
    )
    result = json.loads((tmp_path / "augmentations.json").read_text())
    assert set(result["ops"]) == set(augmentations.ROWS)
    assert all(r["images_per_sec"] > 0 for r in result["ops"].values())
    assert result["ops"]["flip_lr"]["kind"] == "geometric"
    assert (tmp_path / "augmentations.png").stat().st_size > 10_000
    assert "| pca_lighting | photometric |" in (tmp_path / "augmentations.md").read_text()


@pytest.mark.slow
def test_augmentation_ablation_smoke(shared_tfds, tmp_path):
    import augmentation_ablation

    summary = augmentation_ablation.main(
        ["--scale=smoke", f"--data_dir={shared_tfds}", f"--out_dir={tmp_path}"]
        + ["--variants", "none", "mixup"]
    )
    assert list(summary) == ["none", "mixup"]
    result = json.loads((tmp_path / "augmentation_ablation.json").read_text())
    for run in result["runs"]:
        assert run["gap"] == pytest.approx(run["train_top1"] - run["test_top1"])
        assert 0 <= run["test_top1"] <= 1 and run["curves"]["eval"]
    assert (tmp_path / "augmentation_ablation.png").exists()
