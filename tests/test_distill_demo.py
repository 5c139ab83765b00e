"""scripts/demo.py's stage caching and failure handling (no heavy stage runs here)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tests.fixtures.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def demo():
    return load_script("scripts/demo.py", "demo_script")


def stages(demo, tmp_path, quick: bool, seeds: int = 1, pretrain_minutes=None, pretrain: bool = True):
    args = argparse.Namespace(quick=quick, data_root=str(tmp_path / "data"), results=str(tmp_path / "res"), jobs=1,
                              seeds=seeds, pretrain_minutes=pretrain_minutes, distil_minutes=None, pretrain=pretrain)
    return demo.Stages(args)


def test_a_stage_is_cached_only_for_the_same_settings(demo, tmp_path):
    full = stages(demo, tmp_path, quick=False)
    out = tmp_path / "res" / "hubert_mini"
    out.mkdir(parents=True)
    (out / "partial.bin").write_text("from an interrupted run")
    assert not full.cached(out, "pretrain") and not out.exists()  # unfinished output is rebuilt
    out.mkdir()
    full.mark_done(out, "pretrain")
    assert full.cached(out, "pretrain")
    assert not stages(demo, tmp_path, quick=True).cached(out, "pretrain")  # quick settings rebuild it


def test_a_stage_is_rebuilt_for_its_own_settings_and_inputs_only(demo, tmp_path):
    import os

    full = stages(demo, tmp_path, quick=False)
    data, teacher, student = tmp_path / "data", tmp_path / "res" / "hubert_mini", tmp_path / "res" / "student"
    for path in (data, teacher, student):
        path.mkdir(parents=True)
    (data / "MANIFEST.sha256").write_text("corpus\n")
    (teacher / "model.safetensors").write_text("weights")
    full.mark_done(data, "corpus")
    full.mark_done(teacher, "pretrain")
    full.mark_done(student, "distil-cnn")
    longer = stages(demo, tmp_path, quick=False, pretrain_minutes=12.0)
    assert longer.budget.pretrain_minutes == 12.0
    assert longer.cached(data, "corpus")                 # another pretraining cap keeps the corpus
    assert longer.cached(student, "distil-cnn")           # ... and, until the teacher is retrained, the students
    assert not longer.cached(teacher, "pretrain")          # but retrains the teacher
    teacher.mkdir()
    (teacher / "model.safetensors").write_text("new weights")
    os.utime(teacher / "model.safetensors", (1e9, 1e9))  # a different mtime, whatever the clock's resolution
    assert not full.cached(student, "distil-cnn")            # a retrained teacher retrains the students


def test_an_edited_recipe_retrains_its_stage_only(demo, tmp_path, monkeypatch):
    recipe = tmp_path / "hubert_mini.yaml"
    recipe.write_text("front_end_warmup: {steps: 200}\n")
    monkeypatch.setattr(demo, "PRETRAIN_RECIPE", recipe)  # absolute: ROOT / recipe is recipe
    full = stages(demo, tmp_path, quick=False)
    teacher, student = tmp_path / "res" / "hubert_mini", tmp_path / "res" / "student"
    teacher.mkdir(parents=True)
    student.mkdir(parents=True)
    full.mark_done(teacher, "pretrain")
    full.mark_done(student, "distil-cnn")
    assert full.cached(teacher, "pretrain")
    recipe.write_text("front_end_warmup: {steps: 0}\n")
    assert full.cached(student, "distil-cnn")   # the students' own recipes did not change
    assert not full.cached(teacher, "pretrain")


def test_failures_are_collected_and_fatal_ones_stop(demo, tmp_path):
    s = stages(demo, tmp_path, quick=True)

    def broken():
        raise demo.StageFailed("no tasks")

    s.timed("4 benchmark", broken)
    assert s.failures == ["4 benchmark: no tasks"] and s.timings[0][0] == "4 benchmark"

    def fatal():
        raise demo.StageFailed("no corpus", fatal=True)

    with pytest.raises(demo.StageFailed):
        s.timed("1 corpus", fatal)
    assert s.upstreams() == ["fbank", "fbank_no_cmvn"]  # nothing trained yet: only the two FBANK baselines


def test_benchmark_keeps_its_feature_cache_inside_the_demo_results(demo, tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(demo, "run_benchmark", lambda cmd, log, workers: commands.append(cmd) or 0)
    s = stages(demo, tmp_path, quick=True)
    s.benchmark(["ks"])
    assert [cmd[cmd.index("--upstream") + 1] for cmd in commands] == ["fbank", "fbank_no_cmvn"]  # nothing trained
    for cmd in commands:
        cache = Path(cmd[cmd.index("--cache-dir") + 1])
        assert cache.is_relative_to(tmp_path / "res")  # so `make clean-demo` deletes it with the results


def test_benchmark_runs_every_seed_once(demo, tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(demo, "run_benchmark", lambda cmd, log, workers: commands.append(cmd) or 0)
    s = stages(demo, tmp_path, quick=True, seeds=2)
    s.benchmark(["ks"])
    assert sorted(cmd[cmd.index("--seed") + 1] for cmd in commands) == ["0", "0", "1", "1"]  # two FBANK rows
    s.benchmark(["ks"])
    assert len(commands) == 4  # both seeds are marked done and skipped


def test_benchmark_workers_run_each_command_line_into_its_own_log(demo, tmp_path):
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    from tests.fixtures.datasets import write_speech_commands

    data = tmp_path / "data"
    write_speech_commands(data)
    base = [demo.PY, "run_benchmark.py", "--upstream", "fbank", "--data-root", str(data), "--results-dir",
            str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache"), "--max-steps", "2", "--threads", "1",
            "-o", "batch.max_seconds=0.5"]
    logs = [tmp_path / "logs" / f"{i}.log" for i in range(3)]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=demo.setup_worker) as workers:
        assert demo.run_benchmark(base + ["--task", "ks"], logs[0], workers) == 0
        assert demo.run_benchmark(base + ["--task", "nosuchtask"], logs[1], workers) == 2
        assert demo.run_benchmark(base + ["--task", "ks", "--seed", "1"], logs[2], workers) == 0
    first, bad, second = (log.read_text() for log in logs)
    assert "ks test: accuracy=" in first and "nosuchtask" not in first
    assert "nosuchtask" in bad and "ks test:" not in bad
    # the same worker ran the third job: its output, log records included, went to the third log only
    assert "ks test: accuracy=" in second and "--seed 1" in second and "--seed 1" not in first


@pytest.fixture()
def commands(demo, monkeypatch) -> list[list[str]]:
    """The command lines the demo's training stages run, recorded instead of run (each --output folder is made)."""
    recorded: list[list[str]] = []

    def run(cmd, log=None):
        recorded.append(cmd)
        Path(cmd[cmd.index("--output") + 1]).mkdir(parents=True, exist_ok=True)
        return 0
    monkeypatch.setattr(demo, "run", run)
    return recorded


