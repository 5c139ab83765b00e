"""Distillation end to end on a tiny random teacher: every recipe config trains and exports a loadable student;
kill -9 + --resume matches an uninterrupted run; 2 DDP processes follow the 1-process loss curve."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

import run_distill
from tests.fixtures.datasets import write_tone_corpus
from tests.fixtures.ports import free_port
from tests.fixtures.processes import kill_at_first_checkpoint
from tests.fixtures.upstreams import tiny_teacher, write_teacher_and_audio
from upstream import build_upstream
from upstream.checkpoints import export_hf

ROOT = Path(__file__).resolve().parents[1]
TINY = ["run.data.max_batch_seconds=4.0", "run.data.max_item_seconds=1.5", "run.threads=1", "run.log_every=1",
        "run.optim.lr=2e-3"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return write_teacher_and_audio(tmp_path_factory.mktemp("distill"))


def history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "loss_history.jsonl").read_text().splitlines()]


def distil(setup: Path, config: str, out: str, steps: int, *extra: str) -> Path:
    args = ["--config", f"configs/distill/{config}.yaml", "--teacher", str(setup / "teacher"),
            "--data", str(setup / "audio"), "--output", str(setup / out), "--max-steps", str(steps)]
    for o in TINY + list(extra):
        args += ["-o", o]
    assert run_distill.main(args) == 0
    return setup / out


@pytest.mark.parametrize("config, extra, parts", [
    ("distilhubert", [], ["l1_layer2", "cos_layer4", "l1_layer6"]),
    ("discriminative", [], ["kl_codewords"]),
    ("layer_to_layer", ["student.layers=3", "student.width=16", "student.heads=2", "student.ffn_dim=32"],
     ["l1_layer2", "l1_layer4", "l1_layer6"]),
    ("wide_shallow", [], ["l1_layer3", "l1_layer6"]),
    ("fbank_student", ["student.frontend_warmup_steps=2"], ["cos_layer6"]),
])
def test_each_recipe_trains_and_exports_a_loadable_student(setup, config, extra, parts):
    out = distil(setup, config, f"out_{config}", 4, *extra)
    records = history(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(p in records[0] for p in parts) and all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert (out / "loss.png").stat().st_size > 1000 and any((out / "tensorboard").iterdir())
    student = build_upstream(out)
    teacher = build_upstream(setup / "teacher")
    assert student.model.pred_heads is None  # heads are dropped after training, as DistilHuBERT does
    assert student.cfg.front_end == ("fbank" if config == "fbank_student" else "cnn")
    wav = [torch.randn(16000) * 0.1]
    s_out, t_out = student(wav), teacher(wav)
    assert abs(s_out.hidden_states[-1].shape[1] - t_out.hidden_states[-1].shape[1]) <= 1
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    if config == "distilhubert":
        assert (export_hf(student, setup / "hf") / "config.json").is_file()


def test_export_heads_appends_the_prediction_heads_outputs_like_s3prl(setup):
    out = distil(setup, "distilhubert", "out_heads", 2, "objective.export_heads=true")
    student = build_upstream(out)
    assert student.include_pred_heads and len(student.model.pred_heads) == 3
    states = student([torch.randn(12000) * 0.1]).hidden_states
    assert len(states) == student.cfg.layers + 1 + 3
    predicted = student.model.predict(states[student.cfg.layers]).unbind(1)
    for head_state, expected in zip(states[-3:], predicted):
        torch.testing.assert_close(head_state, expected)


def test_fbank_front_end_adaptation_freezes_the_encoder_first(setup):
    out = distil(setup, "fbank_student", "out_fbank_adapt", 2, "student.frontend_warmup_steps=5")
    teacher = build_upstream(setup / "teacher").model
    student = build_upstream(out).model
    # encoder layers were copied from the teacher and must not move during adaptation; the front end must
    s_layers, t_layers = student.encoder.layers, teacher.encoder.layers
    assert torch.equal(s_layers[0].final_layer_norm.weight, t_layers[0].final_layer_norm.weight)
    assert torch.equal(s_layers[1].attention.q_proj.weight, t_layers[1].attention.q_proj.weight)
    # the projection was copied from the teacher too, and does learn
    assert not torch.equal(student.feature_projection.projection.weight, teacher.feature_projection.projection.weight)


def test_loss_goes_down(setup):
    records = history(distil(setup, "distilhubert", "out_long", 12))
    assert records[-1]["loss"] < 0.9 * records[0]["loss"]


def test_max_minutes_stops_early_with_a_checkpoint(setup):
    out = distil(setup, "distilhubert", "out_timed", 50, "run.max_minutes=1e-6")
    assert len(history(out)) == 1
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 1
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("fit", [False, True])
def test_a_schedule_fitted_to_the_time_cap_ends_at_zero_lr(setup, monkeypatch, fit):
    import types

    import training.loop as trainer

    clock = [1000.0]  # fake seconds: every training step takes exactly one
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(time=lambda: clock[0]))
    step = trainer.Trainer._train_step

    def one_second_step(self, *args, **kwargs):
        clock[0] += 1.0
        return step(self, *args, **kwargs)

    monkeypatch.setattr(trainer.Trainer, "_train_step", one_second_step)
    out = distil(setup, "distilhubert", f"out_fit_{fit}", 500, "run.max_minutes=0.5",
                 f"run.fit_schedule_to_time={str(fit).lower()}")
    records = history(out)
    assert 29 <= len(records) <= 31  # 30 one-second steps fit in the cap either way
    peak = 2e-3
    if fit:  # the LR decayed to (almost) zero by the cap: the schedule ended where the time did
        assert records[-1]["lr"] < 0.1 * peak and max(r["lr"] for r in records) > 0.5 * peak
    else:  # cut mid-schedule: 30 steps into a 500-step schedule, still near the peak
        assert records[-1]["lr"] > 0.9 * peak


def test_resume_with_more_steps_trains_to_the_new_max(setup):
    out = distil(setup, "distilhubert", "out_more", 3)
    args = ["--config", "configs/distill/distilhubert.yaml", "--teacher", str(setup / "teacher"), "--data",
            str(setup / "audio"), "--output", str(out), "--max-steps", "5", "--resume"]
    for o in TINY:
        args += ["-o", o]
    assert run_distill.main(args) == 0
    assert [r["step"] for r in history(out)] == [1, 2, 3, 4, 5]


def _cli(setup: Path, out: str, steps: int, *extra: str) -> list[str]:
    cmd = ["run_distill.py", "--config", "configs/distill/distilhubert.yaml", "--teacher", str(setup / "teacher"),
           "--data", str(setup / "audio"), "--output", str(setup / out), "--max-steps", str(steps)]
    for o in TINY + list(extra):
        cmd += ["-o", o]
    return cmd


def test_kill_9_then_resume_matches_an_uninterrupted_run(setup):
    steps = 40
    killed_at = kill_at_first_checkpoint(_cli(setup, "killed", steps, "run.checkpoint_every=3"),
                                         setup / "killed" / "checkpoints" / "last.pt", timeout=60)
    assert 0 < killed_at < steps, "the run must die mid-way for this test to mean anything"
    assert not (setup / "killed" / "model.safetensors").exists()
    assert run_distill.main(_cli(setup, "killed", steps, "run.checkpoint_every=3")[1:] + ["--resume"]) == 0
    assert run_distill.main(_cli(setup, "straight", steps, "run.checkpoint_every=3")[1:]) == 0
    resumed = safetensors.torch.load_file(str(setup / "killed" / "model.safetensors"))
    straight = safetensors.torch.load_file(str(setup / "straight" / "model.safetensors"))
    assert resumed.keys() == straight.keys()
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=1e-5, atol=1e-6)
    assert history(setup / "killed")[-1]["loss"] == pytest.approx(history(setup / "straight")[-1]["loss"], rel=1e-5)


def test_two_ddp_processes_follow_the_single_process_loss_curve(setup):
    steps = 4
    single = history(distil(setup, "distilhubert", "single", steps))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    result = subprocess.run(cmd + _cli(setup, "ddp", steps), cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = history(setup / "ddp")
    assert [r["step"] for r in ddp] == [r["step"] for r in single]
    for a, b in zip(single, ddp):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    assert json.loads((setup / "ddp" / "distill_summary.json").read_text())["steps"] == steps


def test_a_file_that_breaks_mid_run_is_skipped_and_reported(tmp_path):
    from common.config import load_config
    from distill.config import DistillConfig
    from distill.objectives import DistillObjective
    from training.data import SkipReport, collect_audio_files, scan_audio
    from common.distributed import DistEnv
    from training.loop import Trainer

    paths = write_tone_corpus(tmp_path / "audio", count=6)
    cfg = load_config(DistillConfig, None, TINY + ["run.max_steps=6"])
    report = SkipReport()
    entries = scan_audio(collect_audio_files([tmp_path / "audio"]), cfg.run.data, report)
    paths[2].write_bytes(b"corrupted after the scan")  # e.g. a network disk hiccup
    trainer = Trainer(DistillObjective(cfg, tiny_teacher()), cfg.run, entries, tmp_path / "out", report, DistEnv())
    assert len(trainer.fit()) == 6
    assert f"{paths[2]}\tfailed while training" in (tmp_path / "out" / "skipped_audio.txt").read_text()
