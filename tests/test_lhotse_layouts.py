"""The offline corpus is in the real datasets' layouts, checked by someone else's reader: lhotse's own recipes
(prepare_librispeech, prepare_speechcommands v1, prepare_slu, prepare_voxceleb) run on the tiny corpus and find what
our loaders find. Their output folders are also accepted as ``--task custom`` manifests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks.registry import build_task

lhotse = pytest.importorskip("lhotse")


def test_prepare_librispeech_reads_every_split(tiny_corpus, tmp_path):
    from lhotse.recipes import prepare_librispeech

    out = prepare_librispeech(tiny_corpus / "LibriSpeech", output_dir=tmp_path)
    task = build_task("asr", tiny_corpus)
    for part, split in (("train-clean-100", "train"), ("dev-clean", "dev"), ("test-clean", "test")):
        ours = {u.id: u.transcript for u in task.load_split(split)}
        theirs = {s.id: s.text for s in out[part]["supervisions"]}
        assert theirs == ours


def test_prepare_speechcommands_v1_matches_the_ks_splits(tiny_corpus, tmp_path):
    from lhotse.recipes import prepare_speechcommands

    out = prepare_speechcommands("1", tiny_corpus, output_dir=tmp_path)
    task = build_task("ks", tiny_corpus)
    ours_dev = {u.path for u in task.load_split("dev") if u.label != "_silence_"}
    theirs_dev = {Path(r.sources[0].source) for r in out["valid"]["recordings"]}
    assert ours_dev <= theirs_dev and len(theirs_dev - ours_dev) <= 1  # lhotse adds running_tap.wav as silence
    ours_train = {u.path for u in task.load_split("train") if u.label != "_silence_"}
    theirs_train = {Path(r.sources[0].source) for r in out["train"]["recordings"]}
    assert ours_train == {p for p in theirs_train if p.parent.name != "_background_noise_"}
    assert len(out["test"]["recordings"]) == len(task.load_split("test"))


def test_prepare_slu_reads_fluent_speech_commands(tiny_corpus, tmp_path):
    from lhotse.recipes import prepare_slu

    prepare_slu(tiny_corpus / "fluent_speech_commands_dataset", output_dir=tmp_path)  # returns None in 1.33
    task = build_task("ic", tiny_corpus)
    for part, split in (("train", "train"), ("valid", "dev"), ("test", "test")):
        ours = sorted(u.transcript for u in task.load_split(split))
        theirs = sorted(s.text for s in lhotse.load_manifest(tmp_path / f"slu_supervisions_{part}.jsonl.gz"))
        assert theirs == ours
        # the recipe's output folder is a --task custom manifest too (a transcription task, splits by file name)
    from tasks.manifest import load_manifest

    manifest = load_manifest(tmp_path)
    assert manifest.task_type == "transcription"
    assert sorted(e.target for e in manifest.split("dev")) == sorted(u.transcript for u in task.load_split("dev"))


def test_prepare_voxceleb_reads_vox1_meta_and_our_trial_list(tiny_corpus, tmp_path, monkeypatch):
    import lhotse.recipes.voxceleb as vox

    # The real zips both extract into one wav/ folder (s3prl's layout keeps dev/ and test/ apart): merge the parts
    # (copies: pathlib's rglob, which lhotse uses, does not enter symlinked folders before Python 3.13).
    root = tmp_path / "vox1"
    for part in ("dev", "test"):
        shutil.copytree(tiny_corpus / "VoxCeleb1" / part / "wav", root / "wav", dirs_exist_ok=True)
    shutil.copy(tiny_corpus / "VoxCeleb1" / "vox1_meta.csv", root)
    # lhotse downloads the official trial list into the working folder; give it ours instead (no network in tests)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(vox, "resumable_download", lambda url, filename, **kw: shutil.copy(
        tiny_corpus / "VoxCeleb1" / "veri_test.txt", filename))
    (tmp_path / "manifests").mkdir()
    out = vox.prepare_voxceleb(voxceleb1_root=root, output_dir=tmp_path / "manifests")
    dev_files = list((tiny_corpus / "VoxCeleb1" / "dev" / "wav").rglob("*.wav"))
    test_files = list((tiny_corpus / "VoxCeleb1" / "test" / "wav").rglob("*.wav"))
    assert len(out["train"]["recordings"]) == len(dev_files) and len(out["test"]["recordings"]) == len(test_files)
    assert {s.gender for s in out["train"]["supervisions"]} <= {"m", "f"}
    trials = (tiny_corpus / "VoxCeleb1" / "veri_test.txt").read_text().split("\n")
    n_target = sum(line.startswith("1 ") for line in trials)
    assert len(out["pos_trials"][0]) == n_target and len(out["neg_trials"][0]) == sum(
        line.startswith("0 ") for line in trials)
