"""The training spine end to end on real data: steps, exact eval, sharding, resume."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import ROOT, small_config

from cnn_arch import data, evaluators, train
from cnn_arch import run as run_lib


def _read_jsonl(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _final_params(workdir):
    mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    step = mngr.latest_step()
    restored = mngr.restore(step, args=ocp.args.StandardRestore())
    return step, restored["params"]


@pytest.mark.parametrize("model", ["lenet5", "mlp"])
def test_train_and_eval_step_on_mnist(model, shared_tfds, tmp_path):
    config = small_config(
        model=model, dataset="mnist", data_dir=shared_tfds, eval_split="test[:500]"
    )
    result = train.train_and_evaluate(config, str(tmp_path))
    assert result["num_examples"] == 500
    assert np.isfinite(result["loss"])
    rows = _read_jsonl(tmp_path)
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [2, 4]
    assert {"loss", "top1", "steps_per_sec", "images_per_sec", "learning_rate"} <= set(
        train_rows[0]
    )
    assert json.load(open(tmp_path / "config.json"))["model"] == model
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


def test_eval_covers_whole_split_exactly(shared_tfds, tmp_path):
    """1003 examples in batches of 100: padded, masked, and equal to a direct count."""
    config = small_config(
        dataset="mnist", data_dir=shared_tfds, eval_split="test[:1003]", eval_batch_size=100
    )
    run = run_lib.build(config)
    info, model, state = run.info, run.model, run.init_state()
    result = evaluators.build_all(run)[0](state)
    assert result["num_examples"] == 1003

    images, labels = [], []
    for b in data.eval_batches(config, info, local_batch_size=1003):
        images.append(b["image"][b["mask"] > 0])
        labels.append(b["label"][b["mask"] > 0])
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert len(labels) == 1003
    logits = model.apply({"params": state.params}, jnp.asarray(images), train=False)
    logp = jax.nn.log_softmax(logits)
    np.testing.assert_allclose(
        result["loss"], -np.mean(np.take_along_axis(logp, labels[:, None], 1)), rtol=1e-5
    )
    np.testing.assert_allclose(result["top1"], np.mean(np.argmax(logits, -1) == labels))


def test_resumed_data_stream_is_identical(shared_tfds):
    config = small_config(dataset="cifar10", data_dir=shared_tfds, batch_size=64)
    info = data.dataset_info(config)
    spe = info.num_train // 64
    full = data.train_batches(config, info, local_batch_size=64, start_step=spe - 2)
    first = [next(full) for _ in range(4)]  # crosses an epoch boundary
    resumed = data.train_batches(config, info, local_batch_size=64, start_step=spe)
    again = next(resumed)
    np.testing.assert_array_equal(first[2]["image"], again["image"])
    np.testing.assert_array_equal(first[2]["label"], again["label"])
    assert not np.array_equal(first[0]["label"], first[2]["label"])


SHARDED_SCRIPT = textwrap.dedent(
    """
    import json, sys, jax, numpy as np
    sys.path.insert(0, {root!r})
    from conftest import small_config
    from cnn_arch import parallel, train
    assert jax.device_count() == 8, jax.devices()
    out = {{}}
    for n in (1, 8):
        config = small_config(model="mlp", dataset="mnist", data_dir={data!r},
                              eval_split="test[:1000]", model_kwargs={{"norm": "batch"}},
                              batch_size=64, eval_batch_size=200, num_train_steps=6,
                              log_every_steps=1)
        workdir = {tmp!r} + f"/d{{n}}"
        res = train.train_and_evaluate(config, workdir, mesh=parallel.make_mesh(jax.devices()[:n]))
        rows = [json.loads(l) for l in open(workdir + "/metrics.jsonl")]
        out[n] = {{"train": [r["loss"] for r in rows if r["split"] == "train"], "eval": res}}
    # per-device statistics on 8 devices == ghost BN over 8 sub-batches on one device
    for name, n, norm, stats in (("per_device", 8, "batch", "per_device"),
                                 ("ghost", 1, "ghost_batch", "global")):
        config = small_config(model="mlp", dataset="mnist", data_dir={data!r},
                              eval_split="test[:1000]", model_kwargs={{"norm": norm}},
                              bn_statistics=stats, batch_size=256, eval_batch_size=200,
                              num_train_steps=4, log_every_steps=1)
        workdir = {tmp!r} + f"/{{name}}"
        train.train_and_evaluate(config, workdir, mesh=parallel.make_mesh(jax.devices()[:n]))
        rows = [json.loads(l) for l in open(workdir + "/metrics.jsonl")]
        out[name] = [r["loss"] for r in rows if r["split"] == "train"]
    print("RESULT" + json.dumps(out))
    """
)


def test_eight_devices_equal_one_device(shared_tfds, tmp_path):
    """Same global batch on 8 fake CPU devices (sync BN) gives the 1-device losses, and
    per-device BN statistics on 8 devices equal ghost BN with k = batch / 8."""
    script = SHARDED_SCRIPT.format(root=str(ROOT / "tests"), data=shared_tfds, tmp=str(tmp_path))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT")[1])
    one, eight = out["1"], out["8"]
    assert len(one["train"]) == 6
    np.testing.assert_allclose(one["train"], eight["train"], rtol=1e-5)
    np.testing.assert_allclose(one["eval"]["loss"], eight["eval"]["loss"], rtol=1e-5)
    assert one["eval"]["top1"] == eight["eval"]["top1"]
    assert len(out["ghost"]) == 4
    np.testing.assert_allclose(out["per_device"], out["ghost"], rtol=1e-5)


def _cli(workdir, data_dir, *extra):
    return [
        sys.executable,
        "-m",
        "cnn_arch.main",
        f"--config={ROOT / 'configs' / 'quickstart.py'}",
        f"--workdir={workdir}",
        f"--config.data_dir={data_dir}",
        "--config.num_train_steps=150",
        "--config.checkpoint_every_steps=10",
        "--config.log_every_steps=50",
        "--config.steps_per_eval=1000",
        *extra,
    ]


def _committed_steps(workdir) -> list[int]:
    ckpt = pathlib.Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in ckpt.glob("*") if p.name.isdigit()) if ckpt.is_dir() else []


def test_sigkill_and_resume_gives_identical_parameters(offline_tfds, tmp_path):
    """kill -9 mid-run, rerun the same command: bitwise the same final parameters."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(
        _cli(clean, offline_tfds), cwd=ROOT, env=env, check=True, capture_output=True, timeout=600
    )

    proc = subprocess.Popen(
        _cli(killed, offline_tfds),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not any(s >= 40 for s in _committed_steps(killed)):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_at_kill = _committed_steps(killed)
    assert steps_at_kill and max(steps_at_kill) < 150, steps_at_kill

    rerun = subprocess.run(
        _cli(killed, offline_tfds), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"Resumed from {killed / 'checkpoints'} at step {max(steps_at_kill)}" in rerun.stderr

    step_a, params_a = _final_params(clean)
    step_b, params_b = _final_params(killed)
    assert step_a == step_b == 150
    jax.tree.map(np.testing.assert_array_equal, params_a, params_b)

    again = subprocess.run(
        _cli(killed, offline_tfds), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0 and "Training already finished" in again.stderr


def test_quickstart_reaches_95_percent(offline_tfds, tmp_path):
    """The offline quickstart (LeNet-5, 4,000 real digits) on 1,000 held-out digits."""
    sys.path.insert(0, str(ROOT))
    from configs import quickstart

    config = quickstart.get_config()
    config.data_dir = offline_tfds
    result = train.train_and_evaluate(config, str(tmp_path))
    assert result["num_examples"] == 1000
    assert result["top1"] >= 0.95, result
