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


def _distil_args(setup: Path, out: str, steps: int) -> list[str]:
    # batches of 1-2 items: with 2 ranks some batches have one item, so rank 1 also runs stand-in shares
    args = ["run_distill.py", "--config", "configs/distill/distilhubert.yaml", "--teacher", str(setup / "teacher"),
            "--data", str(setup / "audio"), "--output", str(setup / out), "--max-steps", str(steps)]
    for o in ["run.data.max_batch_seconds=3.0", "run.data.max_item_seconds=1.5", "run.data.min_batch_items=1",
              "run.threads=1", "run.log_every=1", "run.optim.lr=2e-3", "run.device=cpu"]:
        args += ["-o", o]
    return args


def test_two_nodes_distil_as_one_process(tmp_path):
    """``torchrun --nnodes 2 --node-rank 0/1 --nproc-per-node 1`` with a c10d rendezvous on 127.0.0.1: the loss
    curve of one process (within the DDP test's tolerance), the student written once, by the first node."""
    import json

    import pytest

    import run_distill
    from tests.fixtures.upstreams import write_teacher_and_audio

    setup = write_teacher_and_audio(tmp_path)
    steps = 4
    assert run_distill.main(_distil_args(setup, "single", steps)[1:]) == 0
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    port = free_port()
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
         "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
         "--rdzv-id", "two-nodes", *_distil_args(setup, "two", steps)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in (0, 1)]
    results = [node.communicate(timeout=240) for node in nodes]
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(err[-2000:] for _, err in results)

    def history(name: str) -> list[dict]:
        return [json.loads(line) for line in (setup / name / "loss_history.jsonl").read_text().splitlines()]

    single, two = history("single"), history("two")
    assert [r["step"] for r in two] == [r["step"] for r in single] == list(range(1, steps + 1))
    for a, b in zip(single, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    assert json.loads((setup / "two" / "distill_summary.json").read_text())["steps"] == steps
    assert json.loads((setup / "two" / "distill_config.yaml").read_text().split("world_size: ")[1][0]) == 2
