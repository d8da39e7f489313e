"""How fast the training input pipeline alone produces batches (images per second)."""

from __future__ import annotations

import os
import resource
import time

from cnn_arch.data import pipeline


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def host_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def benchmark_input(config, steps: int = 100, warmup_steps: int = 10) -> dict:
    """Times ``steps`` batches of ``train_batches`` for ``config`` after ``warmup_steps``
    (which fill the shuffle buffer and the cache), on one process.

    Returns images/s (wall clock), images/s per host core (wall images/s divided by the
    cores the process may use), images per CPU-second of this process (robust to other
    load on the machine), and what was measured.
    """
    info = pipeline.dataset_info(config)
    batch_size = config.batch_size
    batches = pipeline.train_batches(config, info, local_batch_size=batch_size)
    for _ in range(warmup_steps):
        next(batches)
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    for _ in range(steps):
        next(batches)
    seconds, cpu_seconds = time.perf_counter() - t0, _cpu_seconds() - cpu0
    images = steps * batch_size
    cores = host_cores()
    return {
        "dataset": config.dataset,
        "train_pp": info.train_pp,
        "image_shape": list(info.image_shape),
        "batch_size": batch_size,
        "steps": steps,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "host_cores": cores,
        "images_per_sec": images / seconds,
        "images_per_sec_per_core": images / seconds / cores,
        "images_per_cpu_second": images / cpu_seconds if cpu_seconds > 0 else float("nan"),
    }
