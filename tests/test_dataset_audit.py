"""Issue 22 §2: every task audits its whole dataset (all splits) before the first update and reports all problems
at once, naming the file (and line): BOM/CRLF list files parse exactly like clean ones; missing listed files, an
empty validation list, duplicated ids, files in two splits, empty splits, unknown labels, 0-byte CSVs and non-UTF-8
transcripts are errors; records the protocol drops on purpose are counted per split."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import run_benchmark
from common import datasets
from tests.fixtures.datasets import (module_corpus, tone, write_fsc, write_iemocap, write_librispeech,
                                     write_speech_commands, write_voxceleb1)
from tasks.registry import build_task
from tests.fixtures.upstreams import TINY_UPSTREAM

KS, FSC, VOX = datasets.SPEECH_COMMANDS, datasets.FLUENT, datasets.VOXCELEB1


clean = module_corpus("audit_clean", write_speech_commands, write_fsc, write_voxceleb1, write_librispeech,
                      write_iemocap)


@pytest.fixture
def root(clean, tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(clean, copy)
    return copy


def audit(task: str, root: Path):
    return build_task(task, root).audit()


def ids(utts) -> list[str]:
    return [u.id for u in utts]


def test_the_clean_fixtures_pass(clean):
    for task in ("ks", "ic", "sid", "asr", "pr", "er"):
        assert audit(task, clean).problems == [], task


@pytest.mark.parametrize("encode", [
    lambda text: "\ufeff" + text,                      # a BOM, as Windows Notepad writes it
    lambda text: text.replace("\n", "\r\n"),           # CRLF line ends
    lambda text: "\ufeff" + text.replace("\n", "\r\n"),
])
def test_bom_and_crlf_list_files_parse_like_clean_ones(clean, root, encode):
    for name in ("validation_list.txt", "testing_list.txt"):
        path = root / KS / name
        path.write_bytes(encode(path.read_text()).encode("utf-8"))
    fsc = root / FSC / "data" / "train_data.csv"
    fsc.write_bytes(encode(fsc.read_text()).encode("utf-8"))
    sid = root / VOX / "iden_split.txt"
    sid.write_bytes(encode(sid.read_text()).encode("utf-8"))
    for task in ("ks", "ic", "sid"):
        before, after = audit(task, clean), audit(task, root)
        assert after.problems == []
        for split in ("train", "dev", "test"):  # the first listed dev file stays in dev (it moved to train before)
            assert ids(after.splits[split]) == ids(before.splits[split]), (task, split)


def test_ks_list_naming_a_missing_file_and_an_empty_validation_list(root):
    (root / KS / "testing_list.txt").write_text("yes/spk3_nohash_0.wav\nyes/gone_nohash_0.wav\n")
    (root / KS / "validation_list.txt").write_text("")
    problems = audit("ks", root).problems
    assert f"{root / KS / 'testing_list.txt'}:2: yes/gone_nohash_0.wav does not exist" in "\n".join(problems)
    assert any(f"{root / KS / 'validation_list.txt'} is empty" in p for p in problems)


def test_ks_file_in_both_lists_and_unknown_test_folder(root):
    (root / KS / "testing_list.txt").write_text((root / KS / "validation_list.txt").read_text())
    tone(root / "speech_commands_test_set_v0.01" / "bird" / "t9.wav", 1)
    problems = "\n".join(audit("ks", root).problems)
    assert "are in both validation_list.txt and testing_list.txt" in problems
    assert "unexpected test folder" in problems and "bird" in problems


def test_ic_duplicate_rows_a_zero_byte_csv_and_an_empty_split(root):
    data = root / FSC / "data"
    lines = data.joinpath("train_data.csv").read_text().splitlines()
    data.joinpath("train_data.csv").write_text("\n".join(lines + [lines[1]]) + "\n")
    data.joinpath("valid_data.csv").write_bytes(b"")
    data.joinpath("test_data.csv").write_text(lines[0] + "\n")
    problems = audit("ic", root).problems
    text = "\n".join(problems)
    assert f"{data / 'train_data.csv'}:5: wavs/speakers/S0/train0.wav repeats line 2" in text
    assert f"{data / 'valid_data.csv'}: the file is empty" in text and "No columns to parse" not in text
    assert "test: the split is empty" in text
    assert len(problems) == 3  # all at once


def test_a_file_in_train_and_test_is_leakage(root):
    data = root / FSC / "data"
    train = data.joinpath("train_data.csv").read_text().splitlines()
    test = data.joinpath("test_data.csv").read_text().splitlines()
    data.joinpath("test_data.csv").write_text("\n".join(test + [train[1].replace("0,", "9,", 1)]) + "\n")
    problems = audit("ic", root).problems
    assert any("train and test share 1 audio file(s)" in p and "train0.wav" in p for p in problems)


def test_sid_duplicate_and_cross_split_lines(root):
    path = root / VOX / "iden_split.txt"
    lines = path.read_text().splitlines()
    code, rel = lines[0].split()
    path.write_text("\n".join(lines + [lines[0], f"3 {rel}"]) + "\n")
    text = "\n".join(audit("sid", root).problems)
    assert f"{path}:{len(lines) + 1}: {rel} is already listed on line 1" in text
    assert f"{path}:{len(lines) + 2}: {rel} is already listed on line 1" in text


def test_sid_speaker_outside_training_is_an_unknown_label(root):
    path = root / VOX / "iden_split.txt"
    kept = [line for line in path.read_text().splitlines() if not (line.startswith("1 id10002"))]
    path.write_text("\n".join(kept) + "\n")
    text = "\n".join(audit("sid", root).problems)
    assert "labels outside the task's 1 classes: 'id10002'" in text


def test_librispeech_id_with_two_texts_and_non_utf8_transcripts(root):
    trans = next((root / "LibriSpeech" / "train-clean-100").rglob("*.trans.txt"))
    first = trans.read_text().splitlines()[0]
    trans.write_text(trans.read_text() + first.split()[0] + " OTHER WORDS\n")
    dev = next((root / "LibriSpeech" / "dev-clean").rglob("*.trans.txt"))
    dev.write_bytes(dev.read_bytes() + b"19-101-0009 CAF\xe9\n")
    for task in ("asr", "pr"):
        text = "\n".join(audit(task, root).problems)
        assert f"{trans}:5: id {first.split()[0]} is already on line 1" in text
        assert f"{dev}:5: not UTF-8 text (byte 0xe9)" in text


def test_er_counts_the_records_it_drops_on_purpose(clean):
    result = audit("er", clean)
    assert result.problems == []
    lines = result.dropped_lines()
    assert lines and all("utterances labelled 'fru' (not one of the 4 classes)" in line for line in lines)
    assert {line.split(":")[0] for line in lines} <= {"train", "dev", "test"}
    assert sum(int(line.split("dropped ")[1].split()[0]) for line in lines) == 5  # one 'fru' per session


def test_the_cli_reports_every_problem_before_training(root, tmp_path, capsys):
    (root / KS / "validation_list.txt").write_text("")
    (root / KS / "testing_list.txt").write_text("yes/gone_nohash_0.wav\n")
    results = tmp_path / "results"
    code = run_benchmark.main(["--upstream", TINY_UPSTREAM, "--task", "ks", "--data-root", str(root),
                               "--results-dir", str(results), "--cache-dir", str(tmp_path / "cache"),
                               "--device", "cpu", "--max-steps", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "task 'ks': 2 problem(s) in the dataset" in err
    assert "validation_list.txt is empty" in err and "testing_list.txt:1: yes/gone_nohash_0.wav does not exist" in err
    assert not results.exists()  # nothing was trained or written


def test_pr_counts_utterances_dropped_for_words_outside_cmudict(root):
    trans = next((root / "LibriSpeech" / "dev-clean").rglob("*.trans.txt"))
    lines = trans.read_text().splitlines()
    utt = lines[0].split()[0]
    trans.write_text("\n".join([f"{utt} YES QWXZKJ"] + lines[1:]) + "\n")
    result = audit("pr", root)
    assert result.problems == []
    assert result.dropped_lines() == ["dev: dropped 1 utterances with words missing from CMUdict (no phone targets)"]
    assert utt not in ids(result.splits["dev"])


def test_qbe_counts_the_queries_and_documents_of_other_languages(tmp_path):
    from tests.test_tasks_qbe import make_quesst

    result = audit("qbe", make_quesst(tmp_path))
    assert result.problems == []  # dev and test share the documents by design; QbE has no train split
    assert result.dropped_lines() == [
        "dev: dropped 1 documents in languages other than english, nnenglish",
        "dev: dropped 1 queries in languages other than english, nnenglish",
        "test: dropped 1 documents in languages other than english, nnenglish",
        "test: dropped 1 queries in languages other than english, nnenglish",
    ]
