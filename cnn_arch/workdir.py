"""One run per workdir, and a record of every config it was run with.

``WorkdirLock`` makes a second run in the same workdir exit at once (naming the
holder's host and PID) instead of interleaving checkpoints and metrics with the first.
The lock is a file created with O_EXCL, which is atomic on local filesystems and on
NFS v3+; a lock left by a dead process on this host (its PID is gone, or reused by a
process that started later) is taken over, and the log says so. A lock held from
another host cannot be checked from here: it is refused with the command to remove it
if that run is known to be dead.

``record_config`` writes ``config.json`` only when it is new or changed, keeps every
version in ``config_history/``, and refuses (exit 2) a change that would silently
break a resumed run unless ``config.allow_config_change`` is set.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from absl import logging

from cnn_arch.errors import UserError

LOCK_NAME = "run.lock"

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
        self.path = os.path.join(workdir, LOCK_NAME)
        self.me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start": _process_start(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        self.held = False

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def acquire(self) -> None:
        for _ in range(3):  # a stale lock is moved away, then we try again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.me, f)
            self.held = True
            return
        raise WorkdirBusy(f"cannot take the lock {self.path}: other runs keep taking it")

    def _handle_existing(self) -> None:
        try:
            with open(self.path) as f:
                holder = json.load(f)
        except FileNotFoundError:
            return  # released meanwhile
        except (OSError, ValueError):
            # Being written right now, or cut short by a crash: give a writer a moment.
            if time.time() - os.path.getmtime(self.path) < 10:
                time.sleep(1)
                return
            holder = {}
        host, pid = holder.get("host"), holder.get("pid")
        if host == self.me["host"] and isinstance(pid, int) and _alive(pid, holder.get("start")):
            raise WorkdirBusy(
                f"workdir {os.path.dirname(self.path)} is in use by PID {pid} on this host "
                f"(since {holder.get('since')}); wait for it or use another --workdir"
            )
        if host not in (None, self.me["host"]):
            raise WorkdirBusy(
                f"workdir {os.path.dirname(self.path)} is in use by PID {pid} on host {host} "
                f"(since {holder.get('since')}); this host cannot check whether it still runs: "
                f"if it does not, remove {self.path} and rerun"
            )
        stale = f"{self.path}.stale.{os.getpid()}"
        try:
            os.replace(self.path, stale)
        except FileNotFoundError:
            return
        os.remove(stale)
        logging.warning(
            "Took over the lock of a dead run (PID %s on %s, since %s) in %s.",
            pid,
            host or "an unknown host",
            holder.get("since"),
            os.path.dirname(self.path),
        )

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass


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
    path = os.path.join(workdir, "config.json")
    new = _comparable(config)
    old = None
    if os.path.exists(path):
        with open(path) as f:
            old = {k: v for k, v in json.load(f).items() if k not in NOT_COMPARED}
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
    history = os.path.join(workdir, "config_history")
    os.makedirs(history, exist_ok=True)
    n = len(os.listdir(history))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(history, f"{n:04d}-{stamp}.json"), "w") as f:
        json.dump({"config": new, "changes": {k: list(v) for k, v in changes.items()}}, f, indent=2)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    os.replace(tmp, path)
