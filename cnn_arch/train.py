"""The training loop: step -> log -> checkpoint -> evaluate -> preempt.

``train_and_evaluate(config, workdir)`` builds the run (``cnn_arch.run``), restores
the latest checkpoint of ``workdir`` if any, and trains to ``total_steps``. Each
stage is one method of ``Loop``; the model, task, optimizer and evaluators are parts
built elsewhere, so nothing here is model-, task- or dataset-specific.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from cnn_arch import checkpoint, evaluators, metrics, optim, parallel
from cnn_arch import run as run_lib
from cnn_arch import workdir as workdir_lib
from cnn_arch.errors import DataError, Diverged, EvalFailed, Preempted, UserError
from cnn_arch.steps import TrainState, create_train_state, eval_step, train_step
from cnn_arch.validate import validate_config

__all__ = [
    "TrainState",
    "create_train_state",
    "eval_step",
    "train_and_evaluate",
    "train_step",
]


class StopSignals:
    """Records SIGTERM/SIGINT/SIGHUP during training instead of dying, so the loop can
    commit a checkpoint of the current step first (preemptible TPUs send SIGTERM; an
    ssh disconnect sends SIGHUP).

    With several processes, SIGTERM is left to JAX's preemption service, which makes
    every process agree on the step to save (``Checkpoints.reached_preemption``);
    SIGINT and SIGHUP are turned into a SIGTERM to this process so they take the same
    agreed path.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self, multi_process: bool = False):
        self.received: str | None = None
        self._multi = multi_process
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                if self._multi and sig == signal.SIGTERM:
                    continue
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def _record(self, signum, frame):
        del frame
        name = signal.Signals(signum).name
        if self._multi:
            logging.warning("%s received: asking all processes to save and stop.", name)
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            self.received = name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _prepare_workdir(workdir: str) -> list:
    """Creates ``workdir`` and checks that it is writable; returns the folders it
    created, innermost first (``_remove_if_empty`` undoes them)."""
    path = workdir_lib.path(workdir)  # local or gs://: never a local folder named "gs:"
    try:
        if path.exists() and not path.is_dir():
            raise UserError(f"--workdir={workdir} is a file, not a directory; choose another path")
        created = []
        missing = path
        while not missing.exists() and missing != missing.parent:
            created.append(missing)
            missing = missing.parent
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test_{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except workdir_lib.storage_errors() as e:  # e.g. a bucket that cannot be reached
        cause = getattr(e, "strerror", None) or getattr(e, "message", None) or str(e)
        cause = " ".join(cause.split())[:300]
        raise UserError(f"--workdir={workdir} is not writable ({cause})") from None
    return created


def _remove_if_empty(folders: list) -> None:
    """Removes the folders ``_prepare_workdir`` created, innermost first, while empty:
    a run refused for its config or data leaves no trace."""
    for folder in folders:
        try:
            folder.rmdir()
        except workdir_lib.storage_errors():
            return


def _occurrences(period: int, after: int, total: int) -> int:
    """How many of the steps after..total are multiples of ``period`` or the last one."""
    n = total // period - after // period
    return n + (1 if total % period and total > after else 0)


class Loop:
    """One training run in one workdir; ``run()`` is the loop."""

    def __init__(self, run: run_lib.Run, workdir: str, ckpts: checkpoint.Checkpoints, state):
        self.run, self.config, self.workdir, self.ckpts = run, run.config, workdir, ckpts
        self.state = state
        self.start_step = int(state.step)
        self.total_steps = run.total_steps
        self.evaluators = evaluators.build_all(run)
        self.periods = {e.name: e.period(run.steps_per_epoch) for e in self.evaluators}
        self.writer = metrics.Writer(workdir)
        self.chrono = metrics.Chrono(run.total_steps, self.config.batch_size)
        self.window: list[tuple[int, dict]] = []  # (step, metrics on device) since the last log
        self.unchecked = 0  # how many of the window's last steps were not checked for inf/nan
        self.skipped = 0  # updates dropped by on_nonfinite='skip' since this process started
        self.last_saved = ckpts.latest_step()
        self.results: dict[str, dict[str, float]] = {}

    # -- the loop ------------------------------------------------------------------

    def train(self) -> dict[str, dict[str, float]]:
        """Trains from the restored step to the end; returns each evaluator's last result."""
        batches = self.run.train_batches(self.start_step)
        train_step = self._compile(self.run.jit_train_step(), next(batches))
        multi = jax.process_count() > 1
        with StopSignals(multi_process=multi) as stop:
            for step in range(self.start_step + 1, self.total_steps + 1):
                try:
                    batch = self._first_batch if step == self.start_step + 1 else next(batches)
                except DataError:
                    self.save_progress(step - 1)
                    raise
                self.state, step_metrics = train_step(self.state, batch)
                self.window.append((step, step_metrics))
                self.unchecked += 1
                last = step == self.total_steps
                if step % self.config.log_every_steps == 0 or last:
                    self.log(step)
                preempted = stop.received or (multi and self.ckpts.reached_preemption(step))
                if step % self.config.checkpoint_every_steps == 0 or last or preempted:
                    self.checkpoint(step)
                if preempted:
                    self.preempt(step, stop.received)
                for evaluator in self.evaluators:
                    if step % self.periods[evaluator.name] == 0 or last:
                        self.evaluate(evaluator, step)
        return self.results

    def _compile(self, train_step, first_batch):
        self._first_batch = first_batch
        t0 = time.perf_counter()
        compiled = train_step.lower(self.state, first_batch).compile()
        logging.info("Compiled the train step in %.1f s.", time.perf_counter() - t0)
        self.chrono.start(self.start_step)
        return compiled

    # -- the stages ------------------------------------------------------------------

    def check_finite(self) -> None:
        """Reads the inf/nan flags of the steps not yet checked (a host sync, done only at
        log, checkpoint and eval time). ``stop``: raises Diverged naming the first
        non-finite step, before anything of it is saved. ``skip``: counts the dropped
        updates and stops when more than ``max_skipped_fraction`` of them were dropped."""
        if not self.unchecked:
            return
        recent = self.window[-self.unchecked :]
        self.unchecked = 0
        flags = jax.device_get([m["nonfinite"] for _, m in recent])
        bad = [step for (step, _), flag in zip(recent, flags, strict=True) if flag]
        if not bad:
            return
        if self.config.on_nonfinite == "skip":
            self.skipped += len(bad)
            if len(bad) / len(recent) > self.config.max_skipped_fraction:
                raise Diverged(
                    f"{len(bad)} of the {len(recent)} updates up to step {recent[-1][0]} were "
                    f"skipped as non-finite (more than max_skipped_fraction="
                    f"{self.config.max_skipped_fraction}); {self._last_good()}; lower "
                    "config.learning_rate"
                )
            return
        step = bad[0]
        m = jax.device_get(dict(recent)[step])
        raise Diverged(
            f"training diverged at step {step}: loss={float(m['loss'])}, "
            f"grad_norm={float(m['grad_norm'])}; {self._last_good()}; lower "
            "config.learning_rate or set config.on_nonfinite='skip'"
        )

    def _last_good(self) -> str:
        self.ckpts.wait()
        if self.last_saved is None:
            return "no checkpoint was saved yet"
        return f"the last good checkpoint is {self.ckpts.path(self.last_saved)}"

    def log(self, step: int) -> None:
        """Mean train metrics of the window, honest steps/s, img/s and ETA."""
        self.check_finite()
        values = jax.device_get([m for _, m in self.window])  # waits for those steps
        summary = {k: float(np.mean([v[k] for v in values])) for k in values[0]}
        summary["nonfinite"] = float(sum(v["nonfinite"] for v in values))
        summary["skipped_total"] = float(self.skipped)
        remaining = {
            "checkpoint": _occurrences(self.config.checkpoint_every_steps, step, self.total_steps)
        }
        for name, period in self.periods.items():
            remaining[f"eval:{name}"] = _occurrences(period, step, self.total_steps)
        clock = self.chrono.window(step, remaining)
        summary.update(steps_per_sec=clock["steps_per_sec"], images_per_sec=clock["images_per_sec"])
        self.writer.write(step, "train", summary)
        skipped = f" | {self.skipped} updates skipped" if self.skipped else ""
        logging.info(
            "step %d/%d | loss %.4f | top1 %.2f%% | %.1f steps/s | %.0f img/s | ETA %s%s",
            step,
            self.total_steps,
            summary["loss"],
            100 * summary.get("top1", float("nan")),
            clock["steps_per_sec"],
            clock["images_per_sec"],
            metrics.format_duration(clock["eta_seconds"]),
            skipped,
        )
        self.window = []

    def checkpoint(self, step: int) -> None:
        """Saves the state (asynchronously); never a state with a non-finite step in it."""
        self.check_finite()
        with self.chrono.paused("checkpoint"):
            jax.block_until_ready(self.state)  # the steps so far are training time
            self.ckpts.save(step, self.state)
        self.last_saved = step

    def save_progress(self, step: int) -> None:
        """Commits ``step`` before the loop exits on a data or evaluator failure."""
        if step > (self.last_saved or 0) and step > self.start_step:
            self.checkpoint(step)
        self.ckpts.wait()

    def evaluate(self, evaluator: evaluators.Evaluator, step: int) -> None:
        self.check_finite()
        jax.block_until_ready(self.state)
        try:
            with self.chrono.paused(f"eval:{evaluator.name}"):
                result = evaluator(self.state)
        except DataError:
            self.save_progress(step)
            raise
        except Exception as e:  # noqa: BLE001 - any evaluator bug must not lose training
            self.save_progress(step)
            cause = " ".join(str(e).split())[:300] or type(e).__name__
            raise EvalFailed(
                f"evaluator {evaluator.name!r} failed at step {step} ({type(e).__name__}: "
                f"{cause}); training up to step {step} is committed in "
                f"{self.ckpts.path(self.last_saved)}; fix config.evals.{evaluator.name} and "
                "rerun to resume"
            ) from e
        self.results[evaluator.name] = result
        self.writer.write(step, evaluator.name, result)
        shown = " | ".join(
            f"{k} {100 * v:.2f}%" if k.startswith("top") else f"{k} {v:.4f}"
            for k, v in result.items()
            if k != "num_examples"
        )
        logging.info(
            "%s at step %d | %s (%d %s)",
            evaluator.name,
            step,
            shown,
            result["num_examples"],
            self.run.task.unit,
        )

    def preempt(self, step: int, signal_name: str | None) -> None:
        self.ckpts.wait()
        raise Preempted(
            f"preempted ({signal_name or 'preemption notice'}) at step {step}; checkpoint "
            f"{self.ckpts.path(step)} is committed; rerun the same command to resume"
        )

    def close(self) -> None:
        self.writer.close()


def _on_process_zero(fn, what: str):
    """Runs ``fn`` on process 0 only; every process raises if it failed there, so no
    process is left waiting in a collective for one that exited."""
    error = None
    if jax.process_index() == 0:
        try:
            fn()
        except UserError as e:
            error = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
        if failed and error is None:
            error = UserError(f"{what} failed on process 0 (see its error)")
    if error is not None:
        raise error


def _lr_jump(run: run_lib.Run, old: dict, step: int) -> str:
    """What the learning rate would do at ``step`` if the run's length changed."""
    previous = ml_collections.ConfigDict(run.config.to_dict())
    previous.num_train_steps = old.get("num_train_steps", previous.num_train_steps)
    previous.num_epochs = old.get("num_epochs", previous.num_epochs)
    old_total = run_lib.total_train_steps(previous, run.steps_per_epoch)
    old_lr = optim.make_schedule(previous, run.steps_per_epoch, old_total)(step)
    return (
        f"; at the resumed step {step} the {run.config.schedule} rate would jump from "
        f"{float(old_lr):.4g} to {float(run.schedule(step)):.4g}"
    )


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, mesh=None
) -> dict[str, float]:
    """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and
    returns the final metrics of the first evaluator (``eval`` by default).

    Raises UserError for a bad config, dataset or workdir (or a workdir another run
    holds, or a config change that would break the resumed run); Diverged when the
    loss or gradient norm becomes non-finite (nothing non-finite is saved); Preempted
    after committing a checkpoint when SIGTERM/SIGINT/SIGHUP arrives; StorageError
    when checkpoints cannot be written; DataError / EvalFailed after committing the
    progress when the data cannot be read or an evaluator fails.
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    # The config and the workdir are checked before ``build`` reads the dataset's
    # metadata, which loads TensorFlow (~3 CPU-seconds): bad input that needs no data
    # fails fast. A workdir created here is removed again if the data is refused.
    validate_config(config, device_count=mesh.devices.size)
    created = _prepare_workdir(workdir)
    try:
        run = run_lib.build(config, mesh)
    except UserError:
        _remove_if_empty(created)
        raise
    lock = workdir_lib.WorkdirLock(workdir)
    _on_process_zero(lock.acquire, "taking the workdir lock")
    try:
        return _train_locked(run, workdir)
    finally:
        lock.release()


def _train_locked(run: run_lib.Run, workdir: str) -> dict[str, float]:
    config = run.config
    ckpts = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
    final_path = workdir_lib.path(workdir) / "final_eval.json"
    try:
        latest = ckpts.latest_step()
        _on_process_zero(
            lambda: workdir_lib.record_config(
                workdir,
                config,
                resuming=latest is not None,
                describe_jump=lambda old: _lr_jump(run, old, latest),
            ),
            "checking the config against the workdir's",
        )
        state = ckpts.restore_latest(run.init_state())
        if state is None:
            state = run.init_state(warm_start=True)  # config.init_from's weights, if set
        else:
            logging.info("Resumed from %s at step %d.", ckpts.directory, int(state.step))
            if config.init_from:
                logging.info("config.init_from is not read: resuming this workdir wins.")
        if int(state.step) >= run.total_steps:
            logging.info(
                "Training already finished (step %d of %d); nothing to do.",
                int(state.step),
                run.total_steps,
            )
            if not final_path.exists():
                return {}
            return json.loads(final_path.read_text())
        logging.info(
            "Training %s (%s) on %s: %d steps (%d per epoch), global batch %d on %d devices.",
            config.model,
            run.task.name,
            config.dataset,
            run.total_steps,
            run.steps_per_epoch,
            config.batch_size,
            run.mesh.devices.size,
        )
        loop = Loop(run, workdir, ckpts, state)
        try:
            results = loop.train()
            ckpts.wait()
        finally:
            loop.close()
    finally:
        ckpts.close()
    final = results[loop.evaluators[0].name]
    if jax.process_index() == 0:
        workdir_lib.write_atomic(final_path, json.dumps(final))
    return final
