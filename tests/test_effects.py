"""sox effect chains (common/effects.py): the pipe reproduces the sox binary run on the file, as s3prl's libsox call
does; gain-only chains in Python; durations remembered; the cache key and the ASV loader use the chain."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from common import effects
from common.audio import load_audio
from common.effects import GAIN_MINUS_3, TRIM_SILENCE, apply_effects, durations_after_effects, load_with_effects
from common.utterance import Utterance, load_utterance_audio

needs_sox = pytest.mark.skipif(not effects.sox_available(), reason="the sox binary is not installed "
                               "(scripts/install_system_deps.sh installs it)")
ASV_CHAIN = (("gain", "-3.0"), TRIM_SILENCE)


def _speech_with_pauses(path, seed=0):
    """0.5 s silence, 1 s tone, 0.75 s silence, 1 s noise, 0.25 s silence (16-bit wav, as VoxCeleb's)."""
    rng = np.random.default_rng(seed)
    t = np.arange(16000)
    sig = np.concatenate([np.zeros(8000), 0.3 * np.sin(t * 0.05) * (1 + 0.1 * rng.standard_normal(16000)),
                          np.zeros(12000), 0.2 * rng.standard_normal(16000), np.zeros(4000)])
    sf.write(str(path), sig.astype(np.float32), 16000, subtype="PCM_16")
    return path


@needs_sox
def test_sox_pipe_equals_sox_on_the_file(tmp_path):
    wav = _speech_with_pauses(tmp_path / "a.wav")
    ref_path = tmp_path / "ref.f32"
    # what s3prl's apply_effects_file(path, EFFECTS) computes: libsox on the 16-bit file
    subprocess.run(["sox", "-D", str(wav), "-t", "f32", str(ref_path), "gain", "-3.0", *TRIM_SILENCE], check=True)
    ref = np.fromfile(ref_path, dtype="<f4")
    ours = load_with_effects(wav, ASV_CHAIN).numpy()
    assert ours.shape == ref.shape and np.array_equal(ours, ref)
    # leading silence and the 0.75 s pause are gone, and the chain is not a no-op
    assert 2.0 * 16000 - 200 < len(ours) < 2.1 * 16000


@needs_sox
def test_python_gain_equals_sox_gain(tmp_path):
    wav = load_audio(_speech_with_pauses(tmp_path / "a.wav"))
    by_sox = effects.run_sox(wav, GAIN_MINUS_3)
    by_python = apply_effects(wav, GAIN_MINUS_3)
    assert torch.allclose(by_sox, by_python, atol=1e-7, rtol=0)
    assert by_python.abs().max() == pytest.approx(wav.abs().max() * 10 ** (-3 / 20))


def test_without_sox_the_gain_alone_is_applied_and_said_once(tmp_path, monkeypatch, caplog):
    wav = load_audio(_speech_with_pauses(tmp_path / "a.wav"))
    monkeypatch.setattr(effects, "sox_available", lambda: False)
    monkeypatch.setattr(effects, "_warned", set())
    out = apply_effects(wav, ASV_CHAIN)
    apply_effects(wav, ASV_CHAIN)
    assert torch.allclose(out, wav * 10 ** (-3 / 20))
    assert sum("sox not found" in r.message for r in caplog.records) == 1


@needs_sox
def test_durations_are_measured_once_and_remembered(tmp_path, monkeypatch):
    paths = [_speech_with_pauses(tmp_path / f"{i}.wav", seed=i) for i in range(3)]
    memo = tmp_path / "memo.sqlite"
    first = durations_after_effects(paths + [tmp_path / "missing.wav"], ASV_CHAIN, workers=2, memo=memo)
    assert first[3] == -1.0 and all(2.0 < d < 2.1 for d in first[:3])
    monkeypatch.setattr(effects, "load_with_effects", lambda *a: (_ for _ in ()).throw(AssertionError("re-run")))
    assert durations_after_effects(paths, ASV_CHAIN, memo=memo) == first[:3]


@needs_sox
def test_utterance_audio_and_cache_key_follow_the_chain(tmp_path):
    from benchmark.cache import audio_key

    wav = _speech_with_pauses(tmp_path / "a.wav")
    plain = Utterance(id="a", path=wav, duration=3.5)
    chained = Utterance(id="a", path=wav, duration=2.05, effects=ASV_CHAIN)
    assert load_utterance_audio(chained).shape == load_with_effects(wav, ASV_CHAIN).shape
    assert audio_key(plain) != audio_key(chained)
    with pytest.raises(Exception, match="applies to whole files"):
        load_utterance_audio(Utterance(id="b", path=wav, duration=1.0, start=0.5, effects=ASV_CHAIN))


@needs_sox
def test_asv_keeps_training_utterances_longer_than_2s_after_trimming(tmp_path, monkeypatch):
    from tasks.asv.task import ASVConfig, SpeakerVerification
    from tests.test_tasks_asv import make_voxceleb

    monkeypatch.setenv("DISTILSUPERB_CACHE", str(tmp_path / "cache"))
    make_voxceleb(tmp_path)
    for s in range(4):  # one 3.5 s file per speaker that trims to about 2.05 s, one 2.5 s file that trims to < 2 s
        _speech_with_pauses(tmp_path / "VoxCeleb1/dev/wav" / f"id1000{s}" / "vid" / "00003.wav", seed=s)
        sig = np.concatenate([np.zeros(12000), 0.2 * np.random.default_rng(s).standard_normal(28000)])
        sf.write(str(tmp_path / "VoxCeleb1/dev/wav" / f"id1000{s}" / "vid" / "00001.wav"), sig.astype(np.float32),
                 16000, subtype="PCM_16")
    cfg = ASVConfig()
    cfg.data.dev_speakers, cfg.data.dev_trials = 2, 6
    task = SpeakerVerification(cfg, tmp_path)
    train = task.load_split("train")
    # per training speaker: 00002 (2.5 s of noise, kept), 00003 (2.05 s after trimming, kept); 00001 (1.75 s of
    # noise after its 0.75 s silence is trimmed) and 00000 (0.5 s) dropped
    assert sorted(u.id.split("/")[-1] for u in train) == ["00002", "00002", "00003", "00003"]
    assert all(u.effects == ASV_CHAIN for u in train + task.load_split("test"))
    assert all(2.0 < u.duration < 2.6 for u in train)
    cfg.data.trim_silence = False  # untrimmed: 00001 (2.5 s) is long enough again
    assert len(SpeakerVerification(cfg, tmp_path).load_split("train")) == 6


def test_asv_without_sox_says_its_rows_are_not_superbs(tmp_path, monkeypatch):
    import tasks.asv.task as asv_task
    from tasks.asv.task import ASVConfig, SpeakerVerification

    task = SpeakerVerification(ASVConfig(), tmp_path)
    monkeypatch.setattr(asv_task, "sox_available", lambda: True)
    assert task.superb_comparability({}) == []
    monkeypatch.setattr(asv_task, "sox_available", lambda: False)
    assert task.superb_comparability({}) == ["sox not installed: silence not trimmed (SUPERB trims it with sox)"]
