"""experiments/accuracy_vs_cost.py: every model it lists is a zoo model with torchvision's
counts, bad input is one error line, and (slow) the smoke scale writes its files."""

from __future__ import annotations

import json
import re
import sys

import pytest
from conftest import ROOT, run_experiment

sys.path.insert(0, str(ROOT / "experiments"))
import accuracy_vs_cost  # noqa: E402
import model_zoo  # noqa: E402

from cnn_arch import models  # noqa: E402


def test_every_listed_model_is_in_the_zoo_with_torchvision_reference_counts():
    for name, top1 in accuracy_vs_cost.TORCHVISION_TOP1.items():
        assert name in models.names()
        assert models.spec(name).input_shape == (224, 224, 3)
        assert "torchvision" in model_zoo.REFERENCES[name].source
        assert 50 < top1 < 80


def test_every_other_imagenet_model_has_a_cited_paper_figure_or_says_none():
    imagenet = {
        n for n in models.names() if models.spec(n).input_shape in ((224, 224, 3), (227, 227, 3))
    }
    assert set(accuracy_vs_cost.PUBLISHED) == imagenet  # every ImageNet model of the zoo
    assert not set(accuracy_vs_cost.PAPER_TOP1) & set(accuracy_vs_cost.TORCHVISION_TOP1)
    for top1, source in accuracy_vs_cost.PAPER_TOP1.values():
        if top1 is None:
            assert source.startswith("none: ")
        else:
            assert 50 < top1 < 80
            assert re.search(r"(19|20)\d\d, (Table|Fig\.) \d", source), source


def test_unknown_model_is_one_error_line_and_exit_2(tmp_path):
    proc = run_experiment(
        "accuracy_vs_cost.py", "--models=lenet5", "--out_dir", str(tmp_path), timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --models: ['lenet5']")


@pytest.mark.slow
def test_smoke_scale_counts_match_torchvision_and_writes_files(tmp_path):
    proc = run_experiment(
        "accuracy_vs_cost.py", "--scale=smoke", f"--out_dir={tmp_path}", timeout=1800
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "accuracy_vs_cost.json").read_text())
    assert (tmp_path / "accuracy_vs_cost.png").stat().st_size > 10_000
    for row in report["models"]:
        ref = model_zoo.REFERENCES[row["model"]]
        assert row["params"] == ref.params
        assert row["gmacs"] == pytest.approx(ref.gmacs, rel=0.02)
        assert all(t["images_per_sec"] > 0 for t in row["throughput"].values())
        assert row["top1_source"] == "torchvision"


def test_workdir_keeps_timed_models_and_a_rerun_reuses_them(tmp_path, monkeypatch):
    timed = []

    def fake_throughput(name, batch_size, steps):
        timed.append((name, batch_size))
        return {
            "images_per_sec": 10.0 * batch_size,
            "ms_per_step": 100.0,
            "cpu_ms_per_step": 150.0,
            "compile_seconds": 1.0,
            "timed_steps": steps,
        }

    monkeypatch.setattr(accuracy_vs_cost, "throughput", fake_throughput)
    monkeypatch.setattr(accuracy_vs_cost, "counts", lambda name: {"params": 1e6, "gmacs": 0.5})
    argv = ["--scale=smoke", f"--out_dir={tmp_path / 'out'}", f"--workdir={tmp_path / 'w'}"]
    first = accuracy_vs_cost.main(argv)
    assert len(timed) == 2 * len(accuracy_vs_cost.SCALES["smoke"]["models"])
    assert accuracy_vs_cost.main(argv) == first  # every row from the kept workdir
    assert len(timed) == 2 * len(accuracy_vs_cost.SCALES["smoke"]["models"])
