"""experiments/_runs.py, the experiments' shared runner: a worker outlives no experiment."""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import ROOT

# An experiment whose process dies while its pool's worker is still busy.
DYING_EXPERIMENT = """
import concurrent.futures, multiprocessing, os, signal, sys, time
sys.path.insert(0, {experiments!r})
import _runs

def busy(marker):
    def on_term(*_):
        open(marker, "w").write(str(os.getpid()))
        os._exit(4)
    signal.signal(signal.SIGTERM, on_term)
    time.sleep(120)

if __name__ == "__main__":
    pool = concurrent.futures.ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_runs._stop_with_parent,
        initargs=(os.getpid(), 0.2),
    )
    pool.submit(busy, sys.argv[1])
    time.sleep(3)
    os._exit(0)  # killed, as far as the worker can tell
"""


def test_a_worker_is_terminated_when_the_experiment_dies(tmp_path):
    script, marker = tmp_path / "experiment.py", tmp_path / "terminated"
    script.write_text(DYING_EXPERIMENT.format(experiments=str(ROOT / "experiments")))
    subprocess.run([sys.executable, str(script), str(marker)], check=True, timeout=120)
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the orphaned worker was not sent SIGTERM"


def test_run_main_imports_no_cnn_arch_and_reports_user_errors():
    """``import cnn_arch`` sets XLA flags and loads JAX: a script's __main__ wrapper must
    leave that to the script (speed.py's workers each choose their own flags)."""
    snippet = (
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'experiments')!r})\n"
        "import _runs\n"
        "def main():\n"
        "    print(sorted(m for m in sys.modules if m.startswith('cnn_arch')))\n"
        "    from cnn_arch.errors import UserError\n"
        "    raise UserError('--x=1: bad')\n"
        "_runs.run_main(main)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", snippet], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.strip() == "[]"
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: --x=1: bad"
