"""SF: slot metrics (hand-computed and against s3prl's own metric file), SNIPS parsing, vocabulary, loader errors."""
from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest

from common.audio import write_audio
from tasks.listfile import ListFileError
from tasks.sf.data import SlotSentence, load_snips, load_split, parse_iob_file, target_string
from tasks.sf.metrics import parse_slots, slot_type_f1, slot_value_cer

REF = "PLAY B-artist JOHN LENNON E-artist ON B-service SPOTIFY E-service"
HYP = "PLAY B-artist JON LENNON E-artist ON SPOTIFY"


def test_slot_metrics_hand_computed():
    # types: hyp {artist}, ref {artist, service} → P 1, R 1/2, F1 2/3; an utterance without slots on both sides → 1
    assert slot_type_f1([HYP, "HELLO"], [REF, "HELLO"]) == pytest.approx((2 / 3 + 1) / 2)
    # values: artist "JON LENNON" vs "JOHN LENNON" = 1 edit / 11; service missing = 7 edits / 7
    assert slot_value_cer([HYP, "HELLO"], [REF, "HELLO"]) == pytest.approx(8 / 18)
    assert slot_type_f1([REF], [REF]) == 1.0 and slot_value_cer([REF], [REF]) == 0.0
    # hypothesis slots where the reference has none → 0
    assert slot_type_f1(["B-x A E-x"], ["A"]) == 0.0


def test_best_matching_value_and_inner_markers():
    hyp = "B-city PARIS E-city AND B-city LONDON E-city"
    assert slot_value_cer([hyp], ["B-city LONDON E-city"]) == 0.0  # the closer hypothesis value is used
    assert parse_slots("B-a X B-b Y E-a") == {"a": ["X Y"]}  # stray markers inside a value are dropped


