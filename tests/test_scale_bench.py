"""bench/scale.py runs end to end: corpora built, every measurement taken in a fresh process per size, the table,
the targets, scale.json and scale.png written; the cache estimate is within 5% of the bytes written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_scale_benchmark(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    # --quick's path with two of its smallest sizes, one timed step per source (the test's share of a 2-core machine)
    out = subprocess.run([sys.executable, "bench/scale.py", "--quick", "--hours", "0.005", "0.01", "--steps", "1",
                          "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| upstream | hours |" in out.stdout and "estimate vs written" in out.stdout
    rows = json.loads((tmp_path / "out" / "scale.json").read_text())
    assert [r["nominal_hours"] for r in rows] == [0.005, 0.01]
    for r in rows:
        assert r["written_bytes"] > 0 and abs(r["estimate_error"]) < 0.05
        assert r["index2_keys_s"] >= 0 and r["step_cached_s"] > 0 and r["step_live_s"] > 0 and r["peak_rss_mb"] > 0
        assert r["extracted"] == r["utterances"]  # a fresh cache per size: everything extracted once
    assert (tmp_path / "out" / "scale.png").stat().st_size > 10_000
