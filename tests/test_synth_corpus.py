"""Per-task sanity of the tiny offline corpus: labels agree with the audio and splits are as the real datasets'."""
from __future__ import annotations

import csv
import itertools
import re
from collections import Counter, defaultdict
from pathlib import Path

import soundfile as sf

from synth import iemocap, speech_commands
from synth.context import Context
from synth.phones import PHONES
from synth.sizes import load_size
from synth.voices import build_speakers


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def _duration(path: Path) -> float:
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), path
    return info.frames / info.samplerate


def test_librispeech_transcripts_phones_and_splits(tiny_corpus):
    root = tiny_corpus / "LibriSpeech"
    texts, speakers = {}, {}
    for split in ("train-clean-100", "dev-clean", "test-clean"):
        trans = sorted((root / split).glob("*/*/*.trans.txt"))
        assert trans, split
        texts[split], speakers[split] = set(), {p.parts[-3] for p in trans}
        for t in trans:
            phn = dict(line.split(" ", 1) for line in _lines(t.with_name(t.name.replace(".trans.", ".phn."))))
            for line in _lines(t):
                utt, words = line.split(" ", 1)
                assert words.strip() and words == words.upper()
                assert _duration(t.parent / f"{utt}.flac") > 0.5
                assert set(phn[utt].split()) <= PHONES and len(phn[utt].split()) >= len(words.split())
                texts[split].add(words)
    for a, b in itertools.combinations(speakers, 2):
        assert not speakers[a] & speakers[b], (a, b)
    assert not texts["train-clean-100"] & (texts["dev-clean"] | texts["test-clean"])


def test_speech_commands_clips_lists_and_test_archive(tiny_corpus):
    train_root = tiny_corpus / speech_commands.TRAIN_ROOT
    test_root = tiny_corpus / speech_commands.TEST_ROOT
    clips = sorted(c for c in train_root.glob("*/*.wav") if c.parent.name != "_background_noise_")
    assert all(sf.info(str(c)).frames == 16000 for c in clips + sorted(test_root.glob("*/*.wav")))
    lists = {n: _lines(train_root / f"{n}_list.txt") for n in ("validation", "testing")}
    listed = set(lists["validation"]) | set(lists["testing"])
    assert all((train_root / rel).is_file() for rel in listed)
    hashes = {n: {rel.split("/")[1].split("_")[0] for rel in rels} for n, rels in lists.items()}
    train_hashes = {c.name.split("_")[0] for c in clips if f"{c.parent.name}/{c.name}" not in listed}
    assert not train_hashes & hashes["validation"] and not train_hashes & hashes["testing"]
    for word in speech_commands.KEYWORDS:
        in_train = [c for c in clips if c.parent.name == word and f"{word}/{c.name}" not in listed]
        assert len(in_train) >= 2 and sum(r.startswith(word + "/") for r in lists["validation"]) >= 2
    assert sorted(p.name for p in test_root.iterdir()) == sorted(speech_commands.KEYWORDS + ("_silence_", "_unknown_"))
    assert all(len(list((test_root / d).glob("*.wav"))) >= 2 for d in ("yes", "_silence_", "_unknown_"))
    assert len(list((train_root / "_background_noise_").glob("*.wav"))) >= 5


