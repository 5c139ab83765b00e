"""Issue 22 §4: resume and re-run never change or lose what was written. Distillation and pretraining compare the
new settings with the folder's run before writing anything: a changed setting is refused with its key (except
the ones safe to change on resume, which apply for real); a finished run is never overwritten; --max-steps <= 0
is an error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import run_distill
import run_pretrain
from tests.fixtures.datasets import module_corpus
from tests.fixtures.upstreams import tiny_distill_args, tiny_pretrain_args, write_teacher_and_tones

setup = module_corpus("resume_cfg", write_teacher_and_tones)


def distil_args(setup: Path, out: Path, steps: int | None, *extra: str) -> list[str]:
    return tiny_distill_args(setup, out, steps, "run.optim.lr=2e-3", *extra)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "tensorboard" not in p.parts}


def finished_run(setup: Path, out: Path, capsys) -> dict[str, bytes]:
    """Distils 2 steps into ``out``; returns the :func:`snapshot` of what it wrote (captured output cleared)."""
    assert run_distill.main(distil_args(setup, out, 2)) == 0
    capsys.readouterr()
    return snapshot(out)


@pytest.mark.parametrize("override, change", [("run.optim.lr=1e-3", "config.run.optim.lr: 0.002 -> 0.001"),
                                              ("student.layers=3", "config.student.layers: 2 -> 3")])
def test_resume_with_a_changed_setting_is_refused_and_changes_nothing(setup, tmp_path, capsys, override, change):
    out = tmp_path / "run"
    before = finished_run(setup, out, capsys)
    assert run_distill.main(distil_args(setup, out, 2, override) + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert f"--resume with changed settings ({change})" in err
    assert "config.run.max_steps" in err  # the message says which keys may change
    assert snapshot(out) == before  # distill_config.yaml (and everything else) untouched


def test_a_rerun_into_a_finished_output_is_refused_and_changes_nothing(setup, tmp_path, capsys):
    out = tmp_path / "run"
    before = finished_run(setup, out, capsys)
    assert run_distill.main(distil_args(setup, out, 3, "student.layers=3")) == 2
    err = capsys.readouterr().err
    assert f"{out} already holds a distillation run" in err and "pass --resume" in err
    assert snapshot(out) == before


def test_resume_with_more_steps_applies_them_for_real(setup, tmp_path):
    out = tmp_path / "run"
    assert run_distill.main(distil_args(setup, out, 2)) == 0
    assert run_distill.main(distil_args(setup, out, 4) + ["--resume"]) == 0
    history = [json.loads(line) for line in (out / "loss_history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    assert history[-1]["lr"] == 0.0  # the schedule was re-drawn to end at the new max_steps
    assert yaml.safe_load((out / "distill_config.yaml").read_text())["config"]["run"]["max_steps"] == 4
    assert json.loads((out / "distill_summary.json").read_text())["steps"] == 4


@pytest.mark.parametrize("steps", [0, -3])
def test_max_steps_must_be_positive(setup, tmp_path, capsys, steps):
    out = tmp_path / "run"
    assert run_distill.main(distil_args(setup, out, steps)) == 2
    err = capsys.readouterr().err
    assert f"run.max_steps (--max-steps) must be >= 1, got {steps}" in err and "Traceback" not in err
    assert not out.exists()  # nothing written, no untrained model


def pretrain_args(tmp_path: Path, out: Path, *extra: str, steps: int = 2) -> list[str]:
    return tiny_pretrain_args(tmp_path / "audio", out, steps, "run.max_minutes=0", "run.threads=1",
                              "run.data.max_batch_seconds=4.0", "run.data.max_item_seconds=1.5", *extra)


def test_pretraining_follows_the_same_rules(setup, tmp_path, capsys):
    out = tmp_path / "teacher"
    assert run_pretrain.main(pretrain_args(setup, out)) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert run_pretrain.main(pretrain_args(setup, out, "run.optim.lr=1e-2") + ["--resume"]) == 2
    assert "--resume with changed settings (config.run.optim.lr:" in capsys.readouterr().err
    assert run_pretrain.main(pretrain_args(setup, out, "model.layers=3")) == 2
    assert f"{out} already holds a pretraining run" in capsys.readouterr().err
    assert run_pretrain.main(pretrain_args(setup, out, steps=0) + ["--resume"]) == 2
    assert "run.max_steps (--max-steps) must be >= 1" in capsys.readouterr().err
    assert run_pretrain.main(pretrain_args(setup, out, "iteration2.max_steps=-1") + ["--resume"]) == 2
    assert "iteration2.max_steps must be >= 0 (0: run.max_steps), got -1" in capsys.readouterr().err
    assert snapshot(out) == before
