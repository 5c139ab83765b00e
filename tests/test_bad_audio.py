"""Issue 22 §3: bad audio is named, and --skip-bad-audio skips every kind: too short, truncated, empty, garbage,
missing, broken symlink, symlink loop and non-regular files (a FIFO named *.wav never hangs a loader: the file type
is checked before opening). The run's summary says how many files were skipped."""
from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from benchmark.engine import RunOptions, run_task
from common.audio import AudioError, load_audio, write_audio
from tests.fixtures.bad_audio import (broken_symlink, empty, fifo, garbage, missing, symlink_loop, too_short,
                                      truncated)
from tests.fixtures.datasets import module_corpus, write_fsc
from tests.fixtures.upstreams import TINY_UPSTREAM
from training.data import DataConfig, SkipReport, collect_audio_files, scan_audio

FAST = ["train.eval_every=2", "batch.max_seconds=0.3", "batch.eval_max_seconds=2.0", "head.proj_dim=8"]
BAD = "wavs/speakers/S1/train1.wav"


KINDS = {
    "too_short": (too_short, "50 samples is shorter than one frame of the upstream (160 samples"),
    "truncated": (truncated, "samples is shorter than one frame of the upstream"),
    "missing": (missing, "does not exist"),
    "broken_symlink": (broken_symlink, "is a broken symbolic link"),
    "symlink_loop": (symlink_loop, "is a symbolic link loop"),
    "fifo": (fifo, "is a FIFO (named pipe), not a regular file"),
    "empty": (empty, "is empty (0 bytes)"),
    "garbage": (garbage, "cannot read audio file"),
}


clean_fsc = module_corpus("fsc", write_fsc)


@pytest.fixture
def no_hang():
    """Fail (instead of hanging the suite) if anything blocks for 60 s, as opening a FIFO would."""
    def timeout(*_):
        raise TimeoutError("blocked for 60 s (a FIFO was opened?)")
    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def opts(root: Path, tmp: Path, **kw) -> RunOptions:
    return RunOptions(upstream=TINY_UPSTREAM, task="ic", data_root=root, results_dir=tmp / "results", max_steps=4,
                      cache_dir=tmp / "cache", overrides=list(FAST), device="cpu", **kw)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("cache", ["on", "off"])
def test_each_kind_of_bad_audio_is_named_then_skipped(clean_fsc, tmp_path, no_hang, kind, cache):
    root = tmp_path / "data"
    shutil.copytree(clean_fsc, root, symlinks=True)
    bad = root / "fluent_speech_commands_dataset" / BAD
    damage, message = KINDS[kind]
    damage(bad)
    with pytest.raises(AudioError) as info:
        run_task(opts(root, tmp_path / "a", cache=cache))
    assert str(bad) in str(info.value) and message in str(info.value)
    summary = run_task(opts(root, tmp_path / "b", cache=cache, skip_bad_audio=True))
    assert summary["skipped_audio"] == 1
    skipped = json.loads((Path(summary["run_dir"]) / "skipped_audio.json").read_text())
    assert list(skipped) == [BAD] and message in skipped[BAD]


@pytest.mark.parametrize("kind", list(KINDS))
def test_load_audio_names_each_kind(tmp_path, no_hang, kind):
    path = tmp_path / "x.wav"
    write_audio(path, np.zeros(4800, dtype=np.float32))
    damage, message = KINDS[kind]
    damage(path)
    if kind in ("too_short", "truncated"):
        assert load_audio(path).numel() < 160  # readable; too short only for an upstream (checked by the engine)
        return
    with pytest.raises(AudioError, match="x.wav"):
        load_audio(path)


def test_distillation_scan_lists_every_bad_kind_and_never_hangs(tmp_path, no_hang):
    folder = tmp_path / "audio"
    for i, kind in enumerate(KINDS):
        path = folder / f"{kind}.wav"
        write_audio(path, np.zeros(16000, dtype=np.float32))
        KINDS[kind][0](path)
    write_audio(folder / "good.wav", np.zeros(16000, dtype=np.float32))
    report = SkipReport()
    kept = scan_audio(collect_audio_files([str(folder)]), DataConfig(min_item_seconds=0.5), report)
    assert [p.name for p, _ in kept] == ["good.wav"]
    reasons = {Path(p).name: r for p, r in report.skipped}
    # a folder listing cannot hold the deleted file; every other kind is listed with its reason
    assert set(reasons) == {f"{k}.wav" for k in KINDS if k != "missing"}
    for kind in ("broken_symlink", "symlink_loop", "fifo", "empty"):
        assert KINDS[kind][1] in reasons[f"{kind}.wav"], reasons[f"{kind}.wav"]
    assert "shorter than min_item_seconds" in reasons["too_short.wav"]


def test_the_cli_says_how_many_files_it_skipped(clean_fsc, tmp_path, capsys, no_hang):
    import run_benchmark

    root = tmp_path / "data"
    shutil.copytree(clean_fsc, root, symlinks=True)
    fifo(root / "fluent_speech_commands_dataset" / BAD)
    args = ["--upstream", TINY_UPSTREAM, "--task", "ic", "--data-root", str(root), "--results-dir",
            str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--max-steps", "2", "--device", "cpu",
            "--skip-bad-audio"]
    for o in FAST:
        args += ["-o", o]
    assert run_benchmark.main(args) == 0
    out = capsys.readouterr().out
    assert "ic: skipped 1 bad audio file(s), listed in" in out and "skipped_audio.json" in out


def test_the_results_rows_record_how_many_files_were_skipped(clean_fsc, tmp_path, no_hang):
    import csv

    root = tmp_path / "data"
    shutil.copytree(clean_fsc, root, symlinks=True)
    broken_symlink(root / "fluent_speech_commands_dataset" / BAD)
    run_task(opts(root, tmp_path, skip_bad_audio=True))
    with open(tmp_path / "results" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["skipped_audio"] == "1" for r in rows)
