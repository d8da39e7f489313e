"""``python -m cnn_arch.benchmark``: it runs, its figures agree with each other and with
the model's own arithmetic, bad flags are one error line; the XLA tuning sets only
flags this jaxlib accepts, and never over the user's. No timing is asserted."""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys

import jax
import pytest

from cnn_arch import benchmark, schema, xla_tuning

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

# LeNet-5's multiply-adds per image (28x28 digits padded to 32x32): conv1 28*28*6*25,
# conv2 10*10*16*150, then the 400-120-84-10 dense layers.
LENET5_MACS = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 400 * 120 + 120 * 84 + 84 * 10


def _lenet_config(batch: int):
    c = schema.default_config()
    c.update(model="lenet5", batch_size=batch, num_classes=10, num_train_steps=1000)
    return c


def test_figures_agree_with_each_other_and_the_model():
    batch, steps = 16, 3
    f = benchmark.benchmark(
        _lenet_config(batch), (28, 28, 1), num_steps=steps, compare_bare=True, eval_step=True
    )
    for name in ("train", "bare", "eval"):
        g = f[name]
        assert len(g["seconds"]) == steps
        median = statistics.median(g["seconds"])
        assert g["images_per_sec"] == pytest.approx(batch / median)
        assert g["ms_per_step"] == pytest.approx(1e3 * median)
        assert g["ms_per_step_min"] <= g["ms_per_step"] <= g["ms_per_step_max"]
        cpu = statistics.median(g["cpu_seconds"])
        assert g["images_per_cpu_second"] == pytest.approx(batch / cpu)
        assert g["achieved_flops_per_sec_per_device"] == pytest.approx(
            g["flops_per_step_per_device"] / median
        )
        assert g["memory_bytes"]["argument"] > 0
    # XLA's count of the forward pass is the network's arithmetic (plus ReLUs, pooling,
    # biases: a few percent); a train step is about three forward passes.
    forward = 2 * LENET5_MACS * batch
    assert f["eval"]["flops_per_step_per_device"] == pytest.approx(forward, rel=0.1)
    assert 2.5 * forward < f["train"]["flops_per_step_per_device"] < 3.5 * forward
    assert f["bare"]["flops_per_step_per_device"] == pytest.approx(
        f["train"]["flops_per_step_per_device"], rel=0.01
    )
    assert f["ratio_ours_over_bare"] == pytest.approx(
        f["train"]["images_per_sec"] / f["bare"]["images_per_sec"]
    )
    assert f["cpu_ratio_ours_over_bare"] == pytest.approx(
        f["train"]["images_per_cpu_second"] / f["bare"]["images_per_cpu_second"]
    )
    assert f["num_devices"] == jax.device_count()
    if f["peak_flops_per_device"] is None:  # the CPU: no MFU
        assert f["train"]["mfu"] is None


def test_peak_flops_table():
    assert benchmark.peak_flops("NVIDIA H100 80GB HBM3", True) == 989e12
    assert benchmark.peak_flops("NVIDIA H100 PCIe", False) == 51.2e12
    assert benchmark.peak_flops("NVIDIA A100-SXM4-80GB", True) == 312e12
    assert benchmark.peak_flops("TPU v5 lite", True) == 197e12
    assert benchmark.peak_flops("cpu", False) is None


def test_command_prints_the_figures_it_writes(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnn_arch.benchmark",
            "--model=lenet5",
            "--batch_size=16",
            "--steps=2",
            f"--json={out}",
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    f = json.loads(out.read_text())
    assert float(lines["train img/s"]) == pytest.approx(f["train"]["images_per_sec"], abs=0.01)
    assert float(lines["train XLA flops/step/device"]) == pytest.approx(
        f["train"]["flops_per_step_per_device"], rel=1e-3
    )
    assert lines["train MFU"].startswith("unknown")  # no peak flop/s for a CPU
    assert lines["xla tuning"] == xla_tuning.describe()
    assert f["batch_size"] == 16 and f["image_shape"] == [28, 28, 1]


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--model=no_such_net"], "no_such_net"),
        (["--model=lenet5", "--steps=0"], "--steps=0"),
        (["--model=lenet5", "--batch_size=many"], "batch_size"),
        (["--model=lenet5", "--no_such_flag"], "no_such_flag"),
        (["--model=lenet5", "--json=/no/such/folder/f.json"], "/no/such/folder"),
        (["--input_pipeline", "--model=lenet5"], "--config"),
        ([], "--model"),
    ],
)
def test_bad_flags_are_one_error_line(flags, says, capsys):
    assert benchmark.main(["benchmark", *flags]) == 2
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], err
    assert not out


