"""Orbax checkpoints of the whole train state: save, keep the last N, resume.

Orbax writes each step into a temporary folder and renames it when complete, so a
process killed mid-save leaves the previous checkpoints intact. A latest checkpoint
that still cannot be read (corrupted on disk) is reported with its path and the
previous one is used instead.
"""

from __future__ import annotations

import os
import shutil
import time

import jax
import orbax.checkpoint as ocp
from absl import logging

from cnn_arch.errors import UserError


class Checkpoints:
    def __init__(self, directory: str, keep: int):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_handlers=ocp.StandardCheckpointHandler(),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def save(self, step: int, state) -> None:
        """Starts an asynchronous save; ``wait`` blocks until it is committed."""
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def wait(self) -> None:
        self._manager.wait_until_finished()

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

    def _set_aside(self, step: int) -> str:
        if jax.process_index() != 0:
            return self.path(step)
        dest_dir = os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints")
        os.makedirs(dest_dir, exist_ok=True)
        dest = os.path.join(dest_dir, f"{step}-{int(time.time())}")
        shutil.move(self.path(step), dest)
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
