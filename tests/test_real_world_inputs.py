"""Real-world dataset layouts that once gave a wrong result with no message (issue: nothing silently wrong):
symlinked folders, macOS ``._`` companions, stereo channels, multi-supervision lhotse cuts, speaker and audio leaks
across split boundaries, diarization references that do not match the recordings, sharded checkpoints. Each case
asserts the right value, or the one error line that names the file/ids."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from common.audio import write_audio
from common.folders import scan_tree


def _wav(path: Path, seconds: float = 0.6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    write_audio(path, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32))
    return path


def _linked_dataset(tmp_path: Path) -> Path:
    """``root/{a,b}`` hold 2 and 3 files; ``root/c`` is a link to a folder outside (4 files, one in a sub-folder);
    ``root/c/loop`` links back to ``root`` (a loop), ``root/d`` is a second link to ``c``'s target, and ``._*``
    companions sit next to the files."""
    root, outside = tmp_path / "root", tmp_path / "elsewhere" / "speakers"
    for k in range(2):
        _wav(root / "a" / f"a{k}.wav", seed=k)
    for k in range(3):
        _wav(root / "b" / f"b{k}.wav", seed=10 + k)
    for k in range(3):
        _wav(outside / f"c{k}.wav", seed=20 + k)
    _wav(outside / "deeper" / "c3.wav", seed=30)
    (root / "c").symlink_to(outside, target_is_directory=True)
    (outside / "loop").symlink_to(root, target_is_directory=True)
    (root / "d").symlink_to(outside, target_is_directory=True)
    (root / "a" / "._a0.wav").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (outside / "._c0.wav").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    return root


def test_folder_scan_follows_links_once_guards_loops_and_skips_macos_companions(tmp_path):
    root = _linked_dataset(tmp_path)
    assert len(list(root.rglob("*.wav"))) == 6  # what Path.rglob sees on Python 3.11: 5 files + 1 companion
    scan = scan_tree(root, (".wav",))
    assert scan.counts == {"a": 2, "b": 3, "c": 4}
    assert len(scan.files) == 9 and not any(p.name.startswith("._") for p in scan.files)
    reasons = {p.relative_to(root).as_posix(): r for p, r in scan.skipped}
    assert reasons["a/._a0.wav"].startswith("macOS") and reasons["c/._c0.wav"].startswith("macOS")
    assert reasons["c/loop"].startswith("link loop") and reasons["d"].startswith("second link")
    assert scan.summary() == (f"{root}: 9 file(s) (a 2, b 3, c 4); skipped 4 (1 link loop, 2 macOS '._' companion, "
                              "1 second link)")
    assert scan_tree(root, (".wav",), exclude=("c",)).counts == {"a": 2, "b": 3, "d": 4}


def test_distillation_data_follows_symlinked_folders_and_lists_what_it_skipped(tmp_path, caplog):
    from training.data import DataConfig, SkipReport, training_audio

    root = _linked_dataset(tmp_path)
    report = SkipReport()
    with caplog.at_level("INFO", logger="training.data"):
        entries = training_audio([root], DataConfig(min_item_seconds=0.1), report)
    assert len(entries) == 9  # was 5: the linked folder was never entered
    assert f"audio found in {root}: 9 file(s) (a 2, b 3, c 4)" in caplog.text
    skipped = {Path(p).name: r for p, r in report.skipped}
    assert skipped["._a0.wav"].startswith("macOS") and skipped["loop"].startswith("link loop")


def test_manifest_from_folder_follows_links_and_prints_counts_per_label(tmp_path, capsys):
    from tasks.manifest import load_manifest, main as manifest_main

    root = tmp_path / "words"
    outside = tmp_path / "shared" / "yes"
    for k in range(8):
        _wav(outside / f"y{k}.wav", seed=k)
    (root).mkdir()
    (root / "yes").symlink_to(outside, target_is_directory=True)
    for k in range(3):  # only the nested folder of "no" is a link
        _wav(tmp_path / "shared" / "no_nested" / f"n{k}.wav", seed=50 + k)
    (root / "no").mkdir()
    (root / "no" / "batch1").symlink_to(tmp_path / "shared" / "no_nested", target_is_directory=True)
    (root / "no" / "._x.wav").write_bytes(b"\x00\x05\x16\x07")
    out = tmp_path / "m.csv"
    assert manifest_main([str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"found {root}: 11 file(s) (no 3, yes 8); skipped 1 (1 macOS '._' companion)" in printed
    assert "._x.wav" in printed
    m = load_manifest(out)
    assert sorted({e.target: sum(x.target == e.target for x in m.entries) for e in m.entries}.items()) == \
        [("no", 3), ("yes", 8)]


# ---------------------------------------------------------------- sharded Hugging Face checkpoints
@pytest.mark.parametrize("family", ["hubert", "wav2vec2", "wavlm"])
def test_sharded_safetensors_hf_dir_loads_and_a_missing_shard_is_named(family, tmp_path):
    import torch

    from tests.fixtures.upstreams import tiny_family_model
    from upstream import build_upstream
    from upstream.convert import ConversionError

    model = tiny_family_model(family)
    model.save_pretrained(tmp_path / "whole")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) >= 3 and (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    wav = torch.randn(8000, generator=torch.Generator().manual_seed(0)) * 0.1
    whole = build_upstream(tmp_path / "whole")([wav]).hidden_states
    sharded = build_upstream(tmp_path / "sharded")([wav]).hidden_states
    assert len(whole) == len(sharded) and all(torch.equal(a, b) for a, b in zip(whole, sharded))
    (tmp_path / "sharded" / shards[1]).unlink()
    with pytest.raises(ConversionError, match=shards[1]):
        build_upstream(tmp_path / "sharded")


# ---------------------------------------------------------------- channels and multi-supervision lhotse cuts
def _stereo(path: Path, seconds: float = 6.0) -> Path:
    """A stereo conversation: a different random signal on each side."""
    import soundfile as sf

    rng = np.random.default_rng(7)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (0.2 * rng.standard_normal((int(16000 * seconds), 2))).astype(np.float32), 16000,
             subtype="PCM_16")
    return path


def test_lhotse_cut_on_channel_1_reads_that_channel_and_per_channel_cuts_do_not_overlap(tmp_path):
    from lhotse import CutSet, MonoCut, Recording

    from common.utterance import load_utterance_audio
    from tasks.custom import CustomConfig, ManifestTask

    rec = Recording.from_file(str(_stereo(tmp_path / "conv.wav")))
    cuts = []
    for k, split in enumerate(("train", "train", "dev", "test")):
        for ch in (0, 1):  # both sides of the same span: a different speaker each
            cuts.append(MonoCut(id=f"c{k}_{ch}", start=1.0 * k + 0.25, duration=1.0, channel=ch, recording=rec,
                                custom={"split": split, "label": f"side{ch}"}))
    path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    task = ManifestTask(CustomConfig(), tmp_path)
    task.config.data.manifest = str(path)
    utts = {u.id: u for s in ("train", "dev", "test") for u in task.load_split(s)}  # no "overlaps" refusal
    assert len(utts) == 8 and utts["c1_1"].channel == 1 and utts["c1_0"].channel == 0
    for cut in cuts:
        ours = load_utterance_audio(utts[cut.id]).numpy()
        theirs = cut.load_audio()[0]
        assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 1e-6
    downmix = load_utterance_audio(type(utts["c1_1"])(id="x", path=utts["c1_1"].path, start=1.25, duration=1.0))
    assert np.abs(downmix.numpy() - load_utterance_audio(utts["c1_1"]).numpy()).max() > 0.05  # the old reading


def test_manifest_channel_column_overlaps_only_on_a_shared_channel(tmp_path):
    from tasks.manifest import ManifestError, load_manifest

    _stereo(tmp_path / "conv.wav")
    _wav(tmp_path / "mono.wav", seconds=3.0)
    header = "path,split,start,end,channel,label\n"
    ok = ["conv.wav,train,0,1,0,a", "conv.wav,train,0,1,1,b", "mono.wav,dev,0,1,,a", "mono.wav,test,1,2,,b",
          "conv.wav,train,1,2,,a"]
    (tmp_path / "ok.csv").write_text(header + "\n".join(ok) + "\n")
    m = load_manifest(tmp_path / "ok.csv")
    assert [e.channel for e in m.entries] == [0, 1, None, None, None]
    assert m.entries[0].id == "conv.wav@0-1#ch0" and m.entries[1].id == "conv.wav@0-1#ch1"
    bad = ok + ["conv.wav,dev,0.5,1.5,1,b", "conv.wav,test,0,1,x,a", "conv.wav,test,2,3,1.5,a"]
    (tmp_path / "bad.csv").write_text(header + "\n".join(bad) + "\n")
    with pytest.raises(ManifestError) as e:
        load_manifest(tmp_path / "bad.csv")
    text = str(e.value)
    assert "4 problem(s)" in text
    assert "line 7: start/end [0.5, 1.5) channel 1 overlaps line 3's [0, 1) channel 1 of" in text
    assert "line 6: start/end [1, 2) overlaps line 7's [0.5, 1.5) channel 1 of" in text  # no channel: all of them
    assert "line 8: channel 'x' is not a channel number" in text and "line 9: channel '1.5'" in text


def test_lhotse_channel_past_the_file_is_named(tmp_path):
    from common.audio import AudioError, load_audio

    _wav(tmp_path / "mono.wav")
    with pytest.raises(AudioError, match=r"mono.wav has 1 channel\(s\); channel 1 was asked for"):
        load_audio(tmp_path / "mono.wav", channel=1)


def test_lhotse_cut_with_several_supervisions_gives_what_trim_to_supervisions_gives(tmp_path):
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

    from tasks.manifest import ManifestError, load_manifest

    rec = Recording.from_file(str(_stereo(tmp_path / "conv.wav", seconds=9.0)))
    cuts = []
    for k, split in enumerate(("train", "dev", "test")):
        sups = [SupervisionSegment(id=f"u{k}_{j}", recording_id=rec.id, start=0.9 * j + 0.1, duration=0.7,
                                   channel=j % 2, text=f"words {k} {j}", custom={"split": split}) for j in range(3)]
        cuts.append(MonoCut(id=f"long{k}", start=3.0 * k, duration=3.0, channel=0, recording=rec, supervisions=sups,
                            custom={"split": split}))
    cutset = CutSet.from_cuts(cuts)
    cutset.to_file(tmp_path / "cuts.jsonl.gz")
    m = load_manifest(tmp_path / "cuts.jsonl.gz")
    want = list(cutset.trim_to_supervisions(keep_overlapping=False))
    assert len(m.entries) == 9 == len(want)  # was 3 entries, each with the first supervision's text
    for entry, cut in zip(m.entries, want):
        assert (entry.id, entry.target, entry.channel) == (cut.id, cut.supervisions[0].text, cut.channel)
        assert entry.start == pytest.approx(cut.start, abs=1e-6) and entry.duration == pytest.approx(cut.duration)
    # a two-channel cut with nothing saying which channel: an error that names the cut
    from lhotse.cut import MultiCut

    both = MultiCut(id="both_sides", start=0.0, duration=1.0, channel=[0, 1], recording=rec,
                    custom={"split": "train", "label": "a"})
    CutSet.from_cuts([both]).to_file(tmp_path / "multi.jsonl.gz")
    with pytest.raises(ManifestError, match="cut both_sides: holds channels \\[0, 1\\]"):
        load_manifest(tmp_path / "multi.jsonl.gz")


# ---------------------------------------------------------------- leaks across split boundaries
def _copy(tiny_corpus: Path, tmp_path: Path, *names: str) -> Path:
    import shutil

    root = tmp_path / "data"
    for name in names:
        shutil.copytree(tiny_corpus / name, root / name)
    return root


def _audit(task: str, root: Path) -> list[str]:
    from tasks.registry import build_task

    return build_task(task, root, profile="demo").audit().problems


def test_the_offline_corpus_has_no_leak_and_matching_references(tiny_corpus):
    """The demo still runs: no speaker or audio in two splits, every RTTM matching its recordings."""
    from tasks.registry import list_tasks

    for task in list_tasks():
        assert _audit(task, tiny_corpus) == [], task


def test_asv_test_speakers_copied_into_dev_wav_are_named(tiny_corpus, tmp_path):
    import shutil

    from common import datasets

    root = _copy(tiny_corpus, tmp_path, datasets.VOXCELEB1)
    vox = root / datasets.VOXCELEB1
    shutil.copytree(vox / "test" / "wav" / "id10270", vox / "dev" / "wav" / "id10270")  # the whole speaker
    problems = _audit("asv", root)
    leak = [p for p in problems if p.startswith("speaker id10270 is in both")]
    assert len(leak) == 1 and "VoxCeleb1 verification" in leak[0]
    assert "dev/wav/id10270/" in leak[0] and "test/wav/id10270/" in leak[0]
    # the copies are the same audio as the test files: named by content too, whatever their path
    copied = [p for p in problems if "share" in p and "(same content)" in p]
    assert copied and "dev/wav/id10270" in copied[0] and "test/wav/id10270" in copied[0]


def test_asv_a_test_file_copied_under_another_speaker_is_caught_by_content(tiny_corpus, tmp_path):
    import shutil

    from common import datasets

    root = _copy(tiny_corpus, tmp_path, datasets.VOXCELEB1)
    vox = root / datasets.VOXCELEB1
    test_file = sorted((vox / "test" / "wav").rglob("*.wav"))[0]
    target = sorted((vox / "dev" / "wav").glob("*/*"))[0] / "99999.wav"
    shutil.copy(test_file, target)  # renamed, under a development speaker: only its bytes give it away
    problems = _audit("asv", root)
    assert any("share 1 audio file(s) (same content)" in p and str(target) in p and str(test_file) in p
               for p in problems), problems


def test_er_test_session_speaker_in_a_training_session_is_named(tiny_corpus, tmp_path):
    import shutil

    from common import datasets

    root = _copy(tiny_corpus, tmp_path, datasets.IEMOCAP)
    base = root / datasets.IEMOCAP
    src = next((base / "Session1" / "sentences" / "wav").iterdir())  # a Session1 dialog (test of fold 1)
    dialog = src.name
    shutil.copytree(src, base / "Session2" / "sentences" / "wav" / dialog)
    shutil.copy(base / "Session1" / "dialog" / "EmoEvaluation" / f"{dialog}.txt",
                base / "Session2" / "dialog" / "EmoEvaluation" / f"{dialog}.txt")
    problems = _audit("er", root)
    spk = [p for p in problems if p.startswith("speaker Ses01")]
    assert spk and "in both train and test" in spk[0] and "leave-one-session-out" in spk[0]
    train_side, test_side = spk[0].split("; test: ")
    assert "/Session2/sentences/wav/" in train_side and "/Session1/sentences/wav/" in test_side


def test_manifest_speaker_in_two_splits_is_named(tmp_path):
    from tasks.custom import CustomConfig, ManifestTask

    for k in range(6):
        _wav(tmp_path / f"u{k}.wav", seed=k)
    rows = ["u0.wav,train,alice,a", "u1.wav,train,bob,b", "u2.wav,dev,carol,a", "u3.wav,test,alice,b",
            "u4.wav,test,dave,a", "u5.wav,dev,,b"]
    (tmp_path / "m.csv").write_text("path,split,speaker,label\n" + "\n".join(rows) + "\n")
    config = CustomConfig()
    config.data.manifest = str(tmp_path / "m.csv")
    problems = ManifestTask(config, tmp_path).audit().problems
    assert len(problems) == 1 and problems[0].startswith("speaker alice is in both train and test")
    assert "u0.wav" in problems[0] and "u3.wav" in problems[0]


# ---------------------------------------------------------------- diarization references vs recordings
def test_sd_rttm_must_name_exactly_the_recordings(tiny_corpus, tmp_path):
    from common import datasets

    root = _copy(tiny_corpus, tmp_path, datasets.LIBRI2MIX)
    rttm = root / datasets.LIBRI2MIX / "kaldi" / "test" / "rttm"
    lines = rttm.read_text().splitlines()
    first = lines[0].split()[1]
    kept = [line for line in lines if line.split()[1] != first]  # one recording loses its reference
    kept.append("SPEAKER ghost_mix 1 0.000 1.000 <NA> <NA> 999 <NA> <NA>")  # and a reference of no recording
    rttm.write_text("\n".join(kept) + "\n")
    problems = _audit("sd", root)
    assert len(problems) == 1 and problems[0].startswith(f"test: {rttm}: the reference does not match")
    assert f"1 recording id(s) in {rttm} but not in {rttm.with_name('wav.scp')}: ghost_mix" in problems[0]
    assert f"1 recording id(s) in {rttm.with_name('wav.scp')} but not in {rttm}: {first}" in problems[0]


def test_sd_speaker_in_two_splits_is_named(tiny_corpus, tmp_path):
    from common import datasets

    root = _copy(tiny_corpus, tmp_path, datasets.LIBRI2MIX)
    kaldi = root / datasets.LIBRI2MIX / "kaldi"
    test_spk = (kaldi / "test" / "utt2spk").read_text().split()[1]
    rows = [line.split() for line in (kaldi / "train" / "utt2spk").read_text().splitlines()]
    renamed = rows[0][1]  # a training speaker renamed to a test speaker: the same person on both sides
    (kaldi / "train" / "utt2spk").write_text("".join(f"{u} {test_spk if s == renamed else s}\n" for u, s in rows))
    problems = _audit("sd", root)
    assert any(p.startswith(f"speaker {test_spk} is in both train and test (Libri2Mix") for p in problems), problems


def test_lhotse_supervision_outside_its_cut_is_named(tmp_path):
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

    from tasks.manifest import ManifestError, load_manifest

    rec = Recording.from_file(str(_stereo(tmp_path / "conv.wav")))
    cuts = [MonoCut(id=f"c{k}", start=2.0 * k, duration=1.0, channel=0, recording=rec, custom={"split": split},
                    supervisions=[SupervisionSegment(id=f"s{k}", recording_id=rec.id, start=2.0 * k, duration=1.0,
                                                     text="absolute times")])  # k > 0: outside its cut
            for k, split in enumerate(("train", "dev", "test"))]
    CutSet.from_cuts(cuts).to_file(tmp_path / "cuts.jsonl.gz")
    with pytest.raises(ManifestError) as e:
        load_manifest(tmp_path / "cuts.jsonl.gz")
    assert "4 problem(s)" in str(e.value)  # every such cut, not only the first (+ dev, test left empty)
    assert "cut c1: supervision s1 spans [2, 3) s, outside the cut's [0, 1)" in str(e.value)
    assert "cut c2: supervision s2 spans [4, 5) s" in str(e.value)


# ---------------------------------------------------------------- siblings: layouts, lists and label files
def test_task_loaders_skip_macos_companions_and_say_so(tiny_corpus, tmp_path, caplog):
    from common import datasets

    root = _copy(tiny_corpus, tmp_path, datasets.SPEECH_COMMANDS, datasets.SPEECH_COMMANDS_TEST, datasets.VOXCELEB1,
                 datasets.LIBRISPEECH)
    junk = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "  # AppleDouble header bytes
    clean = {t: {s: len(_load(t, tiny_corpus, s)) for s in ("train", "dev", "test")} for t in ("ks", "asv", "asr")}
    for wav in [next((root / datasets.SPEECH_COMMANDS).glob("yes/*.wav")),
                next((root / datasets.SPEECH_COMMANDS_TEST).glob("*/*.wav")),
                next((root / datasets.VOXCELEB1 / "dev" / "wav").glob("*/*/*.wav"))]:
        wav.with_name("._" + wav.name).write_bytes(junk)
    trans = next((root / datasets.LIBRISPEECH).glob("train-clean-100/*/*/*.trans.txt"))
    trans.with_name("._" + trans.name).write_bytes(junk)  # read as a transcript, it stopped the run
    with caplog.at_level("WARNING", logger="common.folders"):
        for task in ("ks", "asv", "asr"):
            assert _audit(task, root) == [], task
            assert {s: len(_load(task, root, s)) for s in ("train", "dev", "test")} == clean[task], task
    assert caplog.text.count("macOS '._' companion") >= 4 and "._" + trans.name in caplog.text


def _load(task: str, root: Path, split: str):
    from tasks.registry import build_task

    return build_task(task, root, profile="demo").load_split(split)


def test_kaldi_files_describing_the_same_ids_must_agree_and_every_mismatch_is_named(tiny_corpus, tmp_path):
    from common import datasets

    root = _copy(tiny_corpus, tmp_path, datasets.LIBRI2MIX)
    kaldi = root / datasets.LIBRI2MIX / "kaldi" / "dev"
    segments = kaldi.joinpath("segments").read_text().splitlines()
    dropped_utt, reco = segments[0].split()[:2]
    kept = [s for s in segments if s.split()[1] != reco]  # one recording loses every segment
    kaldi.joinpath("segments").write_text("\n".join(kept) + "\n")
    kaldi.joinpath("reco2dur").write_text(kaldi.joinpath("reco2dur").read_text() + "ghost 3.0\n")
    problems = _audit("sd", root)
    assert len(problems) == 1 and problems[0].startswith(f"dev: Kaldi dir {kaldi}: ")
    text = problems[0]
    assert f"in {kaldi / 'utt2spk'} but not in {kaldi / 'segments'}: {dropped_utt}" in text
    assert f"1 recording id(s) in {kaldi / 'reco2dur'} but not in {kaldi / 'wav.scp'}: ghost" in text
    assert f"1 recording(s) of {kaldi / 'wav.scp'} have no line in {kaldi / 'segments'}: {reco}" in text
    kaldi.joinpath("segments").write_text("\n".join(segments + [segments[1]]) + "\n")
    assert f"segments:{len(segments) + 1}: duplicate utterance {segments[1].split()[0]!r} (first on line 2)" in \
        _audit("sd", root)[0]


def test_sd_every_missing_mixture_is_named(tiny_corpus, tmp_path):
    from common import datasets

    root = _copy(tiny_corpus, tmp_path, datasets.LIBRI2MIX)
    kaldi = root / datasets.LIBRI2MIX / "kaldi" / "test"
    paths = [kaldi / line.split()[1] for line in kaldi.joinpath("wav.scp").read_text().splitlines()]
    for p in paths[:2]:
        p.unlink()
    (problem,) = _audit("sd", root)
    assert "2 audio file(s) of" in problem and str(paths[0]) in problem and str(paths[1]) in problem


def test_iemocap_utterance_labelled_twice_and_every_missing_file_are_named(tiny_corpus, tmp_path):
    from common import datasets

    root = _copy(tiny_corpus, tmp_path, datasets.IEMOCAP)
    labels = sorted((root / datasets.IEMOCAP / "Session3" / "dialog" / "EmoEvaluation").glob("*.txt"))[0]
    lines = labels.read_text(encoding="latin-1").splitlines()
    first = next(n for n, line in enumerate(lines, 1) if line.startswith("["))
    labels.write_text("\n".join(lines + [lines[first - 1]]) + "\n", encoding="latin-1")
    problems = _audit("er", root)
    assert any(f"{labels}:{len(lines) + 1}: " in p and f"is already labelled at {labels.name}:{first}" in p
               for p in problems), problems
    labels.write_text("\n".join(lines) + "\n", encoding="latin-1")
    wavs = sorted((root / datasets.IEMOCAP / "Session1" / "sentences" / "wav").rglob("*.wav"))[:3]
    for w in wavs:
        w.unlink()
    text = "\n".join(_audit("er", root))
    assert all(str(w) in text for w in wavs if w.stem in text)
    assert "file(s) labelled in" in text and sum(str(w) in text for w in wavs) >= 2


def test_ks_lists_every_file_on_both_lists(tiny_corpus, tmp_path):
    from common import datasets

    root = _copy(tiny_corpus, tmp_path, datasets.SPEECH_COMMANDS, datasets.SPEECH_COMMANDS_TEST)
    ks = root / datasets.SPEECH_COMMANDS
    val = ks.joinpath("validation_list.txt").read_text().split()
    ks.joinpath("testing_list.txt").write_text(ks.joinpath("testing_list.txt").read_text() + "\n".join(val[:3]) + "\n")
    (both,) = [p for p in _audit("ks", root) if "in both validation_list.txt and testing_list.txt" in p]
    assert both.startswith("3 file(s)") and all(v in both for v in val[:3])


def test_lhotse_folder_supervisions_and_recordings_must_name_the_same_recordings(tmp_path):
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    from tasks.manifest import ManifestError, load_manifest

    folder = tmp_path / "manifests"
    folder.mkdir()
    recs = [Recording.from_file(str(_wav(tmp_path / f"r{k}.wav", seconds=1.0, seed=k)), recording_id=f"r{k}")
            for k in range(4)]
    sups = [SupervisionSegment(id=f"s{k}", recording_id=f"r{k}", start=0.0, duration=1.0, text="hello")
            for k in range(3)]  # r3 has no supervision
    sups.append(SupervisionSegment(id="s9", recording_id="ghost", start=0.0, duration=1.0, text="lost"))
    RecordingSet.from_recordings(recs).to_file(folder / "x_recordings_train.jsonl.gz")
    SupervisionSet.from_segments(sups).to_file(folder / "x_supervisions_train.jsonl.gz")
    with pytest.raises(ManifestError) as e:
        load_manifest(folder)
    text = str(e.value)
    assert "1 recording id(s) in " in text and "x_supervisions_train.jsonl.gz but not in" in text and ": ghost" in text
    assert "x_recordings_train.jsonl.gz but not in" in text and text.endswith(": r3")


def test_qbe_ground_truth_naming_unlisted_queries_or_documents_is_named(tiny_corpus, tmp_path):
    from common import datasets

    root = _copy(tiny_corpus, tmp_path, datasets.QUESST14)
    truth = root / datasets.QUESST14 / "scoring" / "groundtruth_quesst14_dev" / "quesst14_dev.rttm"
    truth.write_text(truth.read_text() + "LEXEME quesst14_99999 1 0.0 0.5 quesst14_dev_0003 <NA> <NA> <NA>\n"
                     "LEXEME quesst14_00001 1 0.0 0.5 quesst14_dev_9999 <NA> <NA> <NA>\n")
    text = "\n".join(_audit("qbe", root))
    assert f"{truth}: 2 id(s) that no language key lists" in text
    assert "document quesst14_99999" in text and "query quesst14_dev_9999" in text


def test_sid_names_every_listed_file_that_is_missing(tiny_corpus, tmp_path):
    from common import datasets

    root = _copy(tiny_corpus, tmp_path, datasets.VOXCELEB1)
    vox = root / datasets.VOXCELEB1
    listed = [line.split()[1] for line in vox.joinpath("iden_split.txt").read_text().splitlines()
              if line.startswith("3 ")][:3]
    for rel in listed:
        next(p for p in (vox / "dev" / "wav" / rel, vox / "test" / "wav" / rel) if p.is_file()).unlink()
    (problem,) = [p for p in _audit("sid", root) if p.startswith("test: ")]
    assert "3 file(s) listed in iden_split.txt are in neither" in problem and all(r in problem for r in listed)


def test_distillation_trains_a_file_reached_twice_once(tmp_path):
    from training.data import collect_audio

    a = _wav(tmp_path / "a" / "x.wav")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x_link.wav").symlink_to(a)
    listing = tmp_path / "list.txt"
    listing.write_text("a/x.wav\n")
    got = collect_audio([tmp_path / "a", tmp_path / "b", listing])
    assert got.files == [a]
    assert [(p.name, r.split(" (")[0]) for p, r in got.skipped] == [("x_link.wav", f"same file as {a}")]
