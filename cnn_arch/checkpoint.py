"""Orbax checkpoints of the whole train state: save, keep the last N, resume.

Orbax writes each step into a temporary folder and renames it when complete, so a
process killed mid-save leaves the previous checkpoints intact. A latest checkpoint
that still cannot be read (corrupted on disk) is reported with its path and the
previous one is used instead.
"""

from __future__ import annotations

import os

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

    def restore_latest(self, target):
        """The newest readable checkpoint restored into ``target``'s structure and
        shardings, or None when there is none."""
        self._manager.reload()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                _check_shapes(self._manager.item_metadata(step), abstract, self.path(step))
                return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 - any read failure means a bad checkpoint
                logging.error(
                    "checkpoint %s cannot be read (%s: %s); trying the previous one",
                    self.path(step),
                    type(e).__name__,
                    str(e).splitlines()[0] if str(e) else "",
                )
        return None

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
