"""Platform-tuned XLA options, put into ``XLA_FLAGS`` before JAX starts a backend.

XLA reads ``XLA_FLAGS`` once, when the first backend starts, and aborts the process on
a flag its build does not know. So ``apply()`` (called by ``import cnn_arch``) runs
before any JAX computation, and sets only flags that a throwaway subprocess of the
same interpreter accepted; that verdict is cached per jaxlib version. A flag the user
already put in ``XLA_FLAGS`` is left as the user set it; ``CNN_ARCH_XLA_TUNING=0``
turns the tuning off. The flags only touch XLA's CPU compiler, so GPU and TPU runs
compile their device code exactly as before.

What the flags do and why is measured in ``experiments/speed.py`` (results in
``experiments/results/speed.md``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile

SWITCH = "CNN_ARCH_XLA_TUNING"

# Flag -> value, measured on jaxlib 0.10.2 on a Xeon with AVX-512 (experiments/speed.py).
# XLA:CPU hands dots, reductions and every convolution to YNNPACK by default. YNNPACK's
# weight-gradient convolutions ran 2-4x slower than XLA's own (Eigen) convolutions, so
# convolutions go back to XLA ('-individual_convolution'); elementwise fusions (BN,
# ReLU, residual adds) run faster in YNNPACK than in XLA's loop emitter ('+eltwise').
# Together: 1.3-1.5x on the ResNet train steps, same numerics to float32 rounding.
CPU_FLAGS: dict[str, str] = {
    "xla_cpu_experimental_ynn_fusion_type": "-individual_convolution,+eltwise",
}

_PROBE = "import jax; jax.jit(lambda x: x + 1)(1).block_until_ready()"
_status: dict[str, object] = {"state": "not applied yet", "flags": ""}


def enabled() -> bool:
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "false", "off", "no")


def parse_flags(xla_flags: str) -> dict[str, str]:
    """The flags an ``XLA_FLAGS`` string sets ('--a=1 --b' -> {'a': '1', 'b': ''}); the
    last one wins, as in XLA."""
    out = {}
    for token in shlex.split(xla_flags):
        if token.startswith("--"):
            name, _, value = token[2:].partition("=")
            out[name] = value
    return out


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except Exception:  # noqa: BLE001 - a JAX without this private helper: assume not
        return False


def _jaxlib_version() -> str:
    try:
        from jaxlib import version

        return version.__version__
    except Exception:  # noqa: BLE001
        return "unknown"


def _cache_path() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "cnn_arch", "xla_flags.json")


def _read_cache() -> dict:
    try:
        with open(_cache_path()) as f:
            cache = json.load(f)
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache: dict) -> None:
    path = _cache_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(cache, f, indent=1, sort_keys=True)
        os.replace(tmp, path)  # atomic: processes starting together never read half a file
    except OSError:
        pass  # an unwritable cache only means probing again next time


def accepted(flags: str) -> bool:
    """Whether this jaxlib starts a CPU backend and compiles with ``XLA_FLAGS=flags``
    (an unknown flag or value aborts the probe, not this process). Cached."""
    key = f"{_jaxlib_version()} {flags}"
    cache = _read_cache()
    if key in cache:
        return bool(cache[key])
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", SWITCH: "0"}
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired):
        return False  # not a verdict on the flags: do not cache
    ok = probe.returncode == 0
    cache[key] = ok
    _write_cache(cache)
    return ok


def plan(user_flags: str, *, on: bool, accept=None) -> tuple[str, str, str]:
    """What ``apply`` does with ``XLA_FLAGS=user_flags``: ``(new XLA_FLAGS, state, flags
    added)``. ``accept(flags) -> bool`` says whether this jaxlib takes the flags."""
    if not on:
        return user_flags, f"off ({SWITCH}=0)", ""
    taken = parse_flags(user_flags)
    wanted = {k: v for k, v in CPU_FLAGS.items() if k not in taken}
    if not wanted:
        if all(taken[k] == v for k, v in CPU_FLAGS.items()):  # e.g. inherited from a parent
            return user_flags, "on", " ".join(f"--{k}={v}" for k, v in CPU_FLAGS.items())
        return user_flags, "left to the user's XLA_FLAGS", ""
    ours = " ".join(f"--{k}={v}" for k, v in wanted.items())
    if not (accept or accepted)(ours):
        return user_flags, f"not applied: jaxlib {_jaxlib_version()} refuses {ours}", ""
    kept = sorted(set(CPU_FLAGS) - set(wanted))
    note = f" (the user's XLA_FLAGS set {', '.join(kept)})" if kept else ""
    return f"{user_flags} {ours}".strip(), f"on{note}", ours


def apply() -> None:
    """Adds the tuned CPU flags to ``XLA_FLAGS`` once per process (see the module
    docstring); ``describe()`` says what it did."""
    if _status["state"] != "not applied yet":
        return
    if enabled() and _backend_started():
        _status.update(state="not applied: the JAX backend had started before cnn_arch")
        return
    user = os.environ.get("XLA_FLAGS", "")
    new, state, added = plan(user, on=enabled())
    if new != user:
        os.environ["XLA_FLAGS"] = new
    _status.update(state=state, flags=added)


def describe() -> str:
    """One line: whether the tuning is on and which flags it added."""
    flags = _status["flags"]
    return f"{_status['state']}" + (f": {flags}" if flags else "")
