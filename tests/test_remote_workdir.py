"""Workdirs on a non-local filesystem (issue 16, item 8), tested offline on TensorFlow's
in-memory ``ram://`` filesystem, registered with etils ``epath`` the way ``gs://`` is.

What reaches ``ram://`` for real: the workdir probe, the lock, ``config.json`` and
``config_history/``, ``metrics.jsonl``, the TensorBoard events (``tf.summary`` through
``tf.io.gfile``), the checksums, the quarantine of a corrupt checkpoint and
``final_eval.json``. What cannot: Orbax writes checkpoint arrays through TensorStore,
which it points at GCS for ``gs://`` and otherwise at the local ``file`` driver with an
absolute path (``tensorstore_utils._build_ocdbt_kvstore_tspec`` raises "Checkpoint path
should be absolute" for ``ram://``), and TensorStore has no driver for TensorFlow's
``ram://``. So the training test swaps only Orbax's ``CheckpointManager`` for
``_EpathCheckpointManager`` below, which keeps each step as one ``.npz`` file in the same
``ram://`` folder; the ``Checkpoints`` wrapper around it (probe, checksums, verification,
quarantine, resume) is the real one. Real Orbax on ``ram://`` is refused with one line.
"""

from __future__ import annotations

import io
import json
import os
import uuid

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf
from etils import epath
from etils.epath import backend, gpath, register
from test_workdir_faults import digits

from cnn_arch import checkpoint, train
from cnn_arch import workdir as workdir_lib
from cnn_arch.errors import UserError


@pytest.fixture
def ram(monkeypatch, tmp_path):
    """A fresh ``ram://<id>`` root reachable through epath; the cwd is an empty folder so
    that a path mistaken for a local one (``./ram:/...``) shows up there."""
    monkeypatch.setattr(gpath, "_URI_PREFIXES", (*gpath._URI_PREFIXES, "ram://"))
    monkeypatch.setattr(gpath, "_URI_SCHEMES", gpath._URI_SCHEMES | {"ram"})
    monkeypatch.setitem(gpath._URI_MAP_ROOT, "ram://", "/ram/")
    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "ram", backend.tf_backend)
    monkeypatch.setitem(register._URI_PREFIXES_TO_CLS, "ram://", gpath.PosixGPath)
    monkeypatch.chdir(tmp_path)
    root = f"ram://{uuid.uuid4().hex}"
    yield root
    if tf.io.gfile.exists(root):
        tf.io.gfile.rmtree(root)
    assert sorted(os.listdir(tmp_path)) == []  # nothing landed on the local disk
    assert not os.path.exists("/ram")


class _EpathCheckpointManager:
    """The part of Orbax's CheckpointManager that ``checkpoint.Checkpoints`` uses, storing
    each step as ``<dir>/<step>/state.npz`` through epath (Orbax cannot reach ``ram://``)."""

    saved: list[int] = []
    restored: list[int] = []
    lock_seen: list[bool] = []

    def __init__(self, directory, options=None, item_handlers=None):
        del item_handlers
        self.directory = epath.Path(directory)
        self.keep = options.max_to_keep
        self.directory.mkdir(parents=True, exist_ok=True)

    def all_steps(self):
        return sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit())

    def latest_step(self):
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, step, args, force=False):
        del force
        buffer = io.BytesIO()
        np.savez(buffer, *[np.asarray(x) for x in jax.tree.leaves(args.item)])
        (self.directory / str(step)).mkdir()
        (self.directory / str(step) / "state.npz").write_bytes(buffer.getvalue())
        self.saved.append(step)
        self.lock_seen.append((self.directory.parent / workdir_lib.LOCK_NAME).exists())
        for old in self.all_steps()[: -self.keep]:
            (self.directory / str(old)).rmtree()
        return True

    def restore(self, step, args):
        with np.load(io.BytesIO((self.directory / str(step) / "state.npz").read_bytes())) as f:
            leaves = [f[f"arr_{i}"] for i in range(len(f.files))]
        abstract, treedef = jax.tree.flatten(args.item)
        self.restored.append(step)
        arrays = [jax.device_put(x, a.sharding) for x, a in zip(leaves, abstract, strict=True)]
        return jax.tree.unflatten(treedef, arrays)

    def item_metadata(self, step):
        return None

    def wait_until_finished(self):
        pass

    def reload(self):
        pass

    def reached_preemption(self, step):
        return False

    def close(self):
        pass


def _rows(path: epath.Path) -> list[tuple[int, str]]:
    return [(r["step"], r["split"]) for r in map(json.loads, path.read_text().splitlines())]


def _short(data_dir, steps):
    return digits(data_dir, num_train_steps=steps, checkpoint_every_steps=2, log_every_steps=2)