# -- the XLA tuning ---------------------------------------------------------------------


def test_plan_never_overrides_the_user():
    ours = " ".join(f"--{k}={v}" for k, v in xla_tuning.CPU_FLAGS.items())
    yes, no = (lambda flags: True), (lambda flags: False)
    user = "--xla_force_host_platform_device_count=8"
    assert xla_tuning.plan(user, on=True, accept=yes) == (f"{user} {ours}", "on", ours)
    assert xla_tuning.plan(user, on=False, accept=yes)[0] == user
    assert xla_tuning.plan(user, on=True, accept=no)[0] == user
    users_own = " ".join(f"--{k}=dot" for k in xla_tuning.CPU_FLAGS)
    flags, state, added = xla_tuning.plan(users_own, on=True, accept=yes)
    assert (flags, added) == (users_own, "") and "user" in state
    # a child process inheriting a tuned parent's XLA_FLAGS is tuned, not overridden
    assert xla_tuning.plan(f"{user} {ours}", on=True, accept=no) == (f"{user} {ours}", "on", ours)


def test_unknown_flags_are_refused_by_a_probe_not_by_this_process(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert not xla_tuning.accepted("--xla_cpu_no_such_flag_in_any_jaxlib=1")
    ours = " ".join(f"--{k}={v}" for k, v in xla_tuning.CPU_FLAGS.items())
    assert xla_tuning.accepted(ours)  # this jaxlib (0.10.2 here) knows them
    cache = json.loads((tmp_path / "cnn_arch" / "xla_flags.json").read_text())
    assert sorted(cache.values()) == [False, True]  # both verdicts cached per jaxlib


@pytest.mark.parametrize("switch", ["1", "0"])
def test_import_sets_the_flags_after_the_users_own(switch):
    user = "--xla_force_host_platform_device_count=2"
    code = "import os, cnn_arch; print(os.environ['XLA_FLAGS'])"
    env = {**ENV, "XLA_FLAGS": user, xla_tuning.SWITCH: switch}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out.startswith(user)
    assert (out != user) == (switch == "1")


def test_tuning_reaches_the_compiler():
    """With the tuning on, XLA runs convolutions itself (by default jaxlib 0.10.2 hands
    them to YNNPACK, whose weight gradients were 2-4x slower here)."""
    if not xla_tuning.describe().startswith("on"):
        pytest.skip(f"the tuning is {xla_tuning.describe()}")
    x, w = jax.numpy.ones((8, 16, 16, 64)), jax.numpy.ones((3, 3, 64, 64))

    def loss(w):
        dims = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dims).sum()

    hlo = jax.jit(jax.grad(loss)).lower(w).compile().as_text()
    entry = hlo[hlo.index("ENTRY") :]
    assert " convolution(" in entry  # not wrapped in a __ynn_fusion


def test_a_synthetic_run_loads_no_tensorflow():
    """The benchmark's synthetic data needs no input pipeline, so TensorFlow stays out of
    the process (it costs ~3 CPU-seconds to import and its threads compete with XLA's)."""
    snippet = (
        "import sys\n"
        "from cnn_arch import benchmark, schema\n"
        "c = schema.default_config()\n"
        "c.update(model='lenet5', batch_size=8, num_classes=10)\n"
        "run = benchmark.synthetic_run(c, (28, 28, 1))\n"
        "benchmark.synthetic_batch(run, 8)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('tensorflow')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=pathlib.Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert proc.stdout.strip().splitlines()[-1] == "[]"
