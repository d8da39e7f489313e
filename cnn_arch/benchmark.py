"""``python -m cnn_arch.benchmark``: how fast the training step runs, and what it costs.

Times the very jitted train step that training uses (``Run.jit_train_step()``) on
synthetic data, over all local devices, and prints one figure per line: img/s (the
median of ``--steps`` timed steps after warm-up, each blocked on), ms/step, compile
seconds, XLA flops per step, the compiled executable's temp/argument memory, peak
device memory where the backend reports it, and MFU where the device's peak is known.

``--compare_bare`` times a bare jitted forward + backward + SGD step of the same model
in alternation with ours (same process, same data) and prints the throughput ratio,
so machine noise hits both alike. ``--eval`` times the jitted eval step too.
``--input_pipeline --config=FILE`` times the training input pipeline alone.

    python -m cnn_arch.benchmark --model=resnet18 --batch_size=32 --compare_bare
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only feeds data here

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cnn_arch import (  # noqa: E402
    data,
    models,
    optim,
    parallel,
    schema,
    steps,
    tasks,
    xla_tuning,
)
from cnn_arch import run as run_lib  # noqa: E402
from cnn_arch.errors import UserError  # noqa: E402
from cnn_arch.evaluators.base import jit_eval_step  # noqa: E402
from cnn_arch.validate import validate_config  # noqa: E402

# Dense peak flop/s per device (vendor datasheets). 'bf16' is the tensor-core / MXU
# rate; 'fp32' the rate for float32 compute (TPUs run float32 matmuls as bf16 passes at
# JAX's default precision, so their bf16 rate is the fair denominator for both).
# Order matters: the first key contained in ``device_kind`` wins.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"bf16": 756e12, "fp32": 51.2e12},
    "H100 NVL": {"bf16": 835e12, "fp32": 60.0e12},
    "H100": {"bf16": 989e12, "fp32": 66.9e12},  # SXM
    "H200": {"bf16": 989e12, "fp32": 66.9e12},
    "A100": {"bf16": 312e12, "fp32": 19.5e12},
    "TPU v4": {"bf16": 275e12, "fp32": 275e12},
    "TPU v5 lite": {"bf16": 197e12, "fp32": 197e12},  # v5e
    "TPU v5e": {"bf16": 197e12, "fp32": 197e12},
    "TPU v5p": {"bf16": 459e12, "fp32": 459e12},
    "TPU v5": {"bf16": 459e12, "fp32": 459e12},  # v5p reports itself as 'TPU v5'
}

WARMUP_STEPS = 2


def peak_flops(device_kind: str, half_precision: bool) -> float | None:
    """Peak dense flop/s of one device of ``device_kind``, or None when not tabled."""
    for key, peaks in PEAK_FLOPS.items():
        if key.lower() in device_kind.lower():
            return peaks["bf16" if half_precision else "fp32"]
    return None


# -- the run, on synthetic data -------------------------------------------------------


def default_num_classes(model: str) -> int:
    """ImageNet's 1000 classes for models designed for large images, else 10."""
    return 1000 if models.spec(model).input_shape[0] >= 96 else 10


def synthetic_run(
    config: ml_collections.ConfigDict, image_shape: tuple[int, int, int], mesh=None
) -> run_lib.Run:
    """``run.build(config)`` with a synthetic dataset of ``image_shape`` images and
    ``config.num_classes`` classes in place of ``config.dataset`` (nothing is read)."""
    mesh = parallel.make_mesh() if mesh is None else mesh
    validate_config(config, device_count=mesh.devices.size)
    task = tasks.create(run_lib.task_name(config), config)
    steps_per_epoch = 1000  # only shapes the LR schedule, which costs the same at any step
    total_steps = run_lib.total_train_steps(config, steps_per_epoch)
    info = data.DataInfo(
        name="synthetic",
        task=task.data_kind,
        num_classes=config.num_classes,
        image_shape=tuple(image_shape),
        num_train=steps_per_epoch * config.batch_size,
        num_eval=config.batch_size,
        label_shape=tuple(image_shape[:2]) if task.data_kind == "segmentation" else (),
    )
    dtype = jnp.bfloat16 if config.half_precision else jnp.float32
    model = models.create(
        config.model, num_classes=info.num_classes, dtype=dtype, **config.model_kwargs
    )
    schedule = optim.make_schedule(config, steps_per_epoch, total_steps)
    tx = optim.make_optimizer(config, schedule)
    return run_lib.Run(config, mesh, info, model, task, schedule, tx, steps_per_epoch, total_steps)


