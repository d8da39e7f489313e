"""Host memory over a long training run: does the CLI's resident memory keep growing?

Runs ``python -m cnn_arch.main`` in a subprocess (the BN paper's MNIST setup: the
3x100 sigmoid MLP, mini-batches of 60, Sec. 4.1) and samples the resident set size
(VmRSS from /proc, the process and all its descendants) every few seconds, next to the
last training step the run has logged ('step N/...' lines). Writes a Markdown table
(time, step, RSS) and the growth from the first sample after the warm-up step to the
last one, plus a least-squares slope in MiB per 1000 steps over the same samples.

    python experiments/memory_soak.py                       # 20,000 steps, ~ minutes
    python experiments/memory_soak.py --num_train_steps 3000 --output /tmp/soak.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _runs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "tensorflow_datasets"
DEFAULT_OUTPUT = ROOT / "experiments" / "results" / "memory_soak.md"
STEP_LINE = re.compile(r"\bstep (\d+)/(\d+)\b")
MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Sample:
    seconds: float  # since the subprocess started
    step: int  # last step the run had logged by then (0 = none yet)
    rss_bytes: int  # VmRSS of the process tree

    @property
    def rss_mib(self) -> float:
        return self.rss_bytes / MIB


@dataclasses.dataclass
class SoakResult:
    command: list[str]
    samples: list[Sample]
    returncode: int
    output_tail: list[str]
    warmup_step: int
    total_steps: int
    settled_step: int | None = None  # first logged step after the first eval and checkpoint

    def after_warmup(self, from_step: int | None = None) -> list[Sample]:
        from_step = self.warmup_step if from_step is None else from_step
        return [s for s in self.samples if s.step >= from_step]

    def growth_mib(self, from_step: int | None = None) -> float:
        """RSS of the last sample minus the first sample at or after ``from_step``
        (default: the warm-up step)."""
        window = self.after_warmup(from_step)
        if len(window) < 2:
            raise ValueError(
                f"only {len(window)} samples after step {from_step or self.warmup_step}: "
                "sample more often"
            )
        return window[-1].rss_mib - window[0].rss_mib

    def slope_mib_per_1000_steps(self) -> float | None:
        """Least-squares slope of RSS against step over the post-warm-up samples."""
        window = self.after_warmup()
        steps = [s.step for s in window]
        if len(set(steps)) < 2:
            return None
        mean_x = sum(steps) / len(steps)
        mean_y = sum(s.rss_mib for s in window) / len(window)
        sxy = sum((s.step - mean_x) * (s.rss_mib - mean_y) for s in window)
        sxx = sum((x - mean_x) ** 2 for x in steps)
        return 1000 * sxy / sxx


def _rss_bytes(pid: int) -> int:
    """VmRSS of one process in bytes; 0 when it is gone (or a zombie without memory)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _children_map() -> dict[int, list[int]]:
    """parent pid -> child pids, from /proc/<pid>/stat (field 4 after the command)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree_rss_bytes(pid: int) -> int:
    """VmRSS summed over ``pid`` and all its descendants."""
    children = _children_map()
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += _rss_bytes(p)
        todo.extend(children.get(p, ()))
    return total


def training_command(
    workdir: str,
    *,
    data_dir: str,
    num_train_steps: int,
    log_every_steps: int,
    steps_per_eval: int,
    checkpoint_every_steps: int,
    batch_size: int = 60,
) -> list[str]:
    """The CLI invocation: MLP on MNIST with the BN paper's batch of 60."""
    overrides = {
        "model": "mlp",
        "dataset": "mnist",
        "data_dir": data_dir,
        "batch_size": batch_size,
        "num_train_steps": num_train_steps,
        "log_every_steps": log_every_steps,
        "steps_per_eval": steps_per_eval,
        "checkpoint_every_steps": checkpoint_every_steps,
    }
    return [
        sys.executable,
        "-m",
        "cnn_arch.main",
        "--config=configs/base.py",
        f"--workdir={workdir}",
        *(f"--config.{k}={v}" for k, v in overrides.items()),
    ]


