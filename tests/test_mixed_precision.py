"""half_precision=True (bfloat16 compute, float32 parameters) trains LeNet-5 on the
offline digits to the accuracy float32 training reaches, within 1% of 1,000 digits."""

from __future__ import annotations

import pytest
from conftest import ROOT  # noqa: F401  (conftest puts the repository on sys.path)

from cnn_arch import train


@pytest.mark.slow  # 52 CPU-s: two training runs; bf16 does not pay on CPU (experiments/speed.py)
def test_bf16_training_matches_fp32_on_the_digits(offline_tfds, tmp_path):
    from configs import quickstart

    top1 = {}
    for half in (False, True):
        config = quickstart.get_config()
        config.update(
            data_dir=offline_tfds,
            half_precision=half,
            batch_size=128,  # 8 epochs of 31 steps: the quickstart recipe, shortened
            learning_rate=0.1,
            num_epochs=8.0,
            log_every_steps=1000,
            checkpoint_every_steps=10**6,
            steps_per_eval=10**6,
        )
        result = train.train_and_evaluate(config, str(tmp_path / f"half_{half}"))
        assert result["num_examples"] == 1000
        top1[half] = result["top1"]
    assert min(top1.values()) >= 0.95, top1
    assert abs(top1[True] - top1[False]) <= 0.01, top1
