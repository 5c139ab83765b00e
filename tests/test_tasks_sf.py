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


LINES = ["Aditi-snips-train-0 BOS play john lennon on spotify EOS\tO O artist artist O service PlayMusic",
         "Aditi-snips-train-1 BOS play jazz EOS\tO O O PlayMusic",
         "Ivy-snips-valid-0 BOS play john EOS\tO O artist PlayMusic",
         "Joey-snips-test-0 BOS spotify now EOS\tO service O PlayMusic"]


def test_load_snips_round_trip(tmp_path):
    root = _write_snips(tmp_path, LINES)
    sentences, vocab = load_snips(root)
    train = load_split(root, "train", sentences, vocab)
    assert [u.id for u in train] == ["Aditi-snips-train-0", "Aditi-snips-train-1"]
    assert train[0].transcript == "PLAY B-artist JOHN LENNON E-artist ON B-service SPOTIFY E-service"
    assert train[0].speaker == "Aditi" and train[0].duration == pytest.approx(0.25)
    assert vocab.decode(list(train[0].label)) == train[0].transcript
    assert vocab.tokens[0] == "<blank>" and "B-artist" in vocab.tokens and "E-service" in vocab.tokens
    assert [u.id for u in load_split(root, "dev", sentences, vocab)] == ["Ivy-snips-valid-0"]


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
    assert "Joey-snips-test-0" in predictions
