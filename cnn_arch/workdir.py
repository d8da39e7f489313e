"""One run per workdir, and a record of every config it was run with.

Every workdir path goes through ``path()`` (etils ``epath``), so a workdir may be a
local folder or any filesystem TensorFlow's ``tf.io.gfile`` serves (``gs://bucket/run``
on Cloud TPU); nothing here calls ``open``/``os.path`` on a workdir directly.

``WorkdirLock`` makes a second run in the same workdir exit at once (naming the
holder's host and PID) instead of interleaving checkpoints and metrics with the first.
On a local folder the lock is a file created with O_EXCL, which is atomic on local
filesystems and on NFS v3+. An object store (GCS) has no O_EXCL through ``gfile``, so
there the lock is written with a unique token, read back after ``SETTLE_SECONDS``, and
held only if the token is still ours: a run that starts while another one's lock is
already visible is always refused, but two runs whose lock writes land within the
settle window of each other can both believe they hold it (the last writer wins the
file; the first may have read its own token back before being overwritten). A lock
left by a dead process on this host (its PID is gone, or reused by a process that
started later) is taken over, and the log says so. A lock held from another host
cannot be checked from here: it is refused with the command to remove it if that run
is known to be dead.

``record_config`` writes ``config.json`` only when it is new or changed, keeps every
version in ``config_history/``, and refuses (exit 2) a change that would silently
break a resumed run unless ``config.allow_config_change`` is set.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from typing import Any

from absl import logging
from etils import epath

from cnn_arch.errors import UserError

LOCK_NAME = "run.lock"
# Remote lock: how long to wait between writing our token and reading it back, so that a
# concurrent writer's lock has landed by the time we look.
SETTLE_SECONDS = 2.0

# Keys whose change makes a resumed run a different experiment: the model and its
# input, the data order (seed, batch) and the objective. The checkpoint may even load.
RESUME_KEYS = (
    "model",
    "model_kwargs",
    "task",
    "dataset",
    "train_split",
    "num_classes",
    "augment",
    "train_pp",
    "image_size",
    "batch_size",
    "seed",
    "optimizer",
    "schedule",
    "bn_statistics",
)
# Schedules whose rate at a step depends on the run's total length.
LENGTH_DEPENDENT_SCHEDULES = ("cosine",)
LENGTH_KEYS = ("num_train_steps", "num_epochs")
NOT_COMPARED = ("allow_config_change",)


class WorkdirBusy(UserError):
    """Another run holds the workdir."""


def is_local(workdir: str | os.PathLike) -> bool:
    """False for a URI (``gs://bucket/run``, ``ram://x``), True for a path on this machine."""
    return "://" not in os.fspath(workdir)


def path(workdir: str | os.PathLike) -> epath.Path:
    """``workdir`` as an ``epath.Path``: local paths made absolute, URIs kept as given
    (``os.path.abspath('gs://b/r')`` would be the local folder ``./gs:/b/r``)."""
    p = epath.Path(workdir)
    return p.expanduser().resolve() if is_local(workdir) else p


def write_atomic(target: epath.Path, text: str) -> None:
    """Writes ``text`` to a temporary sibling and renames it over ``target``: a reader
    never sees half a file, and no stale tail is left where a filesystem does not
    truncate on rewrite (TensorFlow's ``ram://`` keeps the old bytes past the new end)."""
    tmp = target.parent / f"{target.name}.tmp.{os.getpid()}"
    tmp.write_text(text)
    tmp.replace(target)


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a failed workdir read or write raises: OSError locally, TensorFlow's OpError
    (e.g. PermissionDeniedError) through ``tf.io.gfile`` on remote filesystems."""
    # Only tf.io.gfile raises OpError, and using it loads TensorFlow: a workdir checked
    # before the data stack loads (a bad config fails fast) can only have raised OSError.
    tf = sys.modules.get("tensorflow")
    return (OSError,) if tf is None else (OSError, tf.errors.OpError)


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), to tell a reused PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start is None or _process_start(pid) in (None, start)


class WorkdirLock:
    """``with WorkdirLock(workdir):`` holds the workdir for this process."""

    def __init__(self, workdir: str):
        self.workdir = str(workdir)
        self.path = epath.Path(workdir) / LOCK_NAME
        self.local = is_local(workdir)
        self.me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start": _process_start(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "token": uuid.uuid4().hex,
        }
        self.held = False

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def acquire(self) -> None:
        for _ in range(3):  # a stale lock is moved away, then we try again
            if self._create():
                self.held = True
                return
            self._handle_existing()
        raise WorkdirBusy(f"cannot take the lock {self.path}: other runs keep taking it")

    def _create(self) -> bool:
        """Creates the lock file holding ``self.me``; False if one exists already."""
        if self.local:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                json.dump(self.me, f)
            return True
        # No atomic create-if-absent through gfile: write our token, let a concurrent
        # writer's file land, and keep the lock only if the file still holds our token.
        if self.path.exists():
            return False
        write_atomic(self.path, json.dumps(self.me))
        time.sleep(SETTLE_SECONDS)
        return (self._read_holder() or {}).get("token") == self.me["token"]

    def _read_holder(self) -> dict | None:
        """The lock file's contents; None if there is none, ``{"unreadable": True}`` if
        it cannot be parsed (being written, or cut short)."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (*storage_errors(), ValueError):
            return {"unreadable": True}

    def _handle_existing(self) -> None:
        holder = self._read_holder()
        if holder is None:
            return  # released meanwhile
        if holder.get("unreadable"):
            # Being written right now, or cut short by a crash: give a writer a moment.
            mtime = self.path.stat().mtime if self.path.exists() else 0
            if mtime and time.time() - mtime < 10:
                time.sleep(1)
                return
            holder = {}
        host, pid = holder.get("host"), holder.get("pid")
        if host == self.me["host"] and isinstance(pid, int) and _alive(pid, holder.get("start")):
            raise WorkdirBusy(
                f"workdir {self.workdir} is in use by PID {pid} on this host "
                f"(since {holder.get('since')}); wait for it or use another --workdir"
            )
        if host not in (None, self.me["host"]):
            raise WorkdirBusy(
                f"workdir {self.workdir} is in use by PID {pid} on host {host} "
                f"(since {holder.get('since')}); this host cannot check whether it still runs: "
                f"if it does not, remove {self.path} and rerun"
            )
        # Moved aside first so that of two runs taking over the same stale lock, only one
        # removes it (locally; on an object store the rename is not atomic either).
        stale = self.path.parent / f"{LOCK_NAME}.stale.{self.me['token']}"
        try:
            self.path.replace(stale)
        except FileNotFoundError:
            return
        stale.unlink(missing_ok=True)
        logging.warning(
            "Took over the lock of a dead run (PID %s on %s, since %s) in %s.",
            pid,
            host or "an unknown host",
            holder.get("since"),
            self.workdir,
        )

    def release(self) -> None:
        """Removes the lock if it is still ours (a remote lock may have been overwritten)."""
        if self.held:
            self.held = False
            if not self.local and (self._read_holder() or {}).get("token") != self.me["token"]:
                return
            self.path.unlink(missing_ok=True)


def _comparable(config) -> dict[str, Any]:
    """The config as JSON values (tuples become lists), without the keys not compared."""
    values = json.loads(config.to_json_best_effort(sort_keys=True))
    return {k: v for k, v in values.items() if k not in NOT_COMPARED}


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple]:
    return {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}


