"""Two real processes joined by jax.distributed on 127.0.0.1 (gloo CPU collectives):
each reads its own shard, the global batch is assembled across them, and the eval
still counts every example of the split exactly once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process_env(port: int, pid: int) -> dict[str, str]:
    """Process ``pid`` of 2 on CPU, joined through the coordinator at ``port``."""
    return {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "JAX_PLATFORMS": "cpu",
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": str(pid),
    }


def test_two_processes_train_and_eval_exactly(shared_tfds, tmp_path):
    port = _free_port()
    flags = [
        f"--config={ROOT / 'configs' / 'lenet5_mnist.py'}",
        f"--workdir={tmp_path / 'w'}",
        f"--config.data_dir={shared_tfds}",
        "--config.num_train_steps=20",
        "--config.batch_size=64",
        "--config.eval_batch_size=250",
        "--config.eval_split=test[:1001]",
        "--config.log_every_steps=10",
        "--config.checkpoint_every_steps=10",
    ]
    procs = []
    for pid in range(2):
        env = _process_env(port, pid)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "cnn_arch.main", *flags],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    assert "on 2 devices" in outputs[0]  # one CPU device per process, one global mesh
    final = json.load(open(tmp_path / "w" / "final_eval.json"))
    assert final["num_examples"] == 1001  # shards of 501 + 500, padded and masked
    rows = [json.loads(r) for r in open(tmp_path / "w" / "metrics.jsonl")]
    train_losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert len(train_losses) == 2 and train_losses[1] < train_losses[0]
    assert sorted(os.listdir(tmp_path / "w" / "checkpoints")) == ["10", "20"]


# Two processes trained, stopped and resumed: about a CPU-minute, so -m slow.
@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_committed_step(shared_tfds, tmp_path):
    """Only process 1 gets SIGTERM: JAX's preemption service makes both agree on the step,
    both commit it and exit 4; a rerun resumes from it on both."""
    port = _free_port()
    workdir = tmp_path / "w"
    flags = [
        f"--config={ROOT / 'configs' / 'lenet5_mnist.py'}",
        f"--workdir={workdir}",
        f"--config.data_dir={shared_tfds}",
        "--config.batch_size=64",
        "--config.eval_batch_size=250",
        "--config.eval_split=test[:500]",
        "--config.log_every_steps=10",
        "--config.checkpoint_every_steps=100000",
        "--config.steps_per_eval=100000",
        "--config.schedule=constant",  # so the rerun may shorten the run (see test_workdir_faults)
    ]

    def start(steps: int):
        procs = []
        for pid in range(2):
            env = _process_env(port, pid)
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "cnn_arch.main",
                        *flags,
                        f"--config.num_train_steps={steps}",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )  # fmt: skip
            )
        return procs

    procs = start(100_000)
    head = []
    for line in procs[0].stdout:
        head.append(line)
        if "step 20/" in line:
            break
    procs[1].send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    outputs[0] = "".join(head) + outputs[0]
    steps = []
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 4, out[-3000:]
        (line,) = [x for x in out.splitlines() if x.startswith("error: preempted")]
        steps.append(int(line.split("at step ")[1].split(";")[0]))
    assert steps[0] == steps[1] >= 20
    assert os.listdir(workdir / "checkpoints") == [str(steps[0])]

    port = _free_port()
    procs = start(steps[0] + 10)
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    assert f"at step {steps[0]}." in outputs[0]
    assert str(steps[0] + 10) in os.listdir(workdir / "checkpoints")
