"""Runs across machines, tried on one: two torchrun "nodes" on 127.0.0.1 (``--nnodes 2 --node-rank 0/1
--nproc-per-node 1``, c10d rendezvous), and a process group that cannot form."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures.ports import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_a_process_group_that_cannot_form_is_one_line_and_exit_2(tmp_path):
    """Rank 0 of 2 whose peer never comes: after run.dist_timeout_minutes, one ``error:`` line, exit 2, nothing
    written."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", WORLD_SIZE="2", RANK="0", LOCAL_RANK="0",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    cmd = [sys.executable, "run_distill.py", "--config", "configs/distill/distilhubert_mini.yaml",
           "--teacher", "hubert_mini", "--data", str(tmp_path), "--output", str(tmp_path / "out"),
           "-o", "run.dist_timeout_minutes=0.05", "-o", "run.device=cpu"]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "rank 0 of 2" in lines[0] and "127.0.0.1" in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