def record_config(workdir: str, config, *, resuming: bool, describe_jump=None) -> None:
    """Writes ``config.json`` when new or changed and appends it to ``config_history/``.

    When a checkpoint is being resumed, a change of a ``RESUME_KEYS`` key, or of the
    run's length under a length-dependent schedule (cosine), is refused unless
    ``config.allow_config_change``; ``describe_jump(old)`` says what the learning rate
    would do at the resumed step. Other changes are logged and recorded.
    """
    config_path = epath.Path(workdir) / "config.json"
    new = _comparable(config)
    old = None
    if config_path.exists():
        saved = json.loads(config_path.read_text())
        old = {k: v for k, v in saved.items() if k not in NOT_COMPARED}
    changes = config_changes(old, new) if old is not None else {}
    if old is not None and not changes:
        return
    if changes and resuming and not config.get("allow_config_change", False):
        breaking = [k for k in changes if k in RESUME_KEYS]
        if config.schedule in LENGTH_DEPENDENT_SCHEDULES and any(k in changes for k in LENGTH_KEYS):
            breaking += [k for k in LENGTH_KEYS if k in changes]
        if breaking:
            listed = "; ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in breaking)
            jump = describe_jump(old) if describe_jump and set(breaking) & set(LENGTH_KEYS) else ""
            raise UserError(
                f"the config differs from the one this workdir was trained with ({listed})"
                f"{jump}; resuming would silently change the experiment: use a new --workdir, "
                "or pass --config.allow_config_change=True to continue with the new config"
            )
    if changes:
        logging.warning(
            "Config changed since the last run in this workdir: %s",
            "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items()),
        )
    history = epath.Path(workdir) / "config_history"
    history.mkdir(parents=True, exist_ok=True)
    n = len(list(history.iterdir()))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    record = {"config": new, "changes": {k: list(v) for k, v in changes.items()}}
    (history / f"{n:04d}-{stamp}.json").write_text(json.dumps(record, indent=2))
    write_atomic(config_path, config.to_json_best_effort(indent=2, sort_keys=True))
