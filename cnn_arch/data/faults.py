"""Data faults as one clear error: a split that selects nothing, a shard that cannot be read.

TensorFlow reports a truncated or corrupted TFRecord shard as a ``DataLossError`` that
does not say which file; ``reading()`` turns it into a ``DataError`` naming the file,
found by checking the split's shards (record framing first, which is cheap; then the
CRCs of small splits). The training loop catches ``DataError`` (a UserError) to save a
checkpoint before it exits with ``DataError.exit_code``.
"""

from __future__ import annotations

import contextlib
import struct

import tensorflow as tf
import tensorflow_datasets as tfds

from cnn_arch.errors import DataError, UserError

# Check the CRCs of every record only when the split's shards are this small in total.
CRC_SCAN_MAX_BYTES = 2 << 30
# TensorFlow errors that come from the bytes on disk rather than from our code.
READ_ERRORS = (tf.errors.DataLossError, tf.errors.NotFoundError)


def split_size(builder: tfds.core.DatasetBuilder, split: str, key: str) -> int:
    """Number of examples ``split`` selects; UserError for a malformed, out-of-range or
    empty split string (checked before anything compiles)."""
    name = builder.info.name
    try:
        n = builder.info.splits[split].num_examples
    except (ValueError, KeyError, AssertionError) as e:
        reason = str(e).split(". See format")[0].split("\n")[0]
        raise UserError(
            f"config.{key}={split!r} is not a valid split of {name!r}: {reason} (splits: "
            f"{', '.join(f'{s} ({i.num_examples})' for s, i in builder.info.splits.items())}; "
            "slices like 'test[:1000]', 'train[10%:]', 'train[:50%]+test')"
        ) from None
    if n <= 0:
        raise UserError(f"config.{key}={split!r} selects no examples of {name!r}")
    return n


def _framing_problem(path: str) -> str | None:
    """Why the TFRecord file is cut short, from its record lengths alone (no CRCs):
    each record is an 8-byte length, a 4-byte CRC, the data and a 4-byte CRC."""
    size = tf.io.gfile.stat(path).length
    position = 0
    with tf.io.gfile.GFile(path, "rb") as f:
        while position < size:
            header = f.read(12)
            if len(header) < 12:
                return f"truncated: a record header at byte {position} of {size}"
            (length,) = struct.unpack("<Q", header[:8])
            end = position + 12 + length + 4
            if end > size:
                return f"truncated: the record at byte {position} ends past the file ({size} bytes)"
            f.seek(end)
            position = end
    return None


def _crc_problem(path: str) -> str | None:
    try:
        tf.data.TFRecordDataset(path).reduce(0, lambda n, _: n + 1)
    except tf.errors.DataLossError as e:
        return e.message.split("\n")[0]
    return None


def locate(paths: list[str]) -> tuple[str, str] | None:
    """(path, reason) of the first unreadable TFRecord file among ``paths``, or None."""
    for path in paths:
        if not tf.io.gfile.exists(path):
            return path, "missing"
        problem = _framing_problem(path)
        if problem:
            return path, problem
    if sum(tf.io.gfile.stat(p).length for p in paths) <= CRC_SCAN_MAX_BYTES:
        for path in paths:
            problem = _crc_problem(path)
            if problem:
                return path, problem
    return None


def shard_paths(builder: tfds.core.DatasetBuilder, split: str) -> list[str]:
    """The files ``split`` reads, in order."""
    instructions = builder.info.splits[split].file_instructions
    return list(dict.fromkeys(str(i.filename) for i in instructions))


@contextlib.contextmanager
def reading(builder: tfds.core.DatasetBuilder, split: str, fix: str):
    """Turns TensorFlow's read errors inside the block into a DataError naming the file;
    ``fix`` says how to get a good copy."""
    try:
        yield
    except READ_ERRORS as e:
        name = builder.info.name
        found = locate(shard_paths(builder, split))
        if found:
            path, reason = found
            where = f"{path} is unreadable ({reason})"
        else:
            where = f"{e.message.splitlines()[0]} (in {builder.data_dir})"
        raise DataError(
            f"cannot read split {split!r} of dataset {name!r}: {where}; {fix}"
        ) from None
