"""Ctrl-C in a training command: one ``interrupted`` line with the command that continues the run (exit code 130, no
traceback), and that command finishes the run from the folder's last checkpoint."""
from __future__ import annotations

import json
import shlex

import pytest
from tqdm import tqdm

import run_benchmark
import run_distill
from tests.fixtures.upstreams import TINY_UPSTREAM, write_teacher_and_audio


@pytest.fixture
def ctrl_c_at_step_3(monkeypatch):
    """Raise KeyboardInterrupt once a training bar reaches step 3 (as Ctrl-C between two steps would)."""
    real = tqdm.update

    def update(self, n=1):
        out = real(self, n)
        if "train" in str(self.desc) and self.n >= 3:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(tqdm, "update", update)
    return monkeypatch


def _resume_argv(err: str, script: str) -> list[str]:
    """The arguments of the ``continue with: python SCRIPT ...`` command printed on stderr."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("interrupted (Ctrl-C);") and "Traceback" not in err, err
    cmd = shlex.split(lines[-1].split("continue with", 1)[1].split(": ", 1)[1])
    assert cmd[:2] == ["python", script] and cmd[-1] == "--resume"
    return cmd[2:]


def test_ctrl_c_in_distillation_prints_the_resume_command_that_finishes_it(tmp_path, ctrl_c_at_step_3, capsys):
    setup = write_teacher_and_audio(tmp_path)
    argv = ["--config", "configs/distill/distilhubert.yaml", "--teacher", str(setup / "teacher"), "--data",
            str(setup / "audio"), "--output", str(tmp_path / "out"), "--max-steps", "5"]
    for o in ["run.data.max_batch_seconds=4.0", "run.data.max_item_seconds=1.5", "run.threads=1",
              "run.checkpoint_every=2"]:
        argv += ["-o", o]
    assert run_distill.main(argv) == 130
    resume = _resume_argv(capsys.readouterr().err, "run_distill.py")
    assert (tmp_path / "out" / "checkpoints" / "last.pt").exists()  # step 2's checkpoint
    ctrl_c_at_step_3.undo()
    assert run_distill.main(resume) == 0
    assert json.loads((tmp_path / "out" / "distill_summary.json").read_text())["steps"] == 5


def test_ctrl_c_in_a_benchmark_stops_every_task_and_the_resume_command_finishes_them(tiny_corpus, tmp_path,
                                                                                      ctrl_c_at_step_3, capsys):
    argv = ["--upstream", TINY_UPSTREAM, "--task", "ks", "ic", "--data-root", str(tiny_corpus), "--results-dir",
            str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--profile", "demo", "--max-steps", "4",
            "-o", "train.eval_every=2", "--threads", "1"]
    assert run_benchmark.main(argv) == 130
    resume = _resume_argv(capsys.readouterr().err, "run_benchmark.py")
    assert not (tmp_path / "results" / "results.csv").exists()  # ic never started: Ctrl-C stops every task
    ctrl_c_at_step_3.undo()
    assert run_benchmark.main(resume) == 0
    rows = (tmp_path / "results" / "results.csv").read_text().splitlines()
    assert {line.split(",")[3] for line in rows[1:]} == {"ks", "ic"}
