"""What the paper-reproduction experiments share: training many configs with the
library's loop (``cnn_arch.train.train_and_evaluate``), a few at a time, and reading
back the metrics.jsonl rows each run wrote.

A job is ``(workdir, config)``. With ``workers > 1`` the jobs run in that many spawned
processes (each its own JAX runtime, one CPU core's worth of work for small nets);
otherwise one after another in this process. A finished workdir is not retrained: the
workdir records its training time in ``experiment_time.json`` and is then reused as it
is, so a killed experiment reruns only what is missing (an unfinished workdir resumes
from its last checkpoint).
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import ml_collections  # noqa: F401  (the configs jobs carry)

ROOT = Path(__file__).resolve().parents[1]
# Written into a workdir when its training finished: its wall and CPU seconds. A workdir
# that has it is reused as it is by later invocations (which report these times).
TIMING = "experiment_time.json"
MACHINE = "2-core Xeon CPU (AVX-512/AMX), shared"


def default_data_dir() -> str:
    """$TFDS_DATA_DIR, else the prepared datasets next to the repository."""
    return os.environ.get("TFDS_DATA_DIR") or str(ROOT.parent / "shared" / "tensorflow_datasets")


def use_compilation_cache(path: str) -> None:
    """JAX's persistent compilation cache in ``path`` ('' = leave it off). The seeds and
    networks of one experiment compile the same programs (and the run builder compiles
    the init again for every restore): the cache turns each repeat into a read, and
    compiles dominate short runs."""
    if path:
        import jax

        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _stop_with_parent(parent: int, poll_seconds: float = 2.0) -> None:
    """Worker initializer: when the experiment's process dies (killed, session ended),
    SIGTERM this worker, which the loop treats as a preemption (it commits the current
    step and exits), instead of training on for minutes as an orphan that a rerun's
    workers would then share the workdir and the cores with."""

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="stop_with_parent").start()


def _train_one(
    workdir: str, config_json: str, compilation_cache: str
) -> tuple[str, dict[str, float]]:
    """Runs in a worker: trains one config; returns (workdir, {'wall_s', 'cpu_s'}): the
    wall time and this process's CPU time (all its threads) for the run, and 'diverged'
    (the loop's message) when the loss became non-finite."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging

    from cnn_arch import schema, train
    from cnn_arch.errors import Diverged

    timing = os.path.join(workdir, TIMING)
    if os.path.exists(timing):  # trained by an earlier invocation: reuse it as it is
        with open(timing) as f:
            return workdir, {**json.load(f), "reused": True}
    use_compilation_cache(compilation_cache)
    logging.set_verbosity(logging.WARNING)
    config = schema.default_config()  # the keys' declared types, as run.load_config does
    config.update(json.loads(config_json))
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        train.train_and_evaluate(config, workdir)
        diverged = None
    except Diverged as e:  # a result too (e.g. a learning rate too high for the network)
        diverged = str(e)
    times = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    if diverged:
        times["diverged"] = diverged
    with open(timing, "w") as f:
        json.dump(times, f)
    return workdir, {**times, "reused": False}


def _done(log, workdir: str, times: dict) -> None:
    wall, cpu = times["wall_s"], times["cpu_s"]
    cpu = "?" if cpu is None else f"{cpu:.0f}"
    again = " (trained earlier, reused)" if times["reused"] else ""
    again += " DIVERGED" if times.get("diverged") else ""
    log(f"  done {os.path.basename(workdir)}: {wall:.0f} s wall, {cpu} s CPU{again}")


def train_all(
    jobs: list[tuple[str, ml_collections.ConfigDict]],
    workers: int = 1,
    log=print,
    compilation_cache: str = "",
) -> dict[str, dict[str, float]]:
    """Trains every ``(workdir, config)``; returns each workdir's wall and CPU seconds
    (``{'wall_s', 'cpu_s'}``; a workdir that was already finished costs ~0).
    ``compilation_cache``: a folder for JAX's persistent compilation cache ('' = none)."""
    walls: dict[str, dict[str, float]] = {}
    payload = [(w, c.to_json(), compilation_cache) for w, c in jobs]
    if workers <= 1:
        for w, c, cache in payload:
            walls[w] = _train_one(w, c, cache)[1]
            _done(log, w, walls[w])
        return walls
    context = multiprocessing.get_context("spawn")  # a fresh JAX runtime per worker
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_stop_with_parent, initargs=(os.getpid(),)
    ) as pool:
        futures = [pool.submit(_train_one, *job) for job in payload]
        try:
            for future in concurrent.futures.as_completed(futures):
                w, times = future.result()
                walls[w] = times
                _done(log, w, times)
        except BaseException:
            # A failed (or interrupted) job ends the experiment: the queued jobs are
            # dropped instead of training for minutes behind an error that already
            # decided the outcome; the running ones finish their current workdir.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return walls