def run_soak(
    command: list[str],
    *,
    total_steps: int,
    warmup_step: int = 1000,
    settled_step: int | None = None,
    interval: float = 2.0,
    echo: bool = True,
) -> SoakResult:
    """Runs ``command`` (from the project root) and samples its tree's RSS every ``interval`` s."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    t0 = time.monotonic()
    last_step = 0
    tail: list[str] = []

    def read_output() -> None:
        nonlocal last_step
        for line in proc.stdout:
            tail.append(line.rstrip())
            del tail[:-40]
            match = STEP_LINE.search(line)
            if match:
                last_step = int(match.group(1))

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    samples: list[Sample] = []
    try:
        while proc.poll() is None:
            rss = tree_rss_bytes(proc.pid)
            if rss and proc.poll() is None:
                sample = Sample(time.monotonic() - t0, last_step, rss)
                samples.append(sample)
                if echo:
                    print(
                        f"{sample.seconds:7.1f} s  step {sample.step:6d}  "
                        f"RSS {sample.rss_mib:8.1f} MiB",
                        flush=True,
                    )
            time.sleep(interval)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait()
        reader.join(timeout=10)
    return SoakResult(
        command, samples, proc.returncode, tail, warmup_step, total_steps, settled_step
    )


def markdown(result: SoakResult, title: str = "Host memory soak") -> str:
    """The report: setup, the samples table, and the growth after warm-up."""
    shown = [
        shlex.quote(a.replace(str(ROOT) + os.sep, "")) for a in result.command[1:]
    ]  # relative paths where possible
    lines = [
        f"# {title}",
        "",
        f"Written by `experiments/memory_soak.py` on {datetime.date.today().isoformat()} "
        f"({platform.machine()}, {os.cpu_count()} CPUs visible, Python "
        f"{platform.python_version()}, shared machine).",
        "",
        "Command (run from the project root, RSS of the process and its children sampled "
        "from `/proc/<pid>/status` VmRSS; 'step' is the last `step N/...` line logged "
        "before the sample):",
        "",
        "```",
        "python " + " ".join(shown),
        "```",
        "",
        f"Exit status: {result.returncode}.",
        "",
    ]
    window = result.after_warmup()
    if len(window) >= 2:
        slope = result.slope_mib_per_1000_steps()
        peak = max(result.samples, key=lambda s: s.rss_bytes)
        lines += [
            "## Summary",
            "",
            f"- First sample at or after step {result.warmup_step}: "
            f"{window[0].rss_mib:.1f} MiB at {window[0].seconds:.0f} s (step {window[0].step}).",
            f"- Last sample: {window[-1].rss_mib:.1f} MiB at {window[-1].seconds:.0f} s "
            f"(step {window[-1].step}).",
            f"- **Growth after warm-up: {result.growth_mib():+.1f} MiB** over "
            f"{window[-1].step - window[0].step} steps"
            + (f"; least-squares slope {slope:+.2f} MiB per 1000 steps." if slope else "."),
            f"- Peak: {peak.rss_mib:.1f} MiB at {peak.seconds:.0f} s (step {peak.step}).",
        ]
        settled = result.after_warmup(result.settled_step) if result.settled_step else []
        if len(settled) >= 2:
            lines.append(
                f"- From the first logged step after the first evaluation and checkpoint, "
                f"step {settled[0].step} ({settled[0].rss_mib:.1f} MiB), to the end: "
                f"**{result.growth_mib(result.settled_step):+.1f} MiB** over "
                f"{settled[-1].step - settled[0].step} steps."
            )
        lines.append("")
    lines += ["## Samples", "", "| time (s) | step | RSS (MiB) |", "|---:|---:|---:|"]
    lines += [f"| {s.seconds:.1f} | {s.step} | {s.rss_mib:.1f} |" for s in result.samples]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_train_steps", type=int, default=20_000)
    parser.add_argument("--log_every_steps", type=int, default=1000)
    parser.add_argument("--steps_per_eval", type=int, default=5000)
    parser.add_argument("--checkpoint_every_steps", type=int, default=5000)
    parser.add_argument("--warmup_step", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    parser.add_argument(
        "--data_dir", default=os.environ.get("TFDS_DATA_DIR") or str(DEFAULT_DATA_DIR)
    )
    parser.add_argument("--workdir", default="", help="default: a fresh temporary folder")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="memory_soak_") as tmp:
        workdir = args.workdir or os.path.join(tmp, "run")
        command = training_command(
            workdir,
            data_dir=args.data_dir,
            num_train_steps=args.num_train_steps,
            log_every_steps=args.log_every_steps,
            steps_per_eval=args.steps_per_eval,
            checkpoint_every_steps=args.checkpoint_every_steps,
        )
        print("running:", shlex.join(command), flush=True)
        result = run_soak(
            command,
            total_steps=args.num_train_steps,
            warmup_step=args.warmup_step,
            # one-time costs come with the first eval and checkpoint; the next log line is after
            settled_step=max(args.steps_per_eval, args.checkpoint_every_steps)
            + args.log_every_steps,
            interval=args.interval,
        )
    if result.returncode != 0:
        print("\n".join(result.output_tail), file=sys.stderr)
        print(f"training exited with status {result.returncode}", file=sys.stderr)
    report = markdown(result)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(report)
    if len(result.after_warmup()) >= 2:
        print(f"growth after step {result.warmup_step}: {result.growth_mib():+.1f} MiB")
    if len(result.after_warmup(result.settled_step)) >= 2:
        growth = result.growth_mib(result.settled_step)
        print(f"growth after step {result.settled_step}: {growth:+.1f} MiB")
    print(f"wrote {args.output}")
    return result.returncode


if __name__ == "__main__":
    _runs.run_main(main)