def test_quick_settings_survive_a_changed_cap(demo, commands, tmp_path):
    s = stages(demo, tmp_path, quick=True, pretrain_minutes=0.5)
    s.pretrain()
    (cmd,) = commands
    assert "run.max_minutes=0.5" in cmd and "labels.kmeans_init_runs=1" in cmd  # still the quick recipe


def test_the_shipped_teacher_is_used_and_its_minutes_go_to_the_students(demo, commands, tmp_path, monkeypatch, capsys):
    shipped = tmp_path / "upstream" / "pretrained" / "hubert_mini"
    shipped.mkdir(parents=True)
    (shipped / "upstream.yaml").write_text("shipped")
    monkeypatch.setattr(demo, "SHIPPED_TEACHER", shipped)
    monkeypatch.setattr(demo, "shipped_teacher_ok", lambda: True)
    s = stages(demo, tmp_path, quick=False, pretrain=False)
    s.pretrain()
    assert commands == [] and f"the shipped teacher: {shipped}" in capsys.readouterr().out
    s.distil()
    assert len(commands) == 2
    for cmd in commands:
        assert cmd[cmd.index("--teacher") + 1] == str(shipped)
        assert f"run.max_minutes={demo.FULL.shipped_distil_minutes}" in cmd  # more than after pretraining here
    assert demo.FULL.shipped_distil_minutes > demo.FULL.distil_minutes
    assert str(shipped) in s.upstreams()  # the shipped teacher is benchmarked


def test_without_shipped_weights_the_demo_says_so_in_one_line_and_pretrains(demo, commands, tmp_path, monkeypatch,
                                                                            capsys):
    monkeypatch.setattr(demo, "SHIPPED_TEACHER", tmp_path / "absent" / "hubert_mini")
    assert not demo.shipped_teacher_ok()
    s = stages(demo, tmp_path, quick=True, pretrain=False)
    s.pretrain()
    said = [line for line in capsys.readouterr().out.splitlines() if "shipped" in line]
    assert len(said) == 1 and "no shipped teacher weights" in said[0] and "pretraining one here" in said[0]
    (cmd,) = commands
    assert cmd[1] == "run_pretrain.py" and cmd[cmd.index("--output") + 1] == str(tmp_path / "res" / "hubert_mini")
    s.distil()
    assert all(f"run.max_minutes={demo.QUICK.distil_minutes}" in c for c in commands[1:])


def test_pretrain_flag_pretrains_even_with_shipped_weights(demo, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "shipped_teacher_ok", lambda: True)
    s = stages(demo, tmp_path, quick=False, pretrain=True)
    assert s.teacher == tmp_path / "res" / "hubert_mini" and s.distil_minutes == demo.FULL.distil_minutes
    assert not stages(demo, tmp_path, quick=False, pretrain=False).teacher.is_relative_to(tmp_path)


def test_the_int8_cnn_student_is_exported_once_and_benchmarked_as_a_row(demo, tmp_path, monkeypatch):
    exported: list[list[str]] = []

    def run(cmd, log=None):  # stands in for run_distill.py export: writes the int8 file it names
        exported.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        out.with_name(out.stem + ".int8.onnx").write_bytes(b"onnx")
        return 0
    monkeypatch.setattr(demo, "run", run)
    s = stages(demo, tmp_path, quick=True)
    s.export_int8()
    assert exported == [] and str(s.int8_student) not in s.upstreams()  # no CNN student yet: nothing to export
    cnn = s.students()["cnn"]
    cnn.mkdir(parents=True)
    (cnn / "upstream.yaml").write_text("student")
    (cnn / "model.safetensors").write_bytes(b"w")
    s.export_int8()
    (cmd,) = exported
    assert cmd[1:3] == ["run_distill.py", "export"] and cmd[cmd.index("--student") + 1] == str(cnn)
    assert cmd[cmd.index("--quantize") + 1] == "dynamic" and cmd[cmd.index("--format") + 1] == "onnx"
    assert s.upstreams()[-1] == str(s.int8_student)
    s.export_int8()
    assert len(exported) == 1  # cached while the student is unchanged
    (cnn / "model.safetensors").write_bytes(b"retrained")
    import os
    os.utime(cnn / "model.safetensors", (1, 1))
    s.export_int8()
    assert len(exported) == 2  # a retrained student is exported again
    commands = []
    monkeypatch.setattr(demo, "run_benchmark", lambda cmd, log, workers: commands.append(cmd) or 0)
    s.benchmark(["ks"])
    assert str(s.int8_student) in [cmd[cmd.index("--upstream") + 1] for cmd in commands]