def test_fluent_csvs_intents_and_speaker_split(tiny_corpus):
    root = tiny_corpus / "fluent_speech_commands_dataset"
    speakers, intents = {}, {}
    for split in ("train", "valid", "test"):
        with open(root / "data" / f"{split}_data.csv", newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["", "path", "speakerId", "transcription", "action", "object", "location"]
        for i, row in enumerate(rows[1:]):
            assert int(row[0]) == i and (root / row[1]).is_file() and row[1].split("/")[2] == row[2] and row[3]
        speakers[split] = {r[2] for r in rows[1:]}
        intents[split] = Counter(tuple(r[4:]) for r in rows[1:])
    assert len(intents["train"]) >= 20 and all(min(c.values()) >= 2 for c in intents.values())
    assert set(intents["train"]) == set(intents["valid"]) == set(intents["test"])
    for a, b in itertools.combinations(speakers, 2):
        assert not speakers[a] & speakers[b]


def test_voxceleb_identification_split_and_balanced_trials(tiny_corpus):
    root = tiny_corpus / "VoxCeleb1"
    part_of = {p.relative_to(root / part / "wav").as_posix(): part
               for part in ("dev", "test") for p in (root / part / "wav").glob("*/*/*.wav")}
    iden = [line.split() for line in _lines(root / "iden_split.txt")]
    assert {rel for _, rel in iden} == set(part_of) and {s for s, _ in iden} == {"1", "2", "3"}
    assert all(_duration(root / part_of[rel] / "wav" / rel) >= 2.0 for _, rel in iden)
    trials = [line.split() for line in _lines(root / "veri_test.txt")]
    assert len(trials) >= 20 and Counter(t[0] for t in trials) == {"1": len(trials) // 2, "0": len(trials) // 2}
    for label, a, b in trials:
        assert part_of[a] == part_of[b] == "test" and (a.split("/")[0] == b.split("/")[0]) == (label == "1")
    dev_speakers = {rel.split("/")[0] for rel, part in part_of.items() if part == "dev"}
    assert len({t[1].split("/")[0] for t in trials}) >= 4 and not dev_speakers & {t[1].split("/")[0] for t in trials}


def test_iemocap_labels_match_files_and_sessions_have_own_speakers(tiny_corpus):
    root = tiny_corpus / "IEMOCAP_full_release"
    pattern = re.compile(r"^\[(\d+\.\d+) - (\d+\.\d+)\]\t(\S+)\t(\S+)\t\[")
    counts = defaultdict(Counter)
    for n in range(1, 6):
        for eval_file in (root / f"Session{n}" / "dialog" / "EmoEvaluation").glob("*.txt"):
            for line in eval_file.read_text().splitlines():
                if m := pattern.match(line):
                    utt, label = m.group(3), m.group(4)
                    wav = root / f"Session{n}" / "sentences" / "wav" / eval_file.stem / f"{utt}.wav"
                    assert wav.is_file() and utt.startswith(eval_file.stem)
                    counts[n][{"exc": "hap"}.get(label, label)] += 1
    for n in range(1, 6):
        assert all(counts[n][e] >= 2 for e in ("neu", "hap", "sad", "ang")), counts[n]
    ctx = Context(tiny_corpus, 0, load_size("tiny"), build_speakers(0))
    jobs, _ = iemocap.plan(ctx)
    by_session = defaultdict(set)
    for job in jobs:
        by_session[job.path.split("/")[1]].add(job.speaker.name)
    assert all(len(s) == 2 for s in by_session.values())
    assert all(not a & b for a, b in itertools.combinations(by_session.values(), 2))


def test_quesst_ground_truth_inside_documents(tiny_corpus):
    root = tiny_corpus / "quesst14Database"
    keys = [line.split() for line in _lines(root / "scoring" / "language_key_utterances.lst")]
    assert all(lang == "nnenglish" and (root / path.split("/", 1)[1]).is_file() for path, lang in keys)
    docs = {Path(path).stem for path, _ in keys}
    durations = {d: _duration(root / "Audio" / f"{d}.wav") for d in docs}
    for split in ("dev", "eval"):
        keys = [line.split()[0] for line in _lines(root / "scoring" / f"language_key_{split}.lst")]
        assert all((root / path.split("/", 1)[1]).is_file() for path in keys)
        queries = {Path(path).stem for path in keys}
        assert len(queries) >= 2 and all(q.startswith(f"quesst14_{split}_") for q in queries)
        truth = root / "scoring" / f"groundtruth_quesst14_{split}"
        hits = [line.split() for line in _lines(truth / f"quesst14_{split}.rttm")]
        assert {h[5] for h in hits} == queries
        for kind, doc, chan, tbeg, tdur, query, *rest in hits:
            assert kind == "LEXEME" and doc in docs and 0 <= float(tbeg) and float(tbeg) + float(tdur) <= durations[doc]
        assert "<ecf" in (truth / f"quesst14_{split}.ecf.xml").read_text()
        assert all(f'termid="{q}"' in (truth / f"quesst14_{split}.tlist.xml").read_text() for q in queries)


def test_snips_slots_come_from_slots_txt_and_speakers_split(tiny_corpus):
    root = tiny_corpus / "SNIPS"
    slots = set(_lines(root / "slots.txt"))
    assert len(slots) >= 10
    speakers = defaultdict(set)
    for line in _lines(root / "all.iob.snips.txt"):
        text, tags = line.split("\t")
        uttid, *words = text.split()
        *labels, intent = tags.split()
        assert words[0] == "BOS" and words[-1] == "EOS" and len(labels) == len(words) - 1
        assert {t[2:] for t in labels if t != "O"} <= slots and intent[0].isupper()
        speaker, _, split, _ = uttid.split("-")
        assert (root / split / f"{uttid}.wav").is_file()
        speakers[split].add(speaker)
    assert [len(speakers[s]) for s in ("train", "valid", "test")] == [8, 4, 4]
    assert all(not a & b for a, b in itertools.combinations(speakers.values(), 2))


def test_libri2mix_rttm_within_recordings_and_overlap(tiny_corpus):
    root = tiny_corpus / "Libri2Mix" / "kaldi"
    speakers = {}
    for split in ("train", "dev", "test"):
        d = root / split
        dur = {r: float(x) for r, x in (line.split() for line in _lines(d / "reco2dur"))}
        for line in _lines(d / "wav.scp"):
            reco, rel = line.split()
            assert abs(_duration(d / rel) - dur[reco]) < 1e-3
        assert len(dur) >= 2
        turns = defaultdict(list)
        for line in _lines(d / "rttm"):
            _, reco, _, tbeg, tdur, _, _, spk, _, _ = line.split()
            assert 0 <= float(tbeg) and float(tbeg) + float(tdur) <= dur[reco] + 1e-6
            turns[reco].append((spk, float(tbeg), float(tbeg) + float(tdur)))
        for reco, segs in turns.items():
            assert len({s for s, _, _ in segs}) == 2
            speech = sum(e - s for _, s, e in segs)
            overlap = sum(max(0, min(e1, e2) - max(s1, s2))
                          for (_, s1, e1), (_, s2, e2) in itertools.combinations(segs, 2))
            assert 0.05 <= overlap / speech <= 0.35, (reco, overlap / speech)
        assert len(_lines(d / "segments")) == len(_lines(d / "utt2spk")) == len(_lines(d / "rttm"))
        speakers[split] = {line.split()[1] for line in _lines(d / "utt2spk")}
    assert all(not a & b for a, b in itertools.combinations(speakers.values(), 2))


def test_unlabeled_pool_and_card(tiny_corpus):
    files = sorted((tiny_corpus / "unlabeled").rglob("*.flac"))
    assert len(files) >= 20 and sum(_duration(f) for f in files) > 60
    card = (tiny_corpus / "CORPUS.md").read_text()
    assert "| librispeech | train-clean-100 |" in card and "overlap of speech" in card and "espeak-ng" in card