def synthetic_batch(run: run_lib.Run, batch_size: int, *, seed: int = 0) -> dict[str, jax.Array]:
    """A global batch of random images and labels (and an all-ones eval mask), sharded
    over the mesh like the real input pipeline's batches."""
    rng = np.random.default_rng(seed + jax.process_index())
    local = batch_size // jax.process_count()
    info = run.info
    label_shape = (local, *info.image_shape[:2]) if info.task == "segmentation" else (local,)
    batch = {
        "image": rng.standard_normal((local, *info.image_shape), dtype=np.float32),
        "label": rng.integers(0, info.num_classes, label_shape, dtype=np.int32),
        "mask": np.ones((local,), np.float32),
    }
    return parallel.global_batch(run.mesh, batch)


def bare_train_step(run: run_lib.Run):
    """The smallest honest train step of ``run.model``: forward in training mode, softmax
    cross-entropy, backward, SGD with momentum, new BN statistics; nothing else. Jitted
    with the same shardings and donation as ``Run.jit_train_step()``. State is
    ``(params, batch_stats, opt_state)``."""
    config, model = run.config, run.model
    tx = optax.sgd(config.learning_rate, momentum=config.momentum or None)

    def step(state, batch):
        params, batch_stats, opt_state = state

        def loss_fn(params):
            out, new_vars = model.apply(
                {"params": params, "batch_stats": batch_stats},
                batch["image"],
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": jax.random.PRNGKey(0)},
            )
            out = out[0] if isinstance(out, tuple) else out  # auxiliary heads: main only
            labels = batch["label"]
            if out.ndim == 4:  # segmentation: per-pixel, labels cropped to the output
                h0 = (labels.shape[1] - out.shape[1]) // 2
                w0 = (labels.shape[2] - out.shape[2]) // 2
                labels = labels[:, h0 : h0 + out.shape[1], w0 : w0 + out.shape[2]]
            ce = optax.softmax_cross_entropy_with_integer_labels(out.astype(jnp.float32), labels)
            return ce.mean(), new_vars.get("batch_stats", {})

        grads, new_stats = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state

    replicated, batched = parallel.replicated(run.mesh), parallel.batch_sharding(run.mesh)
    init = jax.jit(lambda s: (s.params, s.batch_stats, tx.init(s.params)))
    jitted = jax.jit(
        step, in_shardings=(replicated, batched), out_shardings=replicated, donate_argnums=0
    )
    return jitted, init


# -- measuring ------------------------------------------------------------------------


@dataclasses.dataclass
class Compiled:
    """A compiled step and what XLA says about it."""

    fn: Callable
    compile_seconds: float
    flops: float | None  # per step, per device (the partitioned module's cost analysis)
    memory: dict[str, int]


def compile_step(jitted, *args) -> Compiled:
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    seconds = time.perf_counter() - t0
    return Compiled(compiled, seconds, _flops(compiled), _memory(compiled))


def _flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if isinstance(cost, list | tuple):  # older JAX: one dict per partition
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops >= 0 else None


def _memory(compiled) -> dict[str, int]:
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        return {}
    if stats is None:
        return {}
    names = ("temp", "argument", "output", "alias", "generated_code")
    return {
        n: int(getattr(stats, f"{n}_size_in_bytes"))
        for n in names
        if getattr(stats, f"{n}_size_in_bytes", None) is not None
    }


def process_cpu_seconds() -> float:
    """CPU seconds of this process, all threads (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_alternating(
    workloads: dict[str, Callable[[], Any]], steps: int, warmup: int = WARMUP_STEPS
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU seconds of each call of each workload, blocked on its
    result. The workloads take turns step by step, so a burst of load on a shared machine
    hits them all alike; CPU seconds barely move with other processes' load at all."""
    for fn in workloads.values():
        for _ in range(warmup):
            jax.block_until_ready(fn())
    wall: dict[str, list[float]] = {name: [] for name in workloads}
    cpu: dict[str, list[float]] = {name: [] for name in workloads}
    for _ in range(steps):
        for name, fn in workloads.items():
            t0, c0 = time.perf_counter(), process_cpu_seconds()
            jax.block_until_ready(fn())
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(process_cpu_seconds() - c0)
    return wall, cpu


