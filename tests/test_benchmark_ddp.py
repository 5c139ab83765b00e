"""torchrun run_benchmark.py: 2 gloo CPU processes train one head with DDP. Rows are written once, the features are
extracted by both ranks (each its share), and the result equals 1 process at the same global batch."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import torch

from benchmark.engine import RunOptions, run_task
from common.checkpoint import load_checkpoint
from tests.fixtures.datasets import write_speech_commands
from tests.fixtures.ports import free_port
from tests.fixtures.upstreams import tiny_config
from upstream.checkpoints import save_upstream
from upstream.hubert import HubertModel, HubertUpstream

ROOT = Path(__file__).resolve().parents[1]
# batches of 1 s of 0.3 s tones: 3 utterances, split 2 + 1 over the ranks (the uneven case of the loss weighting)
COMMON = ["batch.max_seconds=1.0", "train.eval_every=4", "train.log_every=1", "optimizer.lr=1e-2"]
STEPS = 8


def rows(results_dir: Path) -> list[dict]:
    with open(results_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_two_processes_write_once_and_match_one_process(tmp_path):
    write_speech_commands(tmp_path / "data", per_word=4)
    torch.manual_seed(0)
    save_upstream(HubertUpstream(HubertModel(tiny_config())), tmp_path / "upstream")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each DDP rank below: another thread count rounds differently (seen: 9.5e-5)
    try:
        single = run_task(RunOptions(upstream=str(tmp_path / "upstream"), task="ks", data_root=tmp_path / "data",
                                     results_dir=tmp_path / "one", cache_dir=tmp_path / "cache_one",
                                     max_steps=STEPS, device="cpu", overrides=COMMON))
    finally:
        torch.set_num_threads(threads)

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), "run_benchmark.py", "--upstream", str(tmp_path / "upstream"), "--task", "ks",
           "--data-root", str(tmp_path / "data"), "--results-dir", str(tmp_path / "two"), "--cache-dir",
           str(tmp_path / "cache_two"), "--max-steps", str(STEPS), "--device", "cpu", "--threads", "1"]
    for o in COMMON:
        cmd += ["-o", o]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):  # each rank extracted its share of the cache
        line = next(l for l in result.stderr.splitlines() if f"rank {rank} of 2: extracted" in l)
        assert int(line.split("extracted ")[1].split()[0]) > 0, line
    assert result.stdout.count("ks test:") == 1  # rank 0 alone reports

    one, two = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert len(two) == len(one) > 0  # one row per (split, metric), written once
    key = lambda r: (r["split"], r["metric"])  # noqa: E731
    for a, b in zip(sorted(one, key=key), sorted(two, key=key)):
        assert key(a) == key(b) and abs(float(a["value"]) - float(b["value"])) < 1e-6, (a, b)
        assert a["steps"] == b["steps"] == str(STEPS)
    run_one, run_two = Path(single["run_dir"]), tmp_path / "two" / "upstream" / "ks" / Path(single["run_dir"]).name
    w1 = load_checkpoint(run_one / "checkpoints" / "last.pt")["model"]
    w2 = load_checkpoint(run_two / "checkpoints" / "last.pt")["model"]
    for k in w1:  # the same global-batch gradients: the same weights, up to float rounding
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-5)
    assert (run_two / "DONE").is_file() and (run_two / "predictions" / "test.jsonl").is_file()
