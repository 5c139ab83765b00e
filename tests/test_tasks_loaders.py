"""Loaders of PR, ASR, KS, IC, SID and ER on tiny hand-made fixtures in each dataset's real layout."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.datasets import write_all
from tasks.base import DatasetNotFoundError
from tasks.registry import build_task


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_all(tmp_path_factory.mktemp("layouts"))


def test_librispeech_asr_and_pr(root):
    asr = build_task("asr", root)
    train = asr.load_split("train")
    assert [u.id for u in train] == [f"19-100-{n:04d}" for n in range(4)]
    assert train[0].transcript == "YES NO" and abs(train[0].duration - 0.3) < 1e-3
    assert asr.ctc_targets(train[0]) == ["Y", "E", "S", "|", "N", "O", "|", "</s>"]  # s3prl's trailing | and </s>
    pr = build_task("pr", root)
    assert pr.load_split("test")[0].label == ["Y", "EH1", "S", "N", "OW1"]  # CMUdict, stress kept
    assert pr.ctc_targets(pr.load_split("test")[0])[-1] == "<eos>"
    # A .phn.txt beside the transcript wins over CMUdict.
    phn = root / "LibriSpeech" / "dev-clean" / "19" / "101" / "19-101.phn.txt"
    phn.write_text("19-101-0000 y eh1 s\n")
    try:
        assert build_task("pr", root).load_split("dev")[0].label == ["Y", "EH1", "S"]
        phn.write_text("19-101-0000 y eh s\n")  # the 39-phone set of an old corpus: named, not trained on
        with pytest.raises(ValueError, match=r"19-101-0000 .*\['EH'\] are not in SUPERB's stress-marked set"):
            build_task("pr", root).load_split("dev")
    finally:
        phn.unlink()


def test_speech_commands_splits_unknown_and_silence(root):
    ks = build_task("ks", root)
    train, dev, test = (ks.load_split(s) for s in ("train", "dev", "test"))
    assert {u.label for u in train} == {"yes", "no", "_unknown_", "_silence_"}
    assert sum(u.label != "_silence_" for u in train) == 6  # 3 words x 2, held-out lists excluded
    assert sorted(u.id for u in dev if u.label != "_silence_") == ["marvin/spk2_nohash_0.wav", "no/spk2_nohash_0.wav",
                                                                    "yes/spk2_nohash_0.wav"]
    silence = [u for u in train + dev if u.label == "_silence_"]
    assert len(silence) == 3 and all(u.duration == 1.0 for u in silence)  # 3 s of noise -> 3 one-second clips
    assert [u.start for u in silence if u in dev] == [0.0]
    assert sorted(u.label for u in test) == sorted(["yes", "no", "_unknown_", "_silence_"])
    weights = ks.train_sampling_weights(train)
    assert weights[0] == pytest.approx(1 / sum(u.label == train[0].label for u in train))
    assert all(u.effects == (("gain", "-3.0"),) for u in train + dev + test)  # s3prl's sox gain


def test_ks_dev_accuracy_is_the_expectation_of_s3prls_balanced_resample(root):
    # s3prl scores dev on len(dev) draws of WeightedRandomSampler(1 / class count) (speech_commands/expert.py:64-74)
    import numpy as np
    import torch
    from torch.utils.data import WeightedRandomSampler

    ks = build_task("ks", root)
    labels = ["yes"] * 6 + ["no"] * 3 + ["_silence_"] * 1
    preds = ["yes"] * 6 + ["no", "yes", "yes"] + ["_unknown_"]
    utts = [ks.load_split("dev")[0].__class__(id=str(i), path=Path("x"), duration=1.0, label=lab)
            for i, lab in enumerate(labels)]
    got = ks.score("dev", utts, preds)
    assert got["accuracy"] == pytest.approx(100 * (1 + 1 / 3 + 0) / 3)
    assert got["accuracy_unbalanced"] == pytest.approx(70.0)
    assert ks.score("test", utts, preds) == {"accuracy": pytest.approx(70.0)}
    counts = {lab: labels.count(lab) for lab in labels}
    sampler = WeightedRandomSampler([1 / counts[lab] for lab in labels], num_samples=200_000,
                                    generator=torch.Generator().manual_seed(0))
    correct = np.array([p == lab for p, lab in zip(preds, labels)])
    assert 100 * correct[list(sampler)].mean() == pytest.approx(got["accuracy"], abs=0.5)


def test_fluent_speech_commands(root):
    ic = build_task("ic", root)
    dev = ic.load_split("dev")
    assert dev[0].label == ("activate", "lights", "kitchen") and dev[0].speaker == "S0"
    assert ic.slot_values()[0] == ["activate", "deactivate", "increase"]
    assert ic.score("dev", dev, [u.label for u in dev])["accuracy"] == 100.0
    wrong_location = [(a, o, "elsewhere") for a, o, _ in (u.label for u in dev)]
    assert ic.score("dev", dev, wrong_location)["accuracy"] == 0.0  # all three slots must be right


def test_voxceleb1_identification_split(root):
    sid = build_task("sid", root)
    train, dev, test = (sid.load_split(s) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (4, 2, 2)
    assert any("/test/wav/" in str(u.path) for u in train)  # test-part speakers are found under test/wav
    sid.build_head(4)
    assert sid.classes == ["id10001", "id10002"]


def test_iemocap_folds(root):
    er = build_task("er", root, overrides=["data.fold=3"])
    test = er.load_split("test")
    assert {u.id[:5] for u in test} == {"Ses03"} and er.fold() == 3
    assert sorted(u.label for u in test) == sorted(["neu", "hap", "hap", "ang", "sad"])  # exc -> hap, fru dropped
    train, dev = er.load_split("train"), er.load_split("dev")
    assert len(train) + len(dev) == 20 and not {u.id for u in train} & {u.id for u in dev}
    assert all(u.id[:5] != "Ses03" for u in train + dev)
    with pytest.raises(ValueError, match="1..5"):
        build_task("er", root, overrides=["data.fold=6"])


def test_missing_dataset_names_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="IEMOCAP_full_release.*DATA_LAYOUTS"):
        build_task("er", tmp_path).check_data()
    with pytest.raises(DatasetNotFoundError, match="train-clean-100"):
        build_task("asr", tmp_path).load_split("train")


def test_asr_records_carry_the_transcript_not_phones(root):
    phn = root / "LibriSpeech" / "dev-clean" / "19" / "101" / "19-101.phn.txt"
    phn.write_text("19-101-0000 y eh s\n")
    try:
        utt = build_task("asr", root).load_split("dev")[0]
        assert utt.label is None and utt.transcript == "YES NO"
    finally:
        phn.unlink()
