"""Host memory of the training CLI stays flat after warm-up (slow: ~1 minute on 2 cores).

A shorter version of experiments/memory_soak.py: the BN paper's MNIST MLP, batch 60,
4,000 steps (4 epochs) with an evaluation and a checkpoint every 1,000 steps, so the
window after warm-up crosses epoch boundaries, evaluations and checkpoint saves.
The 20,000-step figures are in experiments/results/memory_soak.md.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import ROOT

GROWTH_BOUND_MIB = 50.0


def _memory_soak():
    spec = importlib.util.spec_from_file_location(
        "memory_soak", ROOT / "experiments" / "memory_soak.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_rss_growth_after_warmup_is_bounded(shared_tfds, tmp_path):
    soak = _memory_soak()
    command = soak.training_command(
        str(tmp_path / "run"),
        data_dir=shared_tfds,
        num_train_steps=4000,
        log_every_steps=500,
        steps_per_eval=1000,
        checkpoint_every_steps=1000,
    )
    # warm-up: the first epoch (cache filled), first evaluation and first checkpoint
    result = soak.run_soak(command, total_steps=4000, warmup_step=1500, interval=0.5, echo=False)
    assert result.returncode == 0, "\n".join(result.output_tail)
    window = result.after_warmup()
    assert len(window) >= 4 and window[-1].step == 4000, [(s.step, s.rss_mib) for s in window]
    assert window[0].rss_mib > 100  # really measured the trainer (JAX + TF), not a shell
    growth = result.growth_mib()
    print(f"RSS {window[0].rss_mib:.1f} MiB at step {window[0].step} -> {growth:+.1f} MiB")
    assert growth < GROWTH_BOUND_MIB, soak.markdown(result)
