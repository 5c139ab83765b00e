#!/usr/bin/env python
"""Replay the bad-input and fault situations of issue 22 on tiny copies of the test datasets and print a table
situation -> outcome, so the next sweep starts from it.

    python bench/fault_sweep.py [--only WORD]      # about 1-2 minutes on 2 busy cores

Each situation builds a fresh tiny dataset (benchmark/testing.py, distill/testing.py), breaks one thing, runs the
real command-line entry point in this process with tiny settings, and reports the exit code and the first error
line (or what the run did). "ok" in the last column means the outcome is the wanted one (the same checks as the
tests under tests/test_{safety_checkpoints,dataset_audit,bad_audio,resume_config,results_csv,cache_integrity,
disk_errors,shared_machine}.py, which assert them with exact values).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run_benchmark  # noqa: E402
import run_distill  # noqa: E402
from common import datasets  # noqa: E402
from tests.fixtures import bad_audio  # noqa: E402
from tests.fixtures.datasets import write_fsc, write_librispeech, write_speech_commands, write_voxceleb1  # noqa: E402
from tests.fixtures.upstreams import register_tiny_upstream, tiny_distill_args, write_teacher_and_tones  # noqa: E402

TINY_UPSTREAM = register_tiny_upstream()  # the tiny deterministic upstream, buildable by name in this process
FAST = ["train.eval_every=3", "batch.max_seconds=0.3", "batch.eval_max_seconds=2.0", "head.proj_dim=8"]
KS, FSC = datasets.SPEECH_COMMANDS, datasets.FLUENT
BAD = "wavs/speakers/S1/train1.wav"


class Outcome:
    def __init__(self, code: int, err: str, out: str):
        self.code, self.err, self.out = code, err, out

    @property
    def line(self) -> str:
        lines = self.err.splitlines()
        at = next((i for i, x in enumerate(lines) if x.startswith("error:")), None)
        if at is None:
            return ""
        if lines[at].endswith(":") and at + 1 < len(lines):  # a list of dataset problems: show the first
            return lines[at] + " " + lines[at + 1].strip()
        return lines[at]


def call(main: Callable[[list[str]], int], args: list[str]) -> Outcome:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(args)
        except SystemExit as e:
            code = int(e.code or 0)
        except Exception as e:  # a crash is an outcome too (the sweep reports it)
            code = -1
            err.write(f"CRASH {type(e).__name__}: {e}\n")
    return Outcome(code, err.getvalue(), out.getvalue())


def bench(data: Path, work: Path, task: str = "ic", *extra: str) -> list[str]:
    args = ["--upstream", TINY_UPSTREAM, "--task", task, "--data-root", str(data), "--results-dir",
            str(work / "results"), "--cache-dir", str(work / "cache"), "--max-steps", "3", "--device", "cpu",
            *extra]
    for o in FAST:
        args += ["-o", o]
    return args


def datasets(work: Path) -> Path:
    root = work / "data"
    write_fsc(root)
    write_speech_commands(root)
    write_voxceleb1(root)
    write_librispeech(root)
    return root


# ------------------------------------------------------------------ situations: (section, name, fn) -> (outcome, ok)
def s1_planted_last_pt(work: Path):
    import torch

    data = datasets(work)
    call(run_benchmark.main, bench(data, work))
    run_dir = next((work / "results").glob("*/ic/*/DONE")).parent
    (run_dir / "DONE").unlink()
    marker = work / "pwned"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")
    buf = io.BytesIO()
    torch.save({"evil": Payload()}, buf)
    (run_dir / "checkpoints" / "last.pt").write_bytes(buf.getvalue())
    o = call(run_benchmark.main, bench(data, work, "ic", "--resume"))
    return o, o.code == 2 and not marker.exists() and "refusing to load" in o.line


def s2_bom_validation_list(work: Path):
    data = datasets(work)
    path = data / KS / "validation_list.txt"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    from tasks.registry import build_task
    dev = [u.id for u in build_task("ks", data).load_split("dev")]
    o = Outcome(0, "", f"dev ids with BOM+CRLF list: {len([d for d in dev if not d.startswith('_')])} words")
    return o, "no/spk2_nohash_0.wav" in dev and "yes/spk2_nohash_0.wav" in dev


def s2_missing_listed_file(work: Path):
    data = datasets(work)
    (data / KS / "validation_list.txt").write_text("yes/gone_nohash_0.wav\n")
    o = call(run_benchmark.main, bench(data, work, "ks"))
    return o, o.code == 2 and "does not exist" in o.err


def s2_empty_validation_list(work: Path):
    data = datasets(work)
    (data / KS / "validation_list.txt").write_text("")
    o = call(run_benchmark.main, bench(data, work, "ks"))
    return o, o.code == 2 and "validation_list.txt is empty" in o.err


def s2_duplicate_ic_rows(work: Path):
    data = datasets(work)
    csv = data / FSC / "data" / "train_data.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines + [lines[1]]) + "\n")
    o = call(run_benchmark.main, bench(data, work, "ic"))
    return o, o.code == 2 and "repeats line 2" in o.err


def s2_duplicate_trans_id(work: Path):
    data = datasets(work)
    trans = next((data / "LibriSpeech" / "train-clean-100").rglob("*.trans.txt"))
    trans.write_text(trans.read_text() + trans.read_text().split()[0] + " OTHER\n")
    o = call(run_benchmark.main, bench(data, work, "asr"))
    return o, o.code == 2 and "is already on line 1" in o.err


def s2_zero_byte_csv(work: Path):
    data = datasets(work)
    (data / FSC / "data" / "valid_data.csv").write_bytes(b"")
    o = call(run_benchmark.main, bench(data, work, "ic"))
    return o, o.code == 2 and "valid_data.csv: the file is empty" in o.err


def s2_non_utf8_transcript(work: Path):
    data = datasets(work)
    trans = next((data / "LibriSpeech" / "dev-clean").rglob("*.trans.txt"))
    trans.write_bytes(trans.read_bytes() + b"19-101-0009 CAF\xe9\n")
    o = call(run_benchmark.main, bench(data, work, "asr"))
    return o, o.code == 2 and "not UTF-8 text" in o.err and ".trans.txt:5" in o.err


def s2_train_test_overlap(work: Path):
    data = datasets(work)
    d = data / FSC / "data"
    train, test = d.joinpath("train_data.csv").read_text().splitlines(), d.joinpath("test_data.csv").read_text()
    d.joinpath("test_data.csv").write_text(test + "9" + train[1][1:] + "\n")
    o = call(run_benchmark.main, bench(data, work, "ic"))
    return o, o.code == 2 and "train and test share 1 audio file" in o.err


def _bad_audio(kind: str, damage: Callable[[Path], None]):
    def situation(work: Path):
        data = datasets(work)
        damage(data / FSC / BAD)
        first = call(run_benchmark.main, bench(data, work, "ic"))
        skipped = call(run_benchmark.main, bench(data, work / "skip", "ic", "--skip-bad-audio"))
        rows = list((work / "skip" / "results").glob("*/ic/*/summary.json"))
        count = json.loads(rows[0].read_text())["skipped_audio"] if rows else None
        o = Outcome(first.code, first.err, f"--skip-bad-audio: exit {skipped.code}, skipped {count}")
        return o, first.code == 2 and BAD in first.line and skipped.code == 0 and count == 1
    situation.__name__ = f"s3_{kind}"
    return situation


def s4_resume_changed_lr(work: Path):
    args = tiny_distill_args(write_teacher_and_tones(work), work / "out", 2)
    call(run_distill.main, args)
    before = (work / "out" / "distill_config.yaml").read_bytes()
    o = call(run_distill.main, args + ["--resume", "-o", "run.optim.lr=1e-3"])
    same = (work / "out" / "distill_config.yaml").read_bytes() == before
    return o, o.code == 2 and "config.run.optim.lr" in o.line and same


def s4_max_steps_zero(work: Path):
    o = call(run_distill.main, tiny_distill_args(write_teacher_and_tones(work), work / "out", 0))
    return o, o.code == 2 and "must be >= 1" in o.line and not (work / "out").exists()


def s5_results_without_final_newline(work: Path):
    data = datasets(work)
    call(run_benchmark.main, bench(data, work))
    csv = work / "results" / "results.csv"
    csv.write_bytes(csv.read_bytes().rstrip(b"\n"))
    call(run_benchmark.main, bench(data, work, "ic", "--seed", "1"))
    o = call(run_benchmark.main, ["report", "--results-dir", str(work / "results")])
    widths = {len(line.split(",")) for line in csv.read_text().splitlines()}
    return o, o.code == 0 and len(widths) == 1


def s6_truncated_cache_entry(work: Path):
    data = datasets(work)
    call(run_benchmark.main, bench(data, work))
    entry = next((work / "cache").rglob("*.npy"))
    entry.write_bytes(entry.read_bytes()[:-64])
    logging.getLogger().setLevel(logging.WARNING)
    o = call(run_benchmark.main, bench(data, work, "ic", "--seed", "1"))
    return o, o.code == 0 and np.load(entry).size > 0


def s6_unused_days_negative(work: Path):
    data = datasets(work)
    call(run_benchmark.main, bench(data, work))
    o = call(run_benchmark.main, ["cache", "--cache-dir", str(work / "cache"), "--unused-days=-1"])
    return o, o.code == 2 and any((work / "cache").iterdir())


def s7_disk_full_results(work: Path):
    data = datasets(work)
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(work / "results")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    os.fsync = fsync
    try:
        o = call(run_benchmark.main, bench(data, work))
    finally:
        os.fsync = real
    return o, o.code == 2 and "No space left on device" in o.line and not list((work / "results").rglob("*.tmp"))


def s7_results_dir_is_a_file(work: Path):
    data = datasets(work)
    (work / "file").write_text("x")
    args = bench(data, work)
    args[args.index("--results-dir") + 1] = str(work / "file")
    o = call(run_benchmark.main, args)
    return o, o.code == 2 and "is a file, but a folder is expected" in o.line


def s8_umask(work: Path):
    from common.io import atomic_write_text
    old = os.umask(0o002)
    try:
        atomic_write_text(work / "f", "x")
    finally:
        os.umask(old)
    mode = oct(os.stat(work / "f").st_mode & 0o777)
    return Outcome(0, "", f"mode {mode} under umask 002"), mode == "0o664"


SITUATIONS = [
    ("§1", "planted malicious last.pt + --resume", s1_planted_last_pt),
    ("§2", "BOM + CRLF in validation_list.txt", s2_bom_validation_list),
    ("§2", "KS list names a missing file", s2_missing_listed_file),
    ("§2", "empty validation_list.txt", s2_empty_validation_list),
    ("§2", "IC CSV row duplicated", s2_duplicate_ic_rows),
    ("§2", "LibriSpeech trans.txt id twice", s2_duplicate_trans_id),
    ("§2", "0-byte IC CSV", s2_zero_byte_csv),
    ("§2", "non-UTF-8 transcript", s2_non_utf8_transcript),
    ("§2", "file in train and test CSV", s2_train_test_overlap),
    ("§3", "too-short clip (50 samples)", _bad_audio("short", bad_audio.too_short)),
    ("§3", "truncated wav", _bad_audio("truncated", bad_audio.truncated)),
    ("§3", "missing audio file", _bad_audio("missing", bad_audio.missing)),
    ("§3", "broken symlink", _bad_audio("broken", bad_audio.broken_symlink)),
    ("§3", "symlink loop", _bad_audio("loop", bad_audio.symlink_loop)),
    ("§3", "FIFO named *.wav", _bad_audio("fifo", bad_audio.fifo)),
    ("§4", "distill --resume with a new lr", s4_resume_changed_lr),
    ("§4", "distill --max-steps 0", s4_max_steps_zero),
    ("§5", "results.csv without final newline", s5_results_without_final_newline),
    ("§6", "truncated cache entry", s6_truncated_cache_entry),
    ("§6", "cache --unused-days -1", s6_unused_days_negative),
    ("§7", "disk full on --results-dir", s7_disk_full_results),
    ("§7", "--results-dir is a file", s7_results_dir_is_a_file),
    ("§8", "atomic write under umask 002", s8_umask),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--only", default="", help="run the situations whose name contains this word")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    os.chdir(Path(__file__).resolve().parent.parent)  # configs/ are relative
    rows, bad = [], 0
    for section, name, fn in SITUATIONS:
        if args.only and args.only not in name:
            continue
        work = Path(tempfile.mkdtemp(prefix="sweep_"))
        start = time.time()
        try:
            outcome, ok = fn(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        said = outcome.line or outcome.out.strip().splitlines()[-1:] or [""]
        said = said if isinstance(said, str) else said[0]
        said = said.replace(str(work), "<tmp>")
        rows.append((section, name, outcome.code, "ok" if ok else "WRONG", f"{time.time() - start:.1f}", said[:160]))
        bad += not ok
    print(f"| sec | situation | exit | verdict | s | what the user sees |\n|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")
    print(f"\n{len(rows) - bad} of {len(rows)} situations behave as wanted")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
