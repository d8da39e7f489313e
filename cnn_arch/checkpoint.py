"""Orbax checkpoints of the whole train state: save, keep the last N, resume, verify.

Orbax writes each step into a temporary folder and renames it when complete, so a
process killed mid-save leaves the previous checkpoints intact. Once a step is
committed its files' SHA-256 sums are written to ``checksums/<step>.json`` next to it
and verified on restore. A latest checkpoint that cannot be read, or whose bytes no
longer match its sums, is reported with its path, moved aside, and the previous one
is used instead. A checkpoint folder that cannot be written (read-only, disk full) is
a ``StorageError`` naming the path and the cause; the checkpoints before it stay.

Paths are ``epath`` paths (``cnn_arch.workdir.path``): local folders and ``gs://``
buckets. Orbax writes the arrays through TensorStore, which it points at GCS for
``gs://`` and at the local ``file`` driver for everything else; a URI of any other
filesystem (``ram://``, ``s3://``, ...) is refused at start with a ``UserError``
rather than failing in the first background save.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from cnn_arch import workdir as workdir_lib
from cnn_arch.errors import UserError

# URI schemes whose checkpoints Orbax can write: TensorStore has a driver for them.
ORBAX_SCHEMES = ("gs://",)


class StorageError(UserError):
    """The checkpoint folder cannot be written (read-only, full, gone)."""

    exit_code = 6


def _cause(e: BaseException) -> str:
    """The innermost OS-level reason of a (possibly wrapped, multi-line) save failure."""
    seen = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return f"{os.strerror(seen.errno)} ({errno.errorcode.get(seen.errno, seen.errno)})"
        seen = seen.__cause__ or seen.__context__
    lines = [line for line in str(e).splitlines() if line.strip()]
    text = lines[-1] if lines else type(e).__name__
    for marker in ("No space left on device", "Read-only file system", "Permission denied"):
        if marker in str(e):
            return marker
    return text[:300]


def _probe_writable(directory: epath.Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write_test_{os.getpid()}"
        probe.write_text("x")
        probe.unlink()
    except workdir_lib.storage_errors() as e:
        raise StorageError(f"cannot write checkpoints to {directory}: {_cause(e)}") from None


def _file_sums(root: epath.Path) -> dict[str, str]:
    sums = {}
    for folder, _, files in root.walk():
        for name in files:
            path = folder / name
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    digest.update(chunk)
            sums[str(path.relative_to(root))] = digest.hexdigest()
    return sums


def _move_tree(src: epath.Path, dest: epath.Path) -> None:
    """A local folder is renamed; through gfile a folder rename is not recursive on
    every filesystem (``ram://`` moves only the folder entry), so files are copied."""
    if workdir_lib.is_local(src):
        src.rename(dest)
        return
    for folder, _, files in src.walk():
        target = dest / folder.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            (folder / name).copy(target / name)
    src.rmtree()


def _check_orbax_can_write(directory: str) -> None:
    if workdir_lib.is_local(directory) or directory.startswith(ORBAX_SCHEMES):
        return
    raise UserError(
        f"cannot keep checkpoints in {directory}: Orbax writes checkpoint arrays through "
        f"TensorStore, which reaches local folders and {', '.join(ORBAX_SCHEMES)} only; use a "
        "workdir on one of those"
    )


class Checkpoints:
    def __init__(self, directory: str, keep: int):
        _check_orbax_can_write(str(directory))
        self.directory = workdir_lib.path(directory)
        self.sums_dir = self.directory.parent / "checksums"
        if jax.process_index() == 0:
            _probe_writable(self.directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_handlers=ocp.StandardCheckpointHandler(),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def path(self, step: int) -> epath.Path:
        return self.directory / str(step)

    def save(self, step: int, state) -> None:
        """Starts an asynchronous save; ``wait`` blocks until it is committed. A failure
        (of this save or of the previous one, still in flight) is a StorageError."""
        self.wait()  # the previous save (Orbax would wait for it too); then sum it
        try:
            self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
        except Exception as e:  # noqa: BLE001 - whatever Orbax raises, the cause is storage
            raise self._storage_error(step, e) from None

    def wait(self) -> None:
        try:
            self._manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._storage_error(None, e) from None
        self._write_sums()

    def _storage_error(self, step: int | None, e: BaseException) -> StorageError:
        last = self._committed_steps()
        where = self.path(step) if step is not None else self.directory
        kept = f"the last committed checkpoint is {self.path(last[-1])}" if last else "none"
        return StorageError(
            f"cannot write checkpoint {where}: {_cause(e)}; {kept}; free the space or fix the "
            "folder, then rerun the same command to resume"
        )

    def _committed_steps(self) -> list[int]:
        try:
            self._manager.reload()
            return sorted(self._manager.all_steps())
        except Exception:  # noqa: BLE001 - only used to word an error message
            return []

    def _write_sums(self) -> None:
        """SHA-256 of every file of each committed step that has no sums yet (process 0;
        called when no save is in flight)."""
        if jax.process_index() != 0:
            return
        steps = self._manager.all_steps()
        try:
            self.sums_dir.mkdir(parents=True, exist_ok=True)
            for step in steps:
                target = self.sums_dir / f"{step}.json"
                if not target.exists():
                    workdir_lib.write_atomic(target, json.dumps(_file_sums(self.path(step))))
            for sums in self.sums_dir.iterdir():  # sums of checkpoints Orbax deleted
                if sums.name.endswith(".json") and int(sums.name[:-5]) not in steps:
                    sums.unlink()
        except workdir_lib.storage_errors() as e:
            raise StorageError(f"cannot write checksums to {self.sums_dir}: {_cause(e)}") from None

    def _verify(self, step: int) -> None:
        """Raises ValueError naming a file whose bytes changed since it was committed."""
        target = self.sums_dir / f"{step}.json"
        if not target.exists():
            return  # written by an older version, or killed before its sums were written
        want = json.loads(target.read_text())
        got = _file_sums(self.path(step))
        for name, digest in want.items():
            if got.get(name) != digest:
                raise ValueError(f"{name} does not match its SHA-256 in {target}")

    def reached_preemption(self, step: int) -> bool:
        """True on every host once a multi-host preemption notice has reached ``step``."""
        return self._manager.reached_preemption(step)

    def restore_latest(self, target):
        """The newest readable checkpoint restored into ``target``'s structure and
        shardings, or None when the folder has no checkpoint.

        An unreadable checkpoint is moved to ``<workdir>/corrupt_checkpoints/`` (kept,
        not deleted) and the previous one is tried; if none can be read, that is an
        error rather than a silent fresh start.
        """
        self._manager.reload()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        steps = sorted(self._manager.all_steps(), reverse=True)
        for step in steps:
            try:
                _check_shapes(self._manager.item_metadata(step), abstract, self.path(step))
                self._verify(step)
                return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 - any read failure means a bad checkpoint
                moved = self._set_aside(step)
                logging.error(
                    "Checkpoint %s cannot be read (%s: %s); moved it to %s and trying the "
                    "previous one.",
                    self.path(step),
                    type(e).__name__,
                    str(e).splitlines()[0][:200] if str(e) else "",
                    moved,
                )
        if steps:
            raise UserError(
                f"none of the checkpoints {steps} in {self.directory} can be read; they were "
                "moved to corrupt_checkpoints/ next to it, rerun to start from scratch"
            )
        return None

    def _set_aside(self, step: int) -> epath.Path:
        if jax.process_index() != 0:
            return self.path(step)
        dest_dir = self.directory.parent / "corrupt_checkpoints"
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / f"{step}-{int(time.time())}"
        _move_tree(self.path(step), dest)
        sums = self.sums_dir / f"{step}.json"
        if sums.exists():
            sums.rename(dest / "checksums.json")
        self._manager.reload()
        return dest

    def close(self) -> None:
        self._manager.close()


def _key_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _shapes(tree) -> dict[str, tuple]:
    """'params/conv1/kernel' -> shape; dict keys, attributes and indices alike."""
    return {
        "/".join(_key_name(e) for e in path): tuple(getattr(leaf, "shape", ()) or ())
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def _check_shapes(metadata, abstract, path: str) -> None:
    """A checkpoint of a different model is a user error, not a corrupted file."""
    if metadata is None:
        return
    saved, wanted = _shapes(metadata), _shapes(abstract)
    if saved.keys() != wanted.keys():
        missing = sorted(set(wanted) - set(saved))[:3]
        raise UserError(
            f"checkpoint {path} holds a different model or optimizer (it lacks {missing}); "
            "use a new --workdir or the config that wrote it"
        )
    for key, shape in wanted.items():
        if saved[key] != shape:
            raise UserError(
                f"checkpoint {path} holds {key} with shape {saved[key]}, but this config "
                f"needs {shape}; use a new --workdir or the config that wrote it"
            )
