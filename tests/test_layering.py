"""Layering: each package imports only the floors below it (checked in a fresh interpreter per case).

common/ ← upstream/, downstream/ ← tasks/ ← benchmark/ ; common/ ← synth/ ; common/, upstream/ ← training/ ←
distill/, pretrain/. Tasks never load the engine, the corpus builder loads no task, pretraining does not import
distillation, and fixtures register nothing on import.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TASK_MODULES = """
import importlib, pkgutil, tasks
for info in pkgutil.walk_packages(tasks.__path__, "tasks."):
    if not info.name.startswith("tasks.synth"):  # the ``python -m tasks.synth`` alias of the corpus builder
        importlib.import_module(info.name)
"""
# (code run in a fresh interpreter, packages it must not load)
CASES = {
    "tasks": ("import tasks.base\n" + TASK_MODULES, ("benchmark", "run_benchmark", "synth")),
    "synth_and_training": ("import synth.build, synth.__main__, training.loop, training.cli, common.utterance, "
                           "common.datasets, common.tensors",
                           ("tasks", "benchmark", "distill", "pretrain", "downstream")),
    "pretrain": ("import pretrain.config, pretrain.objective, pretrain.front_end_warmup, run_pretrain", ("distill",)),
    "distill": ("import distill.objectives, run_distill", ("pretrain", "benchmark", "tasks")),
    "benchmark_cli": ("import benchmark.workers, benchmark.cli, tests.fixtures.upstreams, tests.fixtures.datasets\n"
                      "from upstream import list_upstreams\nassert 'tiny_frames' not in list_upstreams()",
                      ("run_benchmark",)),
}


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[str]]:
    """Module names in ``sys.modules`` after each case's code, each in a fresh interpreter (run side by side)."""
    probe = "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    procs = {name: subprocess.Popen([sys.executable, "-c", code + probe], cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name, (code, _) in CASES.items()}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-2000:]
        out[name] = json.loads(stdout.strip().splitlines()[-1])
    return out


def under(modules: list[str], *packages: str) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


@pytest.mark.parametrize("case", list(CASES))
def test_a_layer_loads_nothing_above_it(loaded, case):
    assert under(loaded[case], *CASES[case][1]) == []