def test_training_and_resume_in_a_ram_workdir(ram, offline_tfds, monkeypatch):
    manager = _EpathCheckpointManager
    manager.saved, manager.restored, manager.lock_seen = [], [], []
    monkeypatch.setattr(ocp, "CheckpointManager", manager)
    monkeypatch.setattr(checkpoint, "ORBAX_SCHEMES", ("gs://", "ram://"))
    monkeypatch.setattr(workdir_lib, "SETTLE_SECONDS", 0.1)  # one process: nobody to wait for
    workdir = f"{ram}/bucket/run"
    train.train_and_evaluate(_short(offline_tfds, 4), workdir)
    w = epath.Path(workdir)
    assert manager.saved == [2, 4] and all(manager.lock_seen)
    assert sorted(p.name for p in (w / "checksums").iterdir()) == ["2.json", "4.json"]
    sums = json.loads((w / "checksums" / "4.json").read_text())
    assert list(sums) == ["state.npz"]
    assert json.loads((w / "config.json").read_text())["num_train_steps"] == 4
    assert _rows(w / "metrics.jsonl") == [(2, "train"), (4, "train"), (4, "eval")]
    assert list(w.glob("events.out.tfevents.*"))  # TensorBoard wrote there too
    assert not (w / workdir_lib.LOCK_NAME).exists()  # released
    # Flip bytes of the newest checkpoint: it is quarantined on ram://, 2 is resumed.
    npz = w / "checkpoints" / "4" / "state.npz"
    data = bytearray(npz.read_bytes())
    data[-100:] = bytes(b ^ 0xFF for b in data[-100:])
    npz.write_bytes(bytes(data))
    result = train.train_and_evaluate(_short(offline_tfds, 6), workdir)
    assert manager.restored == [2] and manager.saved == [2, 4, 4, 6]
    assert result["num_examples"] == 200
    (moved,) = (w / "corrupt_checkpoints").iterdir()
    assert moved.name.startswith("4-") and (moved / "checksums.json").exists()
    assert len(list((w / "config_history").iterdir())) == 2
    assert _rows(w / "metrics.jsonl")[-2:] == [(6, "train"), (6, "eval")]
    assert json.loads((w / "final_eval.json").read_text()) == result
    # Finished: a rerun reads final_eval.json back from ram://.
    assert train.train_and_evaluate(_short(offline_tfds, 6), workdir) == result


def test_orbax_checkpoints_on_a_filesystem_tensorstore_cannot_reach_are_refused(ram):
    with pytest.raises(UserError, match=r"cannot keep checkpoints in ram://.*TensorStore"):
        checkpoint.Checkpoints(f"{ram}/run/checkpoints", keep=2)


def test_gs_paths_stay_uris():
    path = workdir_lib.path("gs://bucket/run")
    assert str(path / "checkpoints") == "gs://bucket/run/checkpoints"
    assert not workdir_lib.is_local("gs://bucket/run") and workdir_lib.is_local("run")
    assert str(workdir_lib.path("run")) == os.path.abspath("run")


def test_remote_lock_token_protocol(ram, monkeypatch):
    workdir = f"{ram}/run"
    epath.Path(workdir).mkdir(parents=True)
    monkeypatch.setattr(workdir_lib, "SETTLE_SECONDS", 0.0)
    lock_path = epath.Path(workdir) / workdir_lib.LOCK_NAME
    with workdir_lib.WorkdirLock(workdir) as lock:
        assert lock.held and json.loads(lock_path.read_text())["token"] == lock.me["token"]
        with pytest.raises(UserError, match="is in use by PID .* on this host"):
            workdir_lib.WorkdirLock(workdir).acquire()
    assert not lock_path.exists()
    # A run on another host writes its lock while ours settles: the last writer wins,
    # we read its token back, step aside, and leave its lock in place.
    other = {"host": "other-host", "pid": 1, "since": "now", "token": "theirs"}
    real_sleep = workdir_lib.time.sleep

    def other_writes(seconds):
        workdir_lib.write_atomic(lock_path, json.dumps(other))
        real_sleep(seconds)

    monkeypatch.setattr(workdir_lib.time, "sleep", other_writes)
    loser = workdir_lib.WorkdirLock(workdir)
    with pytest.raises(UserError, match=f"on host other-host .* remove {lock_path}"):
        loser.acquire()
    assert not loser.held and json.loads(lock_path.read_text())["token"] == "theirs"
    # A dead process's lock from this host is taken over on ram:// as on a local disk.
    monkeypatch.setattr(workdir_lib.time, "sleep", real_sleep)
    me = workdir_lib.WorkdirLock(workdir).me
    lock_path.write_text(json.dumps({**me, "pid": 2**22 + 1, "start": "1", "token": "dead"}))
    with workdir_lib.WorkdirLock(workdir) as lock:
        assert lock.held
    assert not lock_path.exists()


def test_an_unreachable_bucket_is_one_error_line(ram, monkeypatch):
    def unreachable(path):
        raise tf.errors.FailedPreconditionError(None, None, "Could not resolve host: x")

    monkeypatch.setattr(backend.tf_backend, "exists", unreachable)
    with pytest.raises(UserError, match=r"--workdir=ram://.* is not writable \(Could not resolve"):
        train._prepare_workdir(f"{ram}/run")