def scaled_cifar_resnet(
    *,
    width: float,
    train: int,
    test: int,
    batch: int,
    seed: int,
    data_dir: str,
    num_steps: int,
    schedule_steps: int,
    evals: int,
) -> ml_collections.ConfigDict:
    """He et al.'s CIFAR recipe (``configs/resnet20_cifar10.py``) scaled down to a CPU:
    every stage's width (16/32/64) x ``width``, ``train[:train]`` / ``test[:test]``
    subsets, trained to ``num_steps`` with the rate /10 at 50% and 75% of
    ``schedule_steps`` (32k and 48k of the paper's 64k iterations; a run stopped early to
    be resumed keeps the schedule of the whole run), ``evals`` evaluations over the run.
    Checkpoints at the end only. The caller sets the model, its norm and the evaluators."""
    from configs import resnet20_cifar10

    c = resnet20_cifar10.get_config()
    widths = [max(1, round(w * width)) for w in (16, 32, 64)]
    c.model_kwargs.widths = widths
    c.model_kwargs.stem_width = widths[0]
    c.data_dir = data_dir
    c.train_split = f"train[:{train}]"
    c.eval_split = f"test[:{test}]"
    c.shuffle_buffer = train
    c.batch_size = batch
    c.eval_batch_size = min(500, test)
    c.seed = seed
    c.num_train_steps = num_steps
    c.lr_decay_epochs = tuple(f * schedule_steps / (train // batch) for f in (0.5, 0.75))
    c.steps_per_eval = max(1, schedule_steps // evals)
    c.log_every_steps = max(1, min(50, c.steps_per_eval))
    c.checkpoint_every_steps = 10**9
    c.keep_checkpoints = 1
    return c


def read_metrics(workdir: str) -> dict[str, dict[int, dict]]:
    """metrics.jsonl as {split: {step: row}}; a resumed run's later rows win."""
    rows: dict[str, dict[int, dict]] = collections.defaultdict(dict)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line:
                row = json.loads(line)
                rows[row["split"]][int(row["step"])] = row
    return {split: dict(sorted(by_step.items())) for split, by_step in rows.items()}


def series(rows: dict[int, dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric of one split, in step order."""
    steps = sorted(rows)
    return steps, [float(rows[s][key]) for s in steps]


def command_line(script: str, argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return " ".join([f"python experiments/{script}", *args])


def run_main(main: Callable[[], object]) -> None:
    """An experiment's ``if __name__ == '__main__'``: bad input (a ``UserError`` from the
    library or the script) is one ``error:`` line and its exit code, not a traceback; an
    int that ``main`` returns is the exit status. Imports nothing itself: ``import
    cnn_arch`` sets XLA flags and loads JAX, which a script may need to do later (speed.py's
    workers: torch first, XLA flags per worker)."""
    try:
        status = main()
    except Exception as e:
        errors = sys.modules.get("cnn_arch.errors")  # loaded by whatever raised a UserError
        if errors is None or not isinstance(e, errors.UserError):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    sys.exit(status if isinstance(status, int) else 0)
