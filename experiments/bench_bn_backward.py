"""Benchmark: BN forward+backward with autodiff vs the paper's hand-derived backward pass.

Times one jitted training-mode step (forward, running-stat update, gradients w.r.t.
gamma, beta and the input) of ``cnn_arch.norm.BatchNorm`` with ``backward='autodiff'``
and ``backward='manual'`` (the custom_vjp of Sec. 3), plus ``flax.linen.BatchNorm`` as a
reference, on a conv-shaped input, all in the same process: compile time, then the
median (and min) of N timed runs after warm-up, interleaved round-robin so that a
shared machine's changing load affects every implementation alike.

    python experiments/bench_bn_backward.py                      # 256x32x32x64 float32
    python experiments/bench_bn_backward.py --shape 64,56,56,256 --runs 20 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

import _runs  # noqa: E402

from cnn_arch.norm import BatchNorm  # noqa: E402


def make_step(module: nn.Module):
    """jit(forward + backward): value, new batch_stats and grads w.r.t. (params, x)."""

    def loss(params, batch_stats, x, w):
        y, upd = module.apply(
            {"params": params, "batch_stats": batch_stats},
            x,
            use_running_average=False,
            mutable=["batch_stats"],
        )
        return jnp.sum(y.astype(jnp.float32) * w), upd["batch_stats"]

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 2), has_aux=True))


def compile_step(module: nn.Module, x: jax.Array, w: jax.Array):
    """(compiled step, its arguments, compile seconds)."""
    variables = module.init(jax.random.key(0), x[:2], use_running_average=False)
    args = (variables["params"], variables["batch_stats"], x, w)
    t0 = time.perf_counter()
    compiled = make_step(module).lower(*args).compile()
    return compiled, args, time.perf_counter() - t0


def bench(impls: dict[str, nn.Module], x, w, runs: int, warmup: int) -> dict[str, dict]:
    """Compiles every implementation, then times them round-robin (one run each per round),
    so a change in machine load hits all of them alike."""
    steps = {name: compile_step(m, x, w) for name, m in impls.items()}
    for compiled, args, _ in steps.values():
        for _ in range(warmup):
            jax.block_until_ready(compiled(*args))
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(runs):
        for name, (compiled, args, _) in steps.items():
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times[name].append(time.perf_counter() - t0)
    return {
        name: {
            "compile_s": steps[name][2],
            "median_s": statistics.median(t),
            "min_s": min(t),
        }
        for name, t in times.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="256,32,32,64", help="N,H,W,C of the input")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--runs", type=int, default=10, help="timed runs (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-flax", action="store_true", help="skip the flax reference")
    args = parser.parse_args(argv)

    shape = tuple(int(s) for s in args.shape.split(","))
    dtype = jnp.dtype(args.dtype)
    kx, kw = jax.random.split(jax.random.key(42))
    x = (2.0 * jax.random.normal(kx, shape) + 1.0).astype(dtype)
    w = jax.random.normal(kw, shape)

    impls = {
        "autodiff": BatchNorm(momentum=0.9, dtype=dtype, backward="autodiff"),
        "manual": BatchNorm(momentum=0.9, dtype=dtype, backward="manual"),
    }
    if not args.no_flax:
        impls["flax.linen.BatchNorm"] = nn.BatchNorm(momentum=0.9, dtype=dtype)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"BN fwd+bwd  input {'x'.join(map(str, shape))} {args.dtype}  "
        f"device {jax.devices()[0].device_kind} x{jax.device_count()}  "
        f"jax {jax.__version__}  runs {args.runs} (warm-up {args.warmup})  "
        f"cpu load avg {load:.1f}"
    )
    results = bench(impls, x, w, args.runs, args.warmup)
    base = results["autodiff"]["median_s"]
    print(f"{'backward':<22} {'compile s':>10} {'median ms':>10} {'min ms':>9} {'vs autodiff':>12}")
    for name, r in results.items():
        print(
            f"{name:<22} {r['compile_s']:>10.3f} {1e3 * r['median_s']:>10.2f} "
            f"{1e3 * r['min_s']:>9.2f} {r['median_s'] / base:>11.3f}x"
        )
    ratio = results["manual"]["median_s"] / base
    print(f"manual / autodiff median time ratio: {ratio:.3f}")


if __name__ == "__main__":
    _runs.run_main(main)