def _s3prl_metric_module():
    spec = importlib.util.find_spec("s3prl")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("s3prl (test-only reference) is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "downstream" / "ctc" / "metric.py"
    mod_spec = importlib.util.spec_from_file_location("s3prl_ctc_metric", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def test_metrics_agree_with_s3prl_on_random_strings():
    ref_metric = _s3prl_metric_module()
    rng = random.Random(0)
    words = ["PLAY", "JOHN", "LENNON", "NOW", "PARIS", "TOMORROW", "JAZZ"]
    types = ["artist", "city", "genre"]

    def sentence():
        out = []
        for _ in range(rng.randint(1, 6)):
            w = rng.choice(words)
            if rng.random() < 0.3:
                t = rng.choice(types)
                w = f"B-{t} {w}{' ' + rng.choice(words) if rng.random() < 0.5 else ''} E-{t}"
            out.append(w)
        return " ".join(out)

    refs = [sentence() for _ in range(40)]
    hyps = [r if rng.random() < 0.3 else sentence() for r in refs]
    assert slot_type_f1(hyps, refs) == pytest.approx(ref_metric.slot_type_f1(hyps, refs))
    assert slot_value_cer(hyps, refs) == pytest.approx(ref_metric.slot_value_cer(hyps, refs))


def test_target_string_bare_and_bio_tags():
    bare = SlotSentence(("Add", "this", "track", "to", "my", "jazz", "playlist", "!"),
                        ("O", "O", "O", "O", "playlist_owner", "playlist", "playlist", "O"), "AddToPlaylist")
    assert target_string(bare) == ("ADD THIS TRACK TO B-playlist_owner MY E-playlist_owner "
                                   "B-playlist JAZZ PLAYLIST E-playlist")
    bio = SlotSentence(("rock", "&", "roll", "pop"), ("B-genre", "I-genre", "I-genre", "B-genre"), "PlayMusic")
    assert target_string(bio) == "B-genre ROCK AND ROLL E-genre B-genre POP E-genre"


def _write_snips(root: Path, iob_lines: list[str]) -> Path:
    base = root / "SNIPS"
    base.mkdir(parents=True)
    (base / "all.iob.snips.txt").write_text("\n".join(iob_lines) + "\n")
    (base / "slots.txt").write_text("O\nartist\nB-service\n")
    rng = np.random.default_rng(0)
    for line in iob_lines:
        uttid = line.split()[0]
        split = uttid.split("-")[2]
        write_audio(base / split / f"{uttid}.wav", (0.1 * rng.standard_normal(4000)).astype(np.float32))
    return root


LINES = ["Ivy-snips-train-0 BOS play john lennon on spotify EOS\tO O artist artist O service PlayMusic",
         "Ivy-snips-train-1 BOS play jazz EOS\tO O O PlayMusic",
         "Aditi-snips-valid-0 BOS play john EOS\tO O artist PlayMusic",
         "Brian-snips-test-0 BOS spotify now EOS\tO service O PlayMusic"]


def test_load_snips_round_trip(tmp_path):
    root = _write_snips(tmp_path, LINES)
    sentences, vocab = load_snips(root)
    train = load_split(root, "train", sentences, vocab)
    assert [u.id for u in train] == ["Ivy-snips-train-0", "Ivy-snips-train-1"]
    assert train[0].transcript == "PLAY B-artist JOHN LENNON E-artist ON B-service SPOTIFY E-service"
    assert train[0].speaker == "Ivy" and train[0].duration == pytest.approx(0.25)
    assert vocab.decode(list(train[0].label)) == train[0].transcript
    assert vocab.tokens[0] == "<blank>" and "B-artist" in vocab.tokens and "E-service" in vocab.tokens
    assert [u.id for u in load_split(root, "dev", sentences, vocab)] == ["Aditi-snips-valid-0"]


def test_malformed_iob_lines_name_file_and_line(tmp_path):
    root = _write_snips(tmp_path, LINES)
    iob = root / "SNIPS" / "all.iob.snips.txt"
    iob.write_text(LINES[0] + "\nAditi-snips-train-1 BOS play jazz EOS O O PlayMusic\n")
    with pytest.raises(ListFileError, match=r"all\.iob\.snips\.txt:2: 2 words but 1 tags"):
        parse_iob_file(iob)
    iob.write_text("Aditi-snips-train-1 play jazz now here O O O O PlayMusic\n")
    with pytest.raises(ListFileError, match=r"all\.iob\.snips\.txt:1: expected '<uttid> BOS"):
        parse_iob_file(iob)
    iob.write_text("Aditi-snips-train-1 BOS play jazz EOS O O genre PlayMusic\n")
    with pytest.raises(ValueError, match=r"slot type\(s\) \['genre'\] missing from .*slots\.txt"):
        load_snips(root)


def test_sf_run_writes_rows(tmp_path):
    from e2e_runs import run_and_read_rows

    summary, rows = run_and_read_rows(_write_snips(tmp_path / "data", LINES), "sf", tmp_path)
    metrics = {(r["split"], r["metric"]): float(r["value"]) for r in rows}
    assert set(metrics) == {(s, m) for s in ("dev", "test") for m in ("slot_type_f1", "slot_value_cer")}
    assert all(0.0 <= v <= 100.0 for v in metrics.values())
    predictions = (Path(summary["run_dir"]) / "predictions" / "test.jsonl").read_text()
    assert "Brian-snips-test-0" in predictions


def test_voice_split_and_vocabulary_match_s3prl(tmp_path):
    """SUPERB keeps 8 / 4 / 4 voices (s3prl snips.yaml); a voice outside the split's list is left out, and the
    vocabulary and targets are those of s3prl's CharacterTextSlotEncoder (same ids, <eos> at the end)."""
    text = pytest.importorskip("s3prl.downstream.ctc.text")
    from common.datasets import SNIPS_VOICES

    assert [len(SNIPS_VOICES[s]) for s in ("train", "dev", "test")] == [8, 4, 4]
    assert not set(SNIPS_VOICES["train"]) & (set(SNIPS_VOICES["dev"]) | set(SNIPS_VOICES["test"]))
    lines = LINES + ["Salli-snips-train-2 BOS play jazz EOS\tO O O PlayMusic",
                     "Brian-snips-train-3 BOS play jazz EOS\tO O O PlayMusic"]   # a test voice in train/
    root = _write_snips(tmp_path, lines)
    sentences, vocab = load_snips(root)
    kept = load_split(root, "train", sentences, vocab, voices=SNIPS_VOICES["train"])
    assert [u.id for u in kept] == ["Ivy-snips-train-0", "Ivy-snips-train-1", "Salli-snips-train-2"]
    assert len(load_split(root, "train", sentences, vocab)) == 4  # no filter: every voice

    chars = [" "] + [chr(c) for c in range(ord("A"), ord("Z") + 1)] + ["'"]
    ref = text.CharacterTextSlotEncoder(chars, ["B-artist", "E-artist", "B-service", "E-service"])
    assert len(vocab) == ref.vocab_size
    assert vocab.tokens[1:3 + len(chars)] == ref._vocab_list[1:]  # <eos>, <unk>, characters
    by_id = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in lines}
    for utt in kept:
        words, tags = by_id[utt.id].split("\t")
        s3prl_ids = ref.encode(f"{words.upper()}\t{tags}")
        s3prl_tokens = [ref.id2slot.get(i) or ref._vocab_list[i] for i in s3prl_ids]
        assert [vocab.tokens[i] for i in utt.label] == s3prl_tokens, utt.id