def peak_device_memory() -> int | None:
    """The largest peak_bytes_in_use over the local devices, if the backend reports it."""
    peaks = []
    for device in jax.local_devices():
        try:
            stats = device.memory_stats()
        except Exception:  # noqa: BLE001
            stats = None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


def _timing(seconds: list[float], cpu_seconds: list[float], batch_size: int) -> dict:
    median, cpu = statistics.median(seconds), statistics.median(cpu_seconds)
    return {
        "ms_per_step": 1e3 * median,
        "ms_per_step_min": 1e3 * min(seconds),
        "ms_per_step_max": 1e3 * max(seconds),
        "images_per_sec": batch_size / median,
        "cpu_ms_per_step": 1e3 * cpu,
        "images_per_cpu_second": batch_size / cpu if cpu > 0 else None,
    }


def benchmark(
    config: ml_collections.ConfigDict,
    image_shape: tuple[int, int, int],
    *,
    num_steps: int,
    compare_bare: bool = False,
    eval_step: bool = False,
    warmup: int = WARMUP_STEPS,
) -> dict[str, Any]:
    """Every figure of one benchmark, as a dict (what ``--json`` writes)."""
    run = synthetic_run(config, image_shape)
    batch_size = config.batch_size
    batch = synthetic_batch(run, batch_size, seed=config.seed)
    devices = jax.local_devices()
    figures: dict[str, Any] = {
        "model": config.model,
        "dtype": "bfloat16" if config.half_precision else "float32",
        "batch_size": batch_size,
        "image_shape": list(image_shape),
        "num_classes": run.info.num_classes,
        "optimizer": config.optimizer,
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "num_devices": jax.device_count(),
        "steps": num_steps,
        "warmup_steps": warmup,
        "jax": jax.__version__,
        "xla_tuning": xla_tuning.describe(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average_before": list(os.getloadavg()),
    }

    state = run.init_state()  # each variant gets a copy: our step donates its state

    def fresh():
        return jax.tree.map(jnp.copy, state)

    ours = compile_step(run.jit_train_step(), state, batch)
    holder = {"ours": fresh()}

    def our_step():
        holder["ours"], metrics = ours.fn(holder["ours"], batch)
        return metrics

    workloads: dict[str, Callable[[], Any]] = {"train": our_step}
    compiled = {"train": ours}
    if compare_bare:
        bare_jit, bare_init = bare_train_step(run)
        holder["bare"] = bare_init(fresh())
        bare = compile_step(bare_jit, holder["bare"], batch)

        def bare_step():
            holder["bare"] = bare.fn(holder["bare"], batch)
            return holder["bare"][0]

        workloads["bare"] = bare_step
        compiled["bare"] = bare
    if eval_step:
        variables = fresh().variables
        evaluate = compile_step(jit_eval_step(run, steps.inference(run.model)), variables, batch)
        workloads["eval"] = lambda: evaluate.fn(variables, batch)
        compiled["eval"] = evaluate

    seconds, cpu_seconds = time_alternating(workloads, num_steps, warmup)
    peak = peak_flops(devices[0].device_kind, config.half_precision)
    for name, c in compiled.items():
        timing = _timing(seconds[name], cpu_seconds[name], batch_size)
        per_step = timing["ms_per_step"] / 1e3
        achieved = c.flops / per_step if c.flops else None  # per device
        figures[name] = {
            **timing,
            "compile_seconds": c.compile_seconds,
            "flops_per_step_per_device": c.flops,
            "achieved_flops_per_sec_per_device": achieved,
            "mfu": achieved / peak if achieved and peak else None,
            "memory_bytes": c.memory,
            "seconds": seconds[name],
            "cpu_seconds": cpu_seconds[name],
        }
    figures["peak_flops_per_device"] = peak
    figures["peak_device_memory_bytes"] = peak_device_memory()
    if compare_bare:
        ours, bare = figures["train"], figures["bare"]
        figures["ratio_ours_over_bare"] = ours["images_per_sec"] / bare["images_per_sec"]
        if ours["images_per_cpu_second"] and bare["images_per_cpu_second"]:
            figures["cpu_ratio_ours_over_bare"] = (
                ours["images_per_cpu_second"] / bare["images_per_cpu_second"]
            )
    figures["load_average_after"] = list(os.getloadavg())
    return figures


# -- printing -------------------------------------------------------------------------


def _mib(n: int | None) -> str:
    return "not reported" if n is None else f"{n / 2**20:.1f} MiB"


def format_figures(f: dict[str, Any]) -> list[str]:
    """One line per figure."""
    h, w, c = f["image_shape"]
    lines = [
        f"model: {f['model']} ({f['dtype']}), global batch {f['batch_size']} of {h}x{w}x{c}, "
        f"{f['num_devices']} {f['platform']} device(s) ({f['device_kind']})",
        f"xla tuning: {f['xla_tuning']}",
        f"load average: {f['load_average_before'][0]:.1f} before, "
        f"{f['load_average_after'][0]:.1f} after ({os.cpu_count()} cpus)",
    ]
    for name in ("train", "bare", "eval"):
        if name not in f:
            continue
        g = f[name]
        lines += [
            f"{name} img/s: {g['images_per_sec']:.2f}",
            f"{name} ms/step: {g['ms_per_step']:.2f} (median of {f['steps']}; "
            f"min {g['ms_per_step_min']:.2f}, max {g['ms_per_step_max']:.2f})",
            f"{name} compile s: {g['compile_seconds']:.2f}",
        ]
        if g["images_per_cpu_second"]:
            lines.append(
                f"{name} img per CPU-second: {g['images_per_cpu_second']:.2f} "
                f"({g['cpu_ms_per_step']:.2f} CPU-ms/step, all threads)"
            )
        if g["flops_per_step_per_device"]:
            lines += [
                f"{name} XLA flops/step/device: {g['flops_per_step_per_device']:.4g}",
                f"{name} achieved flop/s/device: {g['achieved_flops_per_sec_per_device']:.4g}",
            ]
        else:
            lines.append(f"{name} XLA flops/step/device: not reported")
        mem = g["memory_bytes"]
        lines.append(
            f"{name} temp memory: {_mib(mem.get('temp'))}; argument memory: "
            f"{_mib(mem.get('argument'))}"
        )
        if g["mfu"] is not None:
            lines.append(f"{name} MFU: {100 * g['mfu']:.1f}%")
        else:
            lines.append(f"{name} MFU: unknown (no peak flop/s tabled for {f['device_kind']})")
    lines.append(f"peak device memory: {_mib(f['peak_device_memory_bytes'])}")
    if f["dtype"] == "bfloat16" and f["platform"] == "cpu":
        lines.append(
            "note: bfloat16 is not faster than float32 on XLA:CPU: it computes bf16 dots and "
            "convolutions in float32 and leaves AMX unused (measured with jaxlib 0.10.2; "
            "experiments/results/speed.md)"
        )
    if "ratio_ours_over_bare" in f:
        lines.append(f"ratio ours/bare (img/s): {f['ratio_ours_over_bare']:.3f}")
    if "cpu_ratio_ours_over_bare" in f:
        lines.append(f"ratio ours/bare (img per CPU-second): {f['cpu_ratio_ours_over_bare']:.3f}")
    return lines


def format_input_figures(f: dict[str, Any]) -> list[str]:
    return [
        f"input pipeline: {f['dataset']} ({f['train_pp']}), batch {f['batch_size']}, "
        f"{f['steps']} batches",
        f"input img/s: {f['images_per_sec']:.1f}",
        f"input img/s per host core: {f['images_per_sec_per_core']:.1f} ({f['host_cores']} cores)",
        f"input img per CPU-second: {f['images_per_cpu_second']:.1f}",
    ]


# -- the command ----------------------------------------------------------------------


def _flag_values() -> flags.FlagValues:
    """The command's flags, in their own FlagValues: importing this module (or running
    the command in-process, as the tests do) leaves absl's global flags alone."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Optional config file: optimizer, model options (and data, for --input_pipeline); "
        "--model/--batch_size/... override it.",
        flag_values=fv,
    )
    for define, name, default, help_text in (
        (flags.DEFINE_string, "model", None, "A name from cnn_arch.models.names()."),
        (flags.DEFINE_integer, "batch_size", None, "Global batch (default: the config's)."),
        (flags.DEFINE_integer, "image_size", None, "Image side (default: the model's own)."),
        (flags.DEFINE_integer, "num_classes", None, "Default: 1000 for ImageNet models, else 10."),
        (flags.DEFINE_boolean, "half_precision", None, "bfloat16 compute."),
        (flags.DEFINE_integer, "steps", 10, "Timed steps (after warm-up)."),
        (flags.DEFINE_boolean, "compare_bare", False, "Also time a bare step; print the ratio."),
        (flags.DEFINE_boolean, "eval", False, "Also time the jitted eval step."),
        (flags.DEFINE_string, "json", None, "Write every figure to this JSON file."),
        (flags.DEFINE_boolean, "input_pipeline", False, "Time --config's input pipeline alone."),
    ):
        define(name, default, help_text, flag_values=fv)
    return fv


def _config_from_flags(fv: flags.FlagValues) -> ml_collections.ConfigDict:
    if fv.config is not None:
        try:
            config = fv.config
            config.keys()  # a file that failed to load raises only when first used
        except Exception as e:  # noqa: BLE001 - config files are user code
            raise UserError(f"cannot load --config: {' '.join(str(e).split())}") from None
        config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy
    else:
        config = schema.default_config()
    for key in ("model", "batch_size", "half_precision"):
        if fv[key].value is not None:
            config[key] = fv[key].value
    return config


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise UserError(f"--{name}={value}: it must be > 0")


def main(argv: list[str]) -> int:
    """Runs the command on ``argv`` (``argv[0]`` is the program); returns the exit
    status. A bad flag or value is one 'error:' line and status 2, before compiling."""
    fv = _flag_values()
    try:
        rest = fv(argv)
    except Exception as e:  # noqa: BLE001 - absl's and config files' errors alike
        print(f"error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        return 2
    try:
        if len(rest) > 1:
            raise UserError(f"unexpected arguments {rest[1:]}")
        figures, lines = _run(fv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print("\n".join(lines), flush=True)
    if fv.json:
        with open(fv.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


def _run(fv: flags.FlagValues) -> tuple[dict[str, Any], list[str]]:
    for name in ("batch_size", "image_size", "steps", "num_classes"):
        _check_positive(name, fv[name].value)
    if fv.json and not os.path.isdir(os.path.dirname(os.path.abspath(fv.json))):
        raise UserError(f"--json={fv.json}: its folder does not exist")
    config = _config_from_flags(fv)
    if fv.input_pipeline:
        if fv.config is None:
            raise UserError("--input_pipeline needs --config=FILE naming the dataset to read")
        if fv.compare_bare or fv.eval:
            raise UserError("--input_pipeline times the data alone: drop --compare_bare/--eval")
        figures = data.benchmark_input(config, steps=fv.steps)
        return figures, format_input_figures(figures)
    if fv.config is None and fv.model is None:
        raise UserError("--model is required (or a --config naming one)")
    if config.model not in models.names():
        raise UserError(
            f"--model={config.model!r} is not known; choose one of {', '.join(models.names())}"
        )
    spec = models.spec(config.model)
    side = fv.image_size
    image_shape = (side, side, spec.input_shape[2]) if side else spec.input_shape
    config.num_classes = fv.num_classes or (
        config.num_classes if config.num_classes > 0 else default_num_classes(config.model)
    )
    # Long enough that the LR schedule never runs out during the timed steps.
    config.num_train_steps = max(config.num_train_steps, fv.steps + 10 * WARMUP_STEPS)
    figures = benchmark(
        config, image_shape, num_steps=fv.steps, compare_bare=fv.compare_bare, eval_step=fv.eval
    )
    return figures, format_figures(figures)


if __name__ == "__main__":
    logging.set_verbosity(logging.WARNING)  # the figures are printed; JAX's INFO is noise
    sys.exit(main(sys.argv))
