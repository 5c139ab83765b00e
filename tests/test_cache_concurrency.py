"""Issue 29 items 4-5: runs sharing a feature cache never delete each other's entries and never extract one twice;
two torchrun "nodes" on 127.0.0.1, each with its own cache folder, each extract what their ranks read and give the
one-process results."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.cache import FeatureCache, claim, weights_hash
from benchmark.engine import RunOptions, run_task
from tasks.registry import build_task
from tests.fixtures.datasets import write_fsc, write_speech_commands
from tests.fixtures.ports import free_port
from tests.fixtures.upstreams import TinyFrameUpstream, tiny_config
from upstream.checkpoints import save_upstream
from upstream.hubert import HubertModel, HubertUpstream

ROOT = Path(__file__).resolve().parents[1]

WRITER = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from benchmark.cache import FeatureCache, weights_hash
from tasks.registry import build_task
from tests.fixtures.upstreams import TinyFrameUpstream

class Slow(TinyFrameUpstream):  # long enough per batch for the two processes to interleave
    def extract(self, wavs):
        time.sleep(0.2)
        return super().extract(wavs)

data, cache_dir, go, out = map(Path, sys.argv[1:5])
utts = build_task("ic", data).load_split("train")
up = Slow().eval()
cache = FeatureCache(cache_dir, weights_hash(TinyFrameUpstream().eval()))
out.with_suffix(".ready").touch()
while not go.exists():
    time.sleep(0.01)
done = cache.ensure(utts, up, max_seconds=0.7)
inodes = {u.id: cache.path(u).stat().st_ino for u in utts}
sums = {u.id: float(np.asarray(cache.load(u), dtype=np.float64).sum()) for u in utts}
out.write_text(json.dumps({"done": done, "inodes": inodes, "sums": sums}))
"""


def test_two_processes_sharing_entries_extract_each_once_and_delete_none(tmp_path):
    write_fsc(tmp_path / "data", per_split=6)
    n = len(build_task("ic", tmp_path / "data").load_split("train"))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "data"), str(tmp_path / "cache"),
                               str(tmp_path / "go"), str(tmp_path / f"out{i}.json")], cwd=ROOT, env=env,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.time() + 120
    while not all((tmp_path / f"out{i}.ready").exists() for i in range(2)) and time.time() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()  # both start together, on the same entries in the same order
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()[-3000:]
    outs = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    assert outs[0]["done"] + outs[1]["done"] == n  # each entry extracted once
    assert outs[0]["done"] > 0 and outs[1]["done"] > 0  # and they did interleave
    assert outs[0]["inodes"] == outs[1]["inodes"]  # no entry deleted or rewritten under the other
    assert outs[0]["sums"] == outs[1]["sums"]


def test_an_entry_being_written_is_waited_for_not_deleted_or_extracted_again(tmp_path):
    """The in-flight case deterministically: another writer holds the entry's lock; ensure() extracts the rest,
    waits for that one and keeps what the other wrote."""
    write_fsc(tmp_path / "data")
    utts = build_task("ic", tmp_path / "data").load_split("train")
    up = TinyFrameUpstream().eval()
    cache = FeatureCache(tmp_path / "cache", weights_hash(up))
    target = cache.path(utts[0])
    marker = np.full((2, 3, 4), 7, dtype=np.float16)
    holding = threading.Event()

    def other_writer():
        with claim(target, wait=False) as got:
            assert got
            holding.set()
            time.sleep(0.5)
            FeatureCache(tmp_path / "cache", weights_hash(up)).save(utts[0], marker)

    t = threading.Thread(target=other_writer)
    t.start()
    holding.wait(5)
    assert cache.ensure(utts, up, max_seconds=10.0) == len(utts) - 1
    t.join()
    np.testing.assert_array_equal(cache.load(utts[0]), marker)


def _rows(results_dir: Path) -> list[dict]:
    with open(results_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


COMMON = ["batch.max_seconds=1.0", "train.eval_every=4", "train.log_every=1", "optimizer.lr=1e-2"]
STEPS = 8


def test_two_nodes_with_their_own_caches_match_one_process(tmp_path):
    write_speech_commands(tmp_path / "data", per_word=4)
    torch.manual_seed(0)
    save_upstream(HubertUpstream(HubertModel(tiny_config())), tmp_path / "upstream")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_task(RunOptions(upstream=str(tmp_path / "upstream"), task="ks", data_root=tmp_path / "data",
                            results_dir=tmp_path / "one", cache_dir=tmp_path / "cache_one", max_steps=STEPS,
                            device="cpu", overrides=COMMON))
    finally:
        torch.set_num_threads(threads)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
               "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", "two-nodes", "run_benchmark.py", "--upstream", str(tmp_path / "upstream"), "--task",
               "ks", "--data-root", str(tmp_path / "data"), "--results-dir", str(tmp_path / "two"),
               "--cache-dir", str(tmp_path / f"cache_node{node}"), "--max-steps", str(STEPS), "--device", "cpu",
               "--threads", "1"]
        for o in COMMON:
            cmd += ["-o", o]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("two-node run hung")
        assert p.returncode == 0, err[-3000:]
        outs.append(out)
    assert sum(o.count("ks test:") for o in outs) == 1  # global rank 0 alone reports
    entries = [sorted(p.name for p in (tmp_path / f"cache_node{n}").rglob("*.npy")) for n in (0, 1)]
    assert entries[0] == entries[1] and len(entries[0]) > 0  # each node holds every entry its rank reads
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert len(two) == len(one) > 0  # written once
    key = lambda r: (r["split"], r["metric"])  # noqa: E731
    for a, b in zip(sorted(one, key=key), sorted(two, key=key)):
        assert key(a) == key(b) and abs(float(a["value"]) - float(b["value"])) < 1e-6, (a, b)
