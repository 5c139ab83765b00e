"""``run_benchmark.py predict`` and ``evaluate`` on finished runs: predictions reproduce the run's test-split file,
re-evaluation appends rows marked as such, and bad run folders / changed upstreams exit 2 with one line."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import run_benchmark
from benchmark.engine import RunOptions, run_task
from tests.fixtures.datasets import write_speech_commands
from tests.fixtures.upstreams import TINY_UPSTREAM
from tests.test_custom_task import speech_commands_rows, write_csv

FAST = ["train.eval_every=20", "batch.max_seconds=0.6", "batch.eval_max_seconds=2.0", "head.proj_dim=8"]


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def custom_run(tiny_corpus, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("apply_custom")
    rows = speech_commands_rows(tiny_corpus, noise=False)
    manifest = write_csv(tmp / "keywords.csv", ["path", "split", "label"],
                         [[r["path"], r["split"], r["word"]] for r in rows])
    summary = run_task(RunOptions(upstream=TINY_UPSTREAM, task="custom", data_root=tmp, results_dir=tmp / "results",
                                  cache_dir=tmp / "cache", max_steps=40, device="cpu",
                                  overrides=[f"data.manifest={manifest}", *FAST]))
    return Path(summary["run_dir"])


def test_predict_reproduces_the_test_predictions_of_a_manifest_run(custom_run, tmp_path, capsys):
    test = jsonl(custom_run / "predictions" / "test.jsonl")
    out = tmp_path / "preds.jsonl"
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(t["id"] for t in test[1:]) + "\n")
    assert run_benchmark.main(["predict", "--run", str(custom_run), test[0]["id"], "--list", str(listing),
                               "--out", str(out), "--device", "cpu"]) == 0
    preds = jsonl(out)
    assert [p["path"] for p in preds] == [t["id"] for t in test]
    assert [p["prediction"] for p in preds] == [t["prediction"] for t in test]
    for p in preds:
        assert set(p["probabilities"]) == {"yes", "no", "up"} and sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert max(p["probabilities"], key=p["probabilities"].get) == p["prediction"]
    assert test[0]["id"] in capsys.readouterr().out


def test_evaluate_rescoring_matches_the_run_and_is_marked(custom_run):
    results_csv = custom_run.parents[2] / "results.csv"
    before = list(csv.DictReader(results_csv.open()))
    assert run_benchmark.main(["evaluate", "--run", str(custom_run), "--split", "test", "--device", "cpu"]) == 0
    rows = list(csv.DictReader(results_csv.open()))
    new = rows[len(before):]
    assert {r["metric"] for r in new} == {"accuracy", "macro_f1"} and {r["split"] for r in new} == {"test"}
    assert all(r["run_id"].startswith(f"{custom_run.name}:reeval-") for r in new)
    original = {r["metric"]: float(r["value"]) for r in before if r["split"] == "test"}
    assert {r["metric"]: float(r["value"]) for r in new} == pytest.approx(original)
    assert not (custom_run / "predictions" / "dev.jsonl").stat().st_mtime > results_csv.stat().st_mtime
    assert list((custom_run / "reevaluations").glob("*/predictions/test.jsonl"))


def test_predict_on_a_builtin_task_run(tmp_path):
    write_speech_commands(tmp_path / "data")
    summary = run_task(RunOptions(upstream=TINY_UPSTREAM, task="ks", data_root=tmp_path / "data",
                                  results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", max_steps=20,
                                  device="cpu", overrides=list(FAST)))
    run_dir = Path(summary["run_dir"])
    test = jsonl(run_dir / "predictions" / "test.jsonl")
    task_utts = {u.id: u for u in __import__("tasks.registry", fromlist=["x"]).build_task(
        "ks", tmp_path / "data").load_split("test")}
    files = [str(task_utts[t["id"]].path) for t in test]
    out = tmp_path / "p.jsonl"
    assert run_benchmark.main(["predict", "--run", str(run_dir), *files, "--out", str(out), "--device", "cpu"]) == 0
    assert [p["prediction"] for p in jsonl(out)] == [t["prediction"] for t in test]
    assert len(jsonl(out)[0]["probabilities"]) == 12


def test_bad_run_folders_and_changed_upstreams_exit_2(custom_run, tmp_path, capsys):
    assert run_benchmark.main(["predict", "--run", str(tmp_path), "x.wav"]) == 2
    assert "not a run folder (no config.yaml)" in capsys.readouterr().err
    assert run_benchmark.main(["predict", "--run", str(custom_run), str(tmp_path / "missing.wav")]) == 2
    assert f"audio file {tmp_path / 'missing.wav'} not found" in capsys.readouterr().err
    assert run_benchmark.main(["predict", "--run", str(custom_run)]) == 2
    assert "no audio files" in capsys.readouterr().err
    import shutil

    copy = tmp_path / "results" / "tiny_frames" / "keywords" / "run"
    shutil.copytree(custom_run, copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["upstream_hash"] = "0" * 64
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert run_benchmark.main(["evaluate", "--run", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "weights hash 0000000000000000" in err and "Traceback" not in err
    (copy / "checkpoints" / "best.pt").unlink()
    assert run_benchmark.main(["evaluate", "--run", str(copy)]) == 2
    assert "no trained head" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["asv", "sd", "asr", "sf", "ic", "er", "pr", "sid"])
def test_predict_reproduces_test_predictions_of_builtin_tasks(task, tiny_corpus, tmp_path):
    """Every built-in task with a head: predict on the test split's audio files gives the run's test predictions
    (floats to 1e-3: embeddings and SD posteriors are written rounded); SD adds RTTM lines."""
    from benchmark.apply import load_run, predict_files
    from tasks.registry import build_task

    overrides = ["train.eval_every=5"] + (["data.fold=1"] if task == "er" else [])
    summary = run_task(RunOptions(upstream=TINY_UPSTREAM, task=task, data_root=tiny_corpus, profile="demo",
                                  results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", max_steps=5,
                                  device="cpu", overrides=overrides))
    run_dir = Path(summary["run_dir"])
    built = build_task(task, tiny_corpus, overrides, "demo")
    utts = {u.id: u for u in built.load_split("test")}
    if task == "sd":  # SD's test predictions are its RTTM: compare turns per recording (names differ: id vs stem)
        recordings = built.recordings("test")  # predict cuts each file into chunks as the run did
        records = predict_files(load_run(run_dir, "cpu"), [r.path for r in recordings])
        run_rttm = (run_dir / "test.rttm").read_text().splitlines()
        for r, rec in zip(recordings, records):
            ours = [line.split()[3:] for line in rec["rttm"]]
            assert ours == [line.split()[3:] for line in run_rttm if line.split()[1] == r.id]
        assert any(rec["rttm"] for rec in records)
        return
    test = jsonl(run_dir / "predictions" / "test.jsonl")
    assert all(utts[t["id"]].start == 0 for t in test)  # whole files, so a file list can name them
    records = predict_files(load_run(run_dir, "cpu"), [utts[t["id"]].path for t in test])
    if task in ("ic", "sid", "er"):  # class probabilities (IC: per slot) that pick the predicted class
        for rec in records:
            probs = [rec["probabilities"]] if task != "ic" else list(rec["probabilities"].values())
            picked = [rec["prediction"]] if task != "ic" else list(rec["prediction"])
            assert [max(p, key=p.get) for p in probs] == picked
    for rec, ref in zip(records, test):
        if isinstance(ref["prediction"], (str, tuple)) or (isinstance(ref["prediction"], list) and ref["prediction"]
                                                          and isinstance(ref["prediction"][0], str)):
            assert json.loads(json.dumps(rec["prediction"])) == ref["prediction"]  # IC: tuple -> JSON list
        else:
            assert np.allclose(np.asarray(rec["prediction"], dtype=float), np.asarray(ref["prediction"], dtype=float),
                               atol=1e-3)
