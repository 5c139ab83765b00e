"""``run_benchmark.py`` command lines run inside long-lived worker processes (``scripts/demo.py`` uses them).

A fresh process per run spent ~6 s importing torch (and torch._dynamo, which the optimizer pulls in) before any
work, and the demo makes 40 runs. A worker imports once and then runs ``benchmark.cli.main(argv)`` for each job,
with stdout, stderr and log records going to that job's log file. Runs share nothing else: every run builds its
upstream, task and seeds from its own arguments (as ``run_benchmark.py --task a b`` already does in one process).
This module imports nothing heavy itself, so the parent process stays light.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _CurrentStderr(logging.StreamHandler):
    """A log handler that writes to whatever ``sys.stderr`` is at the time (each job redirects it to its log)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns one; the current sys.stderr wins
        pass


def setup_worker() -> None:
    """Process-pool initializer: run from the repository root and import the benchmark once."""
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    # before benchmark.cli.main's own basicConfig, which then keeps this handler
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", handlers=[_CurrentStderr()])
    import benchmark.cli  # noqa: F401


def run_in_worker(argv: list[str], log: str) -> int:
    """``run_benchmark.py argv`` with its output written to ``log``; returns the exit status it would have."""
    from benchmark import cli

    with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        print("$ " + " ".join([sys.executable, "run_benchmark.py", *argv]), flush=True)
        try:
            return int(cli.main(argv) or 0)
        except SystemExit as e:  # argparse errors exit 2
            return e.code if isinstance(e.code, int) else 1
        except Exception:
            traceback.print_exc()
            return 1
