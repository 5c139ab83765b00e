"""Atomic writes keep old content on failure; locked appends from many processes lose no line."""
import multiprocessing as mp

import numpy as np
import pytest
import torch

from common.audio import AudioError, load_audio, write_audio
from common.io import atomic_path, atomic_write_text, locked_append


def test_atomic_write_keeps_old_content_on_error(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temp files left behind


def _append_many(path, worker):
    for i in range(50):
        locked_append(path, f"{worker},{i}\n", header="worker,i\n")


def test_locked_append_from_two_processes(tmp_path):
    path = tmp_path / "rows.csv"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)  # spawned children import the project first: slow on a loaded machine
        assert p.exitcode == 0
    lines = path.read_text().splitlines()
    assert lines[0] == "worker,i" and lines.count("worker,i") == 1
    assert sorted(lines[1:]) == sorted(f"{w},{i}" for w in range(2) for i in range(50))


def test_audio_roundtrip_downmix_resample_and_errors(tmp_path):
    import soundfile as sf

    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1).astype("float32") * 0.5
    sf.write(tmp_path / "st.wav", stereo, 8000)
    wav = load_audio(tmp_path / "st.wav")
    assert wav.dim() == 1 and wav.numel() == 16000  # downmixed, resampled 8k → 16k
    assert wav.abs().max() == pytest.approx(0.25, abs=0.02)

    write_audio(tmp_path / "x.flac", torch.linspace(-0.5, 0.5, 1600))
    sliced = load_audio(tmp_path / "x.flac", start=0.05, duration=0.025)
    assert sliced.numel() == 400

    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(AudioError, match="bad.wav"):
        load_audio(tmp_path / "bad.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype="float32"), 16000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
