"""``--task custom --manifest``: every task type end to end on small manifests made from the tiny offline corpus, the
CSV / JSONL / lhotse readers, and every bad-manifest check (message with line numbers, exit code 2)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from benchmark.engine import RunOptions, run_task
from benchmark.report import build_report
from tests.fixtures.upstreams import TINY_UPSTREAM
from tasks.manifest import ManifestError, load_manifest

REPO = Path(__file__).resolve().parents[1]
WORDS = ("yes", "no", "up")  # the keywords used for the speech side of the learnable label


def speech_commands_rows(corpus: Path, words: tuple[str, ...] | None = WORDS, noise: bool = True) -> list[dict]:
    """Rows (path, split, start, end, word) from Speech Commands: keyword clips (official dev/test lists) and 1 s
    slices of the background-noise files (every 4th to dev, the next to test)."""
    sc = corpus / "speech_commands_v0.01"
    val = set((sc / "validation_list.txt").read_text().split())
    test = set((sc / "testing_list.txt").read_text().split())
    rows = []
    for wav in sorted(sc.glob("*/*.wav")):
        word, rel = wav.parent.name, f"{wav.parent.name}/{wav.name}"
        if word == "_background_noise_" or (words is not None and word not in words):
            continue
        rows.append({"path": str(wav), "split": "dev" if rel in val else "test" if rel in test else "train",
                     "start": "", "end": "", "word": word})
    if noise:
        for wav in sorted((sc / "_background_noise_").glob("*.wav")):
            for j in range(int(sf.info(str(wav)).duration)):
                rows.append({"path": str(wav), "split": ("train", "train", "dev", "test")[j % 4], "start": j,
                             "end": j + 1, "word": None})
    return rows


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def rms_db(row: dict) -> float:
    info = sf.info(row["path"])
    start = int(float(row["start"] or 0) * info.samplerate)
    stop = int(float(row["end"]) * info.samplerate) if row["end"] != "" else None
    wav, _ = sf.read(row["path"], start=start, stop=stop, dtype="float32")
    return float(20 * np.log10(np.sqrt(np.mean(wav ** 2)) + 1e-8))


def run(manifest: Path, tmp: Path, upstream: str = TINY_UPSTREAM, steps: int = 100, extra: tuple = ()) -> dict:
    return run_task(RunOptions(upstream=upstream, task="custom", data_root=tmp, results_dir=tmp / "results",
                               cache_dir=tmp / "cache", max_steps=steps, device="cpu", profile="demo",
                               overrides=[f"data.manifest={manifest}", "train.eval_every=20", *extra]))


def results_rows(tmp: Path) -> list[dict]:
    with open(tmp / "results" / "results.csv") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- each task type end to end
def test_classification_learns_speech_vs_noise_above_chance(tiny_corpus, tmp_path):
    rows = speech_commands_rows(tiny_corpus)
    manifest = write_csv(tmp_path / "speech_or_noise.csv", ["path", "split", "start", "end", "label"],
                         [[r["path"], r["split"], r["start"], r["end"], "noise" if r["word"] is None else "speech"]
                          for r in rows])
    summary = run(manifest, tmp_path)
    test = [r for r in rows if r["split"] == "test"]
    chance = 100.0 * max(sum(r["word"] is None for r in test), sum(r["word"] is not None for r in test)) / len(test)
    assert summary["metrics"]["test"]["accuracy"] > chance + 10  # chance = always the majority class
    assert 0 <= summary["metrics"]["test"]["macro_f1"] <= 100
    rows_out = results_rows(tmp_path)
    assert {r["task"] for r in rows_out} == {"speech_or_noise"}  # the row label is the manifest's name
    assert {r["metric"] for r in rows_out} == {"accuracy", "macro_f1"}
    assert Path(summary["run_dir"]).parent.name == "speech_or_noise"
    preds = [json.loads(line) for line in (Path(summary["run_dir"]) / "predictions" / "test.jsonl").open()]
    assert len(preds) == len(test) and {p["prediction"] for p in preds} <= {"speech", "noise"}
    report = build_report(tmp_path / "results")
    assert report.table["speech_or_noise accuracy"].iloc[0] == pytest.approx(summary["metrics"]["test"]["accuracy"])
    assert report.table["SUPERB_s"].isna().all()  # a manifest task is in no SUPERB score


def test_ctc_transcription_of_keywords_gets_cer_below_100(tiny_corpus, tmp_path):
    rows = speech_commands_rows(tiny_corpus, words=None, noise=False)
    manifest = write_csv(tmp_path / "words.csv", ["path", "split", "text"],
                         [[r["path"], r["split"], r["word"]] for r in rows])
    summary = run(manifest, tmp_path, upstream="fbank", steps=300,
                  extra=("optimizer.lr=5e-3", "head.ctc.num_layers=1", "train.eval_every=100"))
    test = summary["metrics"]["test"]
    assert test["cer"] < 100 and 0 <= test["wer"] <= 100
    assert {r["metric"] for r in results_rows(tmp_path)} == {"cer", "wer"}


def test_multilabel_and_regression_runs_score_with_their_metrics(tiny_corpus, tmp_path):
    rows = speech_commands_rows(tiny_corpus)
    manifest = tmp_path / "tags.jsonl"
    manifest.write_text("".join(json.dumps({"path": r["path"], "split": r["split"], "start": r["start"],
                                            "end": r["end"],
                                            "labels": "noise" if r["word"] is None else f"speech;{r['word']}"}) + "\n"
                                for r in rows))
    summary = run(manifest, tmp_path / "ml")
    test = summary["metrics"]["test"]
    assert set(test) == {"mAP", "micro_f1"} and 0 < test["mAP"] <= 100 and 0 <= test["micro_f1"] <= 100
    pred = json.loads((Path(summary["run_dir"]) / "predictions" / "test.jsonl").open().readline())["prediction"]
    assert set(pred["probabilities"]) == {"noise", "speech", *WORDS}

    levels = write_csv(tmp_path / "level.csv", ["path", "split", "start", "end", "value"],
                       [[r["path"], r["split"], r["start"], r["end"], f"{rms_db(r):.3f}"] for r in rows])
    summary = run(levels, tmp_path / "reg", steps=400, extra=("train.eval_every=100",))
    test = summary["metrics"]["test"]
    assert set(test) == {"mae", "pearson", "spearman"}
    train_mean = np.mean([rms_db(r) for r in rows if r["split"] == "train"])
    baseline = np.mean([abs(rms_db(r) - train_mean) for r in rows if r["split"] == "test"])
    assert test["mae"] < baseline and test["pearson"] > 0  # better than always predicting the train mean


def test_task_type_override_picks_one_of_several_target_columns(tiny_corpus, tmp_path):
    rows = speech_commands_rows(tiny_corpus, noise=False)
    manifest = write_csv(tmp_path / "both.csv", ["path", "split", "label", "text"],
                         [[r["path"], r["split"], r["word"], r["word"]] for r in rows])
    with pytest.raises(ManifestError, match="several target columns"):
        load_manifest(manifest)
    assert load_manifest(manifest, task_type="transcription").task_type == "transcription"


# ---------------------------------------------------------------- bad manifests: every problem at once, with lines
@pytest.fixture()
def clips(tiny_corpus) -> list[str]:
    return [r["path"] for r in speech_commands_rows(tiny_corpus, noise=False)][:6]


def problems_of(path: Path, **kw) -> str:
    with pytest.raises(ManifestError) as e:
        load_manifest(path, **kw)
    return str(e.value)


def test_missing_columns_and_missing_target(tmp_path, clips):
    msg = problems_of(write_csv(tmp_path / "a.csv", ["path", "label"], [[clips[0], "x"]]))
    assert "missing column(s) split" in msg
    msg = problems_of(write_csv(tmp_path / "b.csv", ["path", "split"], [[clips[0], "train"]]))
    assert "no target column" in msg and "label" in msg and "value" in msg


def test_unknown_split_duplicate_id_missing_audio_empty_split_listed_together(tmp_path, clips):
    rows = [[clips[0], "train", "a"], [clips[1], "validation", "a"], [clips[0], "train", "a"],
            [str(tmp_path / "gone.wav"), "test", "a"], [clips[2], "test", "a"]]
    msg = problems_of(write_csv(tmp_path / "m.csv", ["path", "split", "label"], rows))
    assert "line 3: split 'validation' is not one of train, dev, test" in msg
    assert "line 4: duplicate id" in msg and "first on line 2" in msg
    assert f"line 5: audio file {tmp_path / 'gone.wav'} not found" in msg
    assert "split 'dev' has no entries" in msg  # its only entry had a bad split value
    assert msg.count("\n  ") == 4 and "4 problem(s)" in msg


def test_empty_split_reported(tmp_path, clips):
    msg = problems_of(write_csv(tmp_path / "m.csv", ["path", "split", "label"],
                                [[clips[0], "train", "a"], [clips[1], "test", "a"]]))
    assert "split 'dev' has no entries" in msg


def test_dev_or_test_label_unseen_in_train(tmp_path, clips):
    msg = problems_of(write_csv(tmp_path / "m.csv", ["path", "split", "label"],
                                [[clips[0], "train", "a"], [clips[1], "dev", "b"], [clips[2], "test", "a"]]))
    assert "line 3: dev label 'b' never occurs in train" in msg
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"path": clips[0], "split": "train", "labels": "a;b"}, {"path": clips[1], "split": "dev", "labels": "a"},
        {"path": clips[2], "split": "test", "labels": "b;c"}]) + "\n")
    assert "line 3: test label 'c' never occurs in train" in problems_of(path)


def test_non_numeric_values_and_bad_start_end(tmp_path, clips):
    rows = [[clips[0], "train", "", "", "3.5"], [clips[1], "dev", "", "", "good"], [clips[2], "test", "x", "", "1"],
            [clips[3], "test", "0.5", "0.2", "2"], [clips[4], "test", "0", "99", "2"],
            [clips[5], "train", "0", "0.3", "1"], [clips[5], "train", "0.2", "0.5", "1"]]
    msg = problems_of(write_csv(tmp_path / "m.csv", ["path", "split", "start", "end", "value"], rows))
    assert "line 3: value 'good' is not a number" in msg
    assert "line 4: start 'x' is not a number of seconds >= 0" in msg
    assert "line 5: end 0.2 s is not after start 0.5 s" in msg
    assert "line 6: end 99 s is past the end of" in msg
    assert "line 8: start/end [0.2, 0.5) overlaps line 7's [0, 0.3)" in msg


def test_skip_bad_audio_keeps_missing_files_for_the_engine_to_skip(tmp_path, clips):
    rows = [[clips[0], "train", "a"], [str(tmp_path / "gone.wav"), "train", "a"], [clips[1], "dev", "a"],
            [clips[2], "test", "a"]]
    path = write_csv(tmp_path / "m.csv", ["path", "split", "label"], rows)
    assert "not found" in problems_of(path)
    manifest = load_manifest(path, skip_bad_audio=True)
    assert [e.missing for e in manifest.split("train")] == [False, True]


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path, clips):
    import shutil

    for k, c in enumerate(clips[:3]):
        (tmp_path / "audio").mkdir(exist_ok=True)
        shutil.copy(c, tmp_path / "audio" / f"{k}.wav")
    path = write_csv(tmp_path / "m.csv", ["path", "split", "label", "speaker"],
                     [["audio/0.wav", "train", "a", "s1"], ["audio/1.wav", "dev", "a", "s2"],
                      ["audio/2.wav", "test", "a", "s3"]])
    m = load_manifest(path)
    assert [e.path for e in m.entries] == [tmp_path / "audio" / f"{k}.wav" for k in range(3)]
    assert [e.speaker for e in m.entries] == ["s1", "s2", "s3"] and m.entries[0].duration > 0.1


def test_cli_custom_task_errors_exit_2_with_all_problems(tmp_path, clips):
    path = write_csv(tmp_path / "bad.csv", ["path", "split", "label"],
                     [[clips[0], "train", "a"], [str(tmp_path / "x.wav"), "dev", "a"], [clips[1], "tst", "a"]])
    proc = subprocess.run([sys.executable, "run_benchmark.py", "--upstream", "fbank", "--task", "custom",
                           "--manifest", str(path), "--results-dir", str(tmp_path / "r")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "line 3: audio file" in proc.stderr and "line 4: split 'tst'" in proc.stderr
    assert not (tmp_path / "r" / "results.csv").exists()
    proc = subprocess.run([sys.executable, "run_benchmark.py", "--upstream", "fbank", "--task", "ks", "--manifest",
                           str(path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--manifest is for --task custom" in proc.stderr


def test_lhotse_cutset_is_read_with_lhotse_and_trains(tiny_corpus, tmp_path):
    lhotse = pytest.importorskip("lhotse")
    rows = speech_commands_rows(tiny_corpus)
    cuts = []
    for k, r in enumerate(rows):
        rec = lhotse.Recording.from_file(r["path"], recording_id=f"rec{k}")
        start = float(r["start"] or 0.0)
        dur = (float(r["end"]) - start) if r["end"] != "" else rec.duration
        # a supervision's start is relative to its cut (lhotse's convention); speakers stay within a split
        sup = lhotse.SupervisionSegment(id=f"sup{k}", recording_id=rec.id, start=0.0, duration=dur,
                                        speaker=f"{r['split']}-spk{k % 3}",
                                        custom={"label": "noise" if r["word"] is None else "speech",
                                                "split": r["split"]})
        cuts.append(lhotse.MonoCut(id=f"cut{k}", start=start, duration=dur, channel=0, recording=rec,
                                   supervisions=[sup]))
    path = tmp_path / "speech_noise_cuts.jsonl.gz"
    lhotse.CutSet.from_cuts(cuts).to_file(path)
    manifest = load_manifest(path)
    assert manifest.task_type == "classification" and len(manifest.entries) == len(rows)
    first = manifest.entries[-1]  # the last noise slice
    assert first.start == pytest.approx(float(rows[-1]["start"])) and first.duration == pytest.approx(1.0)
    assert first.speaker == f"{rows[-1]['split']}-spk{(len(rows) - 1) % 3}"
    summary = run(path, tmp_path, steps=20)
    assert Path(summary["run_dir"]).parent.name == "speech_noise_cuts"


def test_manifest_from_a_folder_of_class_folders(tiny_corpus, tmp_path, capsys):
    from tasks.manifest import main as manifest_main

    out = tmp_path / "words.csv"
    folder = tiny_corpus / "speech_commands_v0.01"
    assert manifest_main([str(folder), "--exclude", "_background_noise_", "--out", str(out)]) == 0
    m = load_manifest(out)  # passes every check: no dev/test label is missing from train
    words = {p.name for p in folder.iterdir() if p.is_dir() and p.name != "_background_noise_"}
    assert m.task_type == "classification" and {e.target for e in m.entries} == words
    assert len(m.entries) == sum(1 for _ in folder.glob("*/*.wav")) - sum(1 for _ in folder.glob("_background_noise_/*"))
    assert m.split("dev") and m.split("test")
    assert "wrote" in capsys.readouterr().out
    assert manifest_main([str(tmp_path / "nothing"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "not a folder" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


def test_skip_bad_audio_run_skips_and_lists_missing_files(tiny_corpus, tmp_path):
    rows = speech_commands_rows(tiny_corpus, noise=False)
    body = [[r["path"], r["split"], r["word"]] for r in rows] + [[str(tmp_path / "gone.wav"), "train", "yes"]]
    manifest = write_csv(tmp_path / "kw.csv", ["path", "split", "label"], body)
    summary = run_task(RunOptions(upstream=TINY_UPSTREAM, task="custom", data_root=tmp_path, skip_bad_audio=True,
                                  results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", max_steps=5,
                                  device="cpu", overrides=[f"data.manifest={manifest}", "train.eval_every=5"]))
    skipped = json.loads((Path(summary["run_dir"]) / "skipped_audio.json").read_text())
    assert list(skipped) == [str(tmp_path / "gone.wav")] and summary["skipped_audio"] == 1


def test_manifest_run_resumes_and_an_edited_manifest_is_another_run(tiny_corpus, tmp_path, monkeypatch):
    from tests.test_engine import Killed, die_after

    rows = speech_commands_rows(tiny_corpus, noise=False)
    manifest = write_csv(tmp_path / "kw.csv", ["path", "split", "label"],
                         [[r["path"], r["split"], r["word"]] for r in rows])

    def opts(**kw) -> RunOptions:
        return RunOptions(upstream=TINY_UPSTREAM, task="custom", data_root=tmp_path, results_dir=tmp_path / "results",
                          cache_dir=tmp_path / "cache", max_steps=10, device="cpu",
                          overrides=[f"data.manifest={manifest}", "train.eval_every=5"], **kw)

    die_after(monkeypatch, "custom", 6)  # the run dies in update 7, after its step-5 checkpoint
    with pytest.raises(Killed):
        run_task(opts())
    monkeypatch.undo()
    resumed = run_task(opts(resume=True))
    assert resumed["steps"] == 10 and len(list((tmp_path / "results" / "tiny_frames" / "kw").iterdir())) == 1
    write_csv(manifest, ["path", "split", "label"], [[r["path"], r["split"], r["word"]] for r in rows[:-1]])
    edited = run_task(opts(resume=True))
    assert Path(edited["run_dir"]).name != Path(resumed["run_dir"]).name


def test_custom_is_not_part_of_the_suite():
    from tasks.registry import get_task_class, list_tasks

    assert "custom" not in list_tasks() and "custom" in list_tasks(suite_only=False)  # --task all / the demo skip it
    assert get_task_class("custom").name == "custom"
