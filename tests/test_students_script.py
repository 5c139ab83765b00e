"""scripts/students.py end to end at toy size: a successor's recipe distilled from a tiny teacher under the time cap,
benchmarked on KS with the teacher and the FBANK anchor, measured, and written up beside the published rows."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.fixtures.datasets import write_speech_commands, write_tone_corpus
from tests.fixtures.upstreams import tiny_teacher
from upstream import build_upstream
from upstream.base import count_parameters
from upstream.checkpoints import save_upstream

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import students  # noqa: E402


def test_students_table_at_toy_size(tmp_path):
    save_upstream(tiny_teacher(), tmp_path / "teacher")
    write_tone_corpus(tmp_path / "audio", count=4)
    write_speech_commands(tmp_path / "data")
    doc = tmp_path / "students.md"
    argv = ["--teacher", str(tmp_path / "teacher"), "--data", str(tmp_path / "audio"), "--data-root",
            str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--doc", str(doc), "--recipes",
            "armhubert_mini", "--minutes", "0.03", "--batch-seconds", "4", "--item-seconds", "1.5",
            "--seeds", "1", "--tasks", "ks", "--benchmark-steps", "2", "--threads", "1", "--anchors", "fbank"]
    assert students.main(argv) == 0
    text = doc.read_text()
    assert "0.03 minutes of wall clock each" in text and "tasks ks" in text
    for recipe, paper in (("armhubert_mini", "ARMHuBERT (arXiv 2305.11685)"),):
        row = next(line for line in text.splitlines() if line.startswith(f"| {recipe} | {paper}"))
        params = float(row.split("|")[3])
        assert params == pytest.approx(count_parameters(build_upstream(str(tmp_path / "out" / recipe))) / 1e6,
                                       abs=0.006)
    assert re.search(r"\| dphubert \(published\) \| 23\.59 \| 9\.67 .* \| 866 \|", text)
    assert "| fithubert (published) | 22.49 | 13.30 | – |" in text
    assert doc.with_suffix(".png").stat().st_size > 5000
    # a second run with the same settings redoes nothing (every stage's marker matches)
    before = {p: p.stat().st_mtime for p in (tmp_path / "out").rglob("model.safetensors")}
    assert students.main(argv) == 0
    assert before == {p: p.stat().st_mtime for p in (tmp_path / "out").rglob("model.safetensors")}
