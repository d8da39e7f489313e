"""Train-step speed on this machine: cnn_arch with XLA's CPU defaults and with the tuned
flags (``cnn_arch.xla_tuning``), a bare JAX step, and PyTorch CPU on the same cores.

    python experiments/speed.py [--scale=full] [--rounds=4] [--seeds=0]

Workloads: ResNet-18 on 224x224 batch 32, ResNet-20 on CIFAR's 32x32 batch 128, LeNet-5
on 28x28 batch 128; a forward + backward + SGD-momentum step on synthetic data, fp32
unless marked. XLA reads XLA_FLAGS once per process, so each setting lives in its own
worker process, started the way a user starts one: ``import cnn_arch`` with the tuning on
(the default) or with ``CNN_ARCH_XLA_TUNING=0``. PyTorch runs in a third worker. Every
worker compiles (or builds) its variants and warms them up; then the variants take
turns: each round runs ``steps`` timed steps of every variant, in an order rotated each
round, each step blocked on, one worker busy at a time. Medians over all rounds. On a
shared machine this alternation is what makes the ratios (tuned/default, ours/bare,
ours/PyTorch) comparable; absolute img/s move with the load, which is recorded.

PyTorch's OpenMP threads spin-wait by default; on an oversubscribed machine that makes
every op wait for a descheduled thread (LeNet-5 ran >10x slower). Its worker therefore
runs with OMP_WAIT_POLICY=PASSIVE, PyTorch's best here; ``--torch_spin`` adds a worker
with OpenMP's default policy.

Writes ``speed.json`` (every step time), ``speed.md`` (the table, command, machine,
load) and ``speed.png`` (img/s relative to PyTorch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere

import _runs  # noqa: E402

MACHINE = "2-core Xeon CPU (AVX-512/AMX), shared"

# name -> (model, image side, batch, timed steps per variant per round) per scale.
WORKLOADS = {
    "full": {
        "ResNet-18 (224, b32)": ("resnet18", 224, 32, 2),
        "ResNet-20 CIFAR (32, b128)": ("resnet20", 32, 128, 3),
        "LeNet-5 (28, b128)": ("lenet5", 28, 128, 25),
    },
    "small": {
        "ResNet-20 CIFAR (32, b32)": ("resnet20", 32, 32, 2),
        "LeNet-5 (28, b128)": ("lenet5", 28, 128, 10),
    },
}

# worker -> extra environment. Workers inherit the rest of this process's environment.
WORKERS = {
    "xla_default": {"CNN_ARCH_XLA_TUNING": "0"},
    "xla_tuned": {"CNN_ARCH_XLA_TUNING": "1"},
    "torch": {"OMP_WAIT_POLICY": "PASSIVE"},
}
TORCH_SPIN = {"torch_spin": {"OMP_WAIT_POLICY": "ACTIVE"}}
REFERENCE_VARIANTS = ("PyTorch", "PyTorch channels_last")  # fp32; the faster one is the bar
WARMUP_STEPS = 2


def cpu_time() -> float:
    """CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def host_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# -- the workers (each its own process) -----------------------------------------------


def xla_variants(tuned: bool, model: str, side: int, batch: int, seed: int) -> dict:
    """name -> (step closure, info): cnn_arch's train step (fp32; bf16 and the bare step
    too when tuned), each closure advancing its own state."""
    from cnn_arch import benchmark, models, schema

    shape = (side, side, models.spec(model).input_shape[2])
    label = "tuned" if tuned else "XLA default"
    variants = {}
    for half in (False, True) if tuned else (False,):
        config = schema.default_config()
        config.update(
            model=model,
            batch_size=batch,
            half_precision=half,
            num_classes=benchmark.default_num_classes(model),
            num_train_steps=100_000,
            seed=seed,
            learning_rate=0.01,
        )
        run = benchmark.synthetic_run(config, shape)
        data = benchmark.synthetic_batch(run, batch, seed=seed)
        ours = benchmark.compile_step(run.jit_train_step(), run.init_state(), data)
        name = f"cnn_arch {label}" + (" bf16" if half else "")
        variants[name] = _jax_stepper(ours, run.init_state(), data, with_metrics=True)
        if tuned and not half:
            bare_jit, bare_init = benchmark.bare_train_step(run)
            state = bare_init(run.init_state())
            bare = benchmark.compile_step(bare_jit, state, data)
            variants["bare JAX step, tuned"] = _jax_stepper(bare, state, data, with_metrics=False)
    return variants


def _jax_stepper(compiled, state, data, *, with_metrics: bool):
    import jax

    holder = [state]

    def step():
        out = compiled.fn(holder[0], data)
        holder[0] = out[0] if with_metrics else out
        jax.block_until_ready(out)

    info = {"compile_seconds": compiled.compile_seconds, "xla_flops_per_step": compiled.flops}
    return step, info


