"""Metric writers (TensorBoard + metrics.jsonl) and the training clock.

The losses and accuracies themselves belong to the tasks (``cnn_arch.tasks``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import time
from collections.abc import Callable

import jax
from etils import epath


def averages(sums: dict[str, float]) -> dict[str, float]:
    """Divides each summed metric by ``count``; ``num_examples`` is the count."""
    n = float(sums["count"])
    out = {k: float(v) / max(n, 1.0) for k, v in sums.items() if k != "count"}
    out["num_examples"] = int(n)
    return out


class Writer:
    """TensorBoard events (clu's SummaryWriter) and metrics.jsonl, one JSON object per
    line. Only process 0 writes; on other processes ``write`` does nothing. The
    human-readable progress line is logged by the training loop. Both go through
    ``tf.io.gfile``/``epath``, so ``workdir`` may be a ``gs://`` URI (where each row's
    append re-uploads the file: fine for a log of a few MB)."""

    def __init__(self, workdir: str):
        # clu's SummaryWriter imports TensorFlow: only a run that trains loads it, so a
        # bad config is reported before the data stack loads (see cnn_arch.data).
        from clu import metric_writers

        self.active = jax.process_index() == 0
        self._tb = metric_writers.SummaryWriter(str(workdir)) if self.active else None
        self._jsonl = epath.Path(workdir) / "metrics.jsonl"
        if self.active and self._jsonl.exists() and not _ends_with_newline(self._jsonl):
            # A run killed mid-write leaves a partial last line: end it, so the next row
            # starts on its own line instead of being glued onto the fragment.
            self._append("\n")

    def _append(self, text: str) -> None:
        # Opened per row: epath's gfile files live only inside ``with``, and a closed
        # file is a committed one on every filesystem.
        with self._jsonl.open("a") as f:
            f.write(text)

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.active:
            return
        self._tb.write_scalars(step, {f"{split}/{k}": v for k, v in values.items()})
        self._tb.flush()
        self._append(json.dumps({"step": step, "split": split, **values}) + "\n")

    def close(self) -> None:
        if self.active:
            self._tb.close()


def _ends_with_newline(path: epath.Path) -> bool:
    """True for an empty file too (gfile files cannot seek from the end: use the size)."""
    size = path.stat().length
    if not size:
        return True
    with path.open("rb") as f:
        f.seek(size - 1)
        return f.read(1) == b"\n"


class Chrono:
    """Throughput and ETA that count only the training steps they time.

    The loop calls ``start(step)`` once the train step is compiled, wraps every eval
    and checkpoint in ``paused(kind)``, and calls ``window(step, remaining)`` at each
    log. steps/s is (steps since the last window) / (wall time since then, minus the
    pauses in it); the device must have finished those steps (the loop reads their
    metrics first). The ETA is the remaining steps at the mean rate since ``start``
    plus, for each kind of pause, its mean measured duration times how many are still
    to come (``remaining[kind]``) — so evals and checkpoints still ahead are counted.
    """

    def __init__(self, total_steps: int, batch_size: int, clock: Callable[[], float] = None):
        self.total_steps = total_steps
        self.batch_size = batch_size
        self._clock = clock or time.perf_counter
        self._pauses: dict[str, list[float]] = collections.defaultdict(list)
        self._window_start = None

    def start(self, step: int) -> None:
        self._window_start = self._clock()
        self._window_step = step
        self._window_paused = 0.0
        self._train_seconds = 0.0
        self._train_steps = 0

    @contextlib.contextmanager
    def paused(self, kind: str):
        t0 = self._clock()
        try:
            yield
        finally:
            dt = self._clock() - t0
            self._pauses[kind].append(dt)
            self._window_paused += dt

    def pause_seconds(self, kind: str) -> float:
        """Mean measured duration of one pause of ``kind`` (0 before the first)."""
        d = self._pauses.get(kind)
        return sum(d) / len(d) if d else 0.0

    def window(self, step: int, remaining: dict[str, int] | None = None) -> dict[str, float]:
        """steps_per_sec, images_per_sec and eta_seconds for the steps up to ``step``."""
        now = self._clock()
        seconds = max(now - self._window_start - self._window_paused, 1e-9)
        steps = step - self._window_step
        self._train_seconds += seconds
        self._train_steps += steps
        self._window_start, self._window_step, self._window_paused = now, step, 0.0
        rate = steps / seconds
        mean_rate = self._train_steps / self._train_seconds
        eta = (self.total_steps - step) / mean_rate if mean_rate > 0 else float("inf")
        for kind, count in (remaining or {}).items():
            eta += count * self.pause_seconds(kind)
        return {
            "steps_per_sec": rate,
            "images_per_sec": rate * self.batch_size,
            "eta_seconds": eta,
        }


def format_duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
