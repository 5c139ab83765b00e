"""``bench/gpu_check.py --tiny``: every step of the GPU check runs on the CPU with tiny models, so the script is
known to work before a GPU is at hand."""
from __future__ import annotations

import json

from tests.fixtures.scripts import load_script


def test_gpu_check_tiny_runs_every_step(tmp_path, capsys):
    gpu_check = load_script("bench/gpu_check.py")
    assert gpu_check.main(["--tiny", "--json", str(tmp_path / "check.json")]) == 0
    rows = json.loads((tmp_path / "check.json").read_text())["rows"]
    steps = [r["step"] for r in rows]
    assert steps.count("extraction") == 6  # Base and Large shapes x fp32, TF32, bf16
    assert {"distillation step", "ASR head step", "resume"} <= set(steps)
    assert all(r["ours"] and r["ours"] > 0 for r in rows)
    extraction = [r for r in rows if r["step"] == "extraction"]
    assert all(r["reference"] > 0 for r in extraction)  # transformers ran too
    assert "OK" in rows[-1]["note"]  # the resumed run ends with the uninterrupted run's weights
    assert "| extraction" in capsys.readouterr().out