def torch_variants(model: str, side: int, batch: int, seed: int, spin: bool) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(host_cores())
    torch.manual_seed(seed)
    kinds = [("channels_last", torch.channels_last, False)]
    if not spin:
        kinds = [
            ("", torch.contiguous_format, False),
            ("channels_last", torch.channels_last, False),
            ("bf16 autocast channels_last", torch.channels_last, True),
        ]
    channels = 1 if model == "lenet5" else 3
    classes = 1000 if model == "resnet18" else 10
    variants = {}
    for label, memory_format, bf16 in kinds:
        net = torch_model(model).to(memory_format=memory_format).train()
        x = torch.randn(batch, channels, side, side).to(memory_format=memory_format)
        y = torch.randint(0, classes, (batch,))
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

        def step(net=net, x=x, y=y, opt=opt, bf16=bf16):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(net(x).float(), y)
            loss.backward()
            opt.step()

        name = " ".join(filter(None, ["PyTorch", label, "(OpenMP spin-wait)" if spin else ""]))
        variants[name] = (step, {"compile_seconds": None, "xla_flops_per_step": None})
    return variants


def torch_model(model: str):
    import torch.nn as nn
    import torch.nn.functional as F
    import torchvision

    if model == "resnet18":
        return torchvision.models.resnet18(num_classes=1000)

    class Block(nn.Module):
        """He et al. 2016 Sec. 4.2 basic block with the option-A (zero-padded) shortcut."""

        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.stride, self.extra = stride, cout - cin

        def forward(self, x):
            out = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            short = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
            if self.extra:
                half = self.extra // 2
                short = F.pad(short, (0, 0, 0, 0, half, self.extra - half))
            return F.relu(out + short)

    class ResNet20(nn.Module):
        """3 stages of 3 blocks, 16/32/64 channels, for 32x32 images."""

        def __init__(self):
            super().__init__()
            self.stem, self.bn = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
            blocks, cin = [], 16
            for i, cout in enumerate((16, 32, 64)):
                for j in range(3):
                    blocks.append(Block(cin, cout, 2 if i and not j else 1))
                    cin = cout
            self.blocks, self.fc = nn.Sequential(*blocks), nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(self.blocks(F.relu(self.bn(self.stem(x)))).mean((2, 3)))

    class LeNet5(nn.Module):
        """cnn_arch's lenet5: edge-pad to 32, conv 6@5x5, avgpool, conv 16@5x5, avgpool, FCs."""

        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
            self.f1, self.f2, self.f3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

        def forward(self, x):
            x = F.pad(x, (2, 2, 2, 2), mode="replicate")
            x = F.avg_pool2d(F.relu(self.c1(x)), 2)
            x = F.avg_pool2d(F.relu(self.c2(x)), 2)
            return self.f3(F.relu(self.f2(F.relu(self.f1(x.flatten(1))))))

    return {"resnet20": ResNet20, "lenet5": LeNet5}[model]()


def worker(kind: str) -> None:
    """Answers one JSON command per stdin line: build, run, quit."""
    if kind.startswith("torch"):
        import torch  # before anything else might load TensorFlow or JAX
    else:
        import jax

        import cnn_arch  # applies (or, with CNN_ARCH_XLA_TUNING=0, skips) the tuning

        jax.devices()  # start the backend now, with the XLA_FLAGS just set
    variants: dict = {}
    out = sys.stdout
    sys.stdout = sys.stderr  # only replies go to the pipe
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "build":
            args = (cmd["model"], cmd["side"], cmd["batch"], cmd["seed"])
            if kind.startswith("torch"):
                variants = torch_variants(*args, spin=kind == "torch_spin")
                about = {"torch": torch.__version__, "threads": torch.get_num_threads()}
            else:
                variants = xla_variants(kind == "xla_tuned", *args)
                about = {
                    "jax": jax.__version__,
                    "xla_tuning": cnn_arch.xla_tuning.describe(),
                    "xla_flags": os.environ.get("XLA_FLAGS", ""),
                }
            for step, _ in variants.values():
                for _ in range(WARMUP_STEPS):
                    step()
            reply = {"variants": {n: info for n, (_, info) in variants.items()}, "about": about}
        elif cmd["cmd"] == "run":
            step = variants[cmd["variant"]][0]
            seconds, cpu_seconds = [], []
            for _ in range(cmd["steps"]):
                t0, c0 = time.perf_counter(), cpu_time()
                step()
                seconds.append(time.perf_counter() - t0)
                cpu_seconds.append(cpu_time() - c0)
            reply = {"seconds": seconds, "cpu_seconds": cpu_seconds}
        else:
            return
        out.write(json.dumps(reply) + "\n")
        out.flush()


class Worker:
    """A worker process and its command pipe."""

    def __init__(self, kind: str, env: dict[str, str]):
        self.kind = kind
        self.proc = subprocess.Popen(
            [sys.executable, __file__, f"--worker={kind}"],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"error: worker {self.kind} died (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


# -- the experiment -------------------------------------------------------------------


def measure(workers: list[Worker], model, side, batch, steps, rounds, seed) -> tuple:
    """Step seconds per variant and what each worker said about itself."""
    owner, infos, about = {}, {}, {}
    for w in workers:
        reply = w.ask(cmd="build", model=model, side=side, batch=batch, seed=seed)
        about[w.kind] = reply["about"]
        for name, info in reply["variants"].items():
            owner[name], infos[name] = w, info
    names = list(owner)
    seconds = {n: {"wall": [], "cpu": []} for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            reply = owner[name].ask(cmd="run", variant=name, steps=steps)
            seconds[name]["wall"] += reply["seconds"]
            seconds[name]["cpu"] += reply["cpu_seconds"]
    return seconds, infos, about


def summarize(seconds: dict, infos: dict, batch: int) -> dict:
    out = {}
    for name, s in seconds.items():
        median, cpu = statistics.median(s["wall"]), statistics.median(s["cpu"])
        out[name] = {
            "ms_per_step": 1e3 * median,
            "images_per_sec": batch / median,
            "cpu_ms_per_step": 1e3 * cpu,
            "images_per_cpu_second": batch / cpu,
            **infos[name],
            "step_seconds": s["wall"],
            "step_cpu_seconds": s["cpu"],
        }
    for key, suffix in (("images_per_sec", ""), ("images_per_cpu_second", "_cpu")):
        reference = max(out[n][key] for n in REFERENCE_VARIANTS)
        default = out["cnn_arch XLA default"][key]
        for v in out.values():
            v[f"vs_pytorch{suffix}"] = v[key] / reference
            v[f"vs_xla_default{suffix}"] = v[key] / default
    return out


def write_outputs(results: dict, out_dir: Path, command: str, wall: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out_dir / "speed.json").write_text(json.dumps(results, indent=1))
    lines = [
        "# Train-step speed: XLA defaults vs tuned, bare JAX step, PyTorch CPU",
        "",
        f"Command: `{command}` ({wall / 60:.1f} min). Machine: {MACHINE}; "
        f"{results['threads']} threads for XLA and PyTorch; jax/jaxlib {results['jax']}, "
        f"torch {results['torch']}; seeds {results['seeds']}.",
        "",
        f"Tuned = `XLA_FLAGS={results['tuned_flags']}`, set by `import cnn_arch` (see "
        "`cnn_arch/xla_tuning.py`); XLA default = `CNN_ARCH_XLA_TUNING=0`. Each setting "
        "and PyTorch (OMP_WAIT_POLICY=PASSIVE) ran in its own worker process; the variants "
        f"took turns ({results['rounds']} rounds, rotated order, one worker busy at a "
        "time). img/s = batch / median step. Synthetic data, SGD with momentum 0.9, fp32 "
        "unless marked. 'vs PyTorch' divides by the faster fp32 PyTorch layout (NCHW or "
        "channels_last).",
        "",
        "Two measures: wall-clock img/s (what a user sees, moved by the machine's other "
        "load) and images per CPU-second of the worker process (all its threads; barely "
        "moved by other processes, so the steadier ratio on a shared machine).",
        "",
        "| workload | variant | img/s | ms/step | vs PyTorch | vs XLA default | img/CPU-s |"
        " vs PyTorch (CPU-s) | vs XLA default (CPU-s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for workload, w in results["workloads"].items():
        for name, v in w["variants"].items():
            lines.append(
                f"| {workload} | {name} | {v['images_per_sec']:.1f} | {v['ms_per_step']:.1f} | "
                f"{v['vs_pytorch']:.2f} | {v['vs_xla_default']:.2f} | "
                f"{v['images_per_cpu_second']:.1f} | {v['vs_pytorch_cpu']:.2f} | "
                f"{v['vs_xla_default_cpu']:.2f} |"
            )
    lines += ["", "Per workload:", ""]
    for workload, w in results["workloads"].items():
        lines.append(
            f"- {workload}: tuned / XLA default {w['tuned_over_default']:.2f}x (CPU-s "
            f"{w['tuned_over_default_cpu']:.2f}x); cnn_arch / bare step (both tuned) "
            f"{w['ours_over_bare']:.3f} (CPU-s {w['ours_over_bare_cpu']:.3f}); tuned / "
            f"PyTorch {w['tuned_over_pytorch']:.2f} (CPU-s {w['tuned_over_pytorch_cpu']:.2f}); "
            f"bf16 / fp32 (tuned) {w['bf16_over_fp32']:.2f}; "
            f"XLA flops per image {w['xla_flops_per_image'] / 1e9:.3f} G; load average "
            f"(1 min) {w['load_before'][0]:.1f} before, {w['load_after'][0]:.1f} after"
        )
    (out_dir / "speed.md").write_text("\n".join(lines) + "\n")

    n = len(results["workloads"])
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4), squeeze=False)
    for ax, (workload, w) in zip(axes[0], results["workloads"].items(), strict=True):
        names = list(w["variants"])
        values = [w["variants"][k]["vs_pytorch"] for k in names]
        colors = ["tab:orange" if k.startswith("PyTorch") else "tab:blue" for k in names]
        ax.barh(names, values, color=colors)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_title(workload, fontsize=10)
        ax.set_xlabel("img/s relative to PyTorch fp32 (faster layout)")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "speed.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default=str(ROOT / "experiments" / "results"))
    parser.add_argument("--scale", choices=sorted(WORKLOADS), default="full")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seeds", default="0", help="seeds of the data and init (comma list)")
    parser.add_argument("--workloads", default="", help="comma list of models to keep")
    parser.add_argument("--torch_spin", action="store_true", help="add PyTorch, OpenMP spin")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds={args.seeds!r}: a comma-separated list of integers")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if "xla_cpu_experimental_ynn_fusion_type" in os.environ.get("XLA_FLAGS", ""):
        parser.error("XLA_FLAGS already sets the YNNPACK fusion types; unset it for this script")
    workloads = {
        k: v
        for k, v in WORKLOADS[args.scale].items()
        if not args.workloads or v[0] in args.workloads.split(",")
    }
    if not workloads:
        parser.error(f"--workloads={args.workloads!r} keeps none of {list(WORKLOADS[args.scale])}")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    kinds = {**WORKERS, **(TORCH_SPIN if args.torch_spin else {})}
    workers = [Worker(kind, env) for kind, env in kinds.items()]
    results = {"machine": MACHINE, "platform": platform.platform(), "threads": host_cores()}
    results.update(seeds=seeds, rounds=args.rounds * len(seeds), workloads={})
    try:
        for workload, (model, side, batch, steps) in workloads.items():
            load_before = list(os.getloadavg())
            seconds, infos = {}, {}
            for seed in seeds:
                s, i, about = measure(workers, model, side, batch, steps, args.rounds, seed)
                for name in s:
                    both = seconds.setdefault(name, {"wall": [], "cpu": []})
                    both["wall"] += s[name]["wall"]
                    both["cpu"] += s[name]["cpu"]
                infos.update(i)
            v = summarize(seconds, infos, batch)
            tuned = v["cnn_arch tuned"]
            results["workloads"][workload] = {
                "model": model,
                "image_side": side,
                "batch": batch,
                "steps_per_round": steps,
                "load_before": load_before,
                "load_after": list(os.getloadavg()),
                "workers": about,
                "variants": v,
                "tuned_over_default": tuned["vs_xla_default"],
                "tuned_over_default_cpu": tuned["vs_xla_default_cpu"],
                "ours_over_bare": tuned["images_per_sec"]
                / v["bare JAX step, tuned"]["images_per_sec"],
                "ours_over_bare_cpu": tuned["images_per_cpu_second"]
                / v["bare JAX step, tuned"]["images_per_cpu_second"],
                "tuned_over_pytorch": tuned["vs_pytorch"],
                "tuned_over_pytorch_cpu": tuned["vs_pytorch_cpu"],
                "bf16_over_fp32": v["cnn_arch tuned bf16"]["images_per_sec"]
                / tuned["images_per_sec"],
                "xla_flops_per_image": tuned["xla_flops_per_step"] / batch,
            }
            print(
                f"{workload}: " + ", ".join(f"{n} {x['images_per_sec']:.1f}" for n, x in v.items())
            )
    finally:
        for w in workers:
            w.close()
    results["jax"] = about["xla_tuned"]["jax"]
    results["torch"] = about["torch"]["torch"]
    results["tuned_flags"] = about["xla_tuned"]["xla_flags"]
    command = " ".join(["python experiments/speed.py", *sys.argv[1:]])
    write_outputs(results, out_dir, command, time.perf_counter() - start)
    print(f"wrote {out_dir}/speed.{{json,md,png}}")


if __name__ == "__main__":
    _runs.run_main(main)
