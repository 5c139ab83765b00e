"""Recording sessions of the offline corpus: channel and level follow the session, never the label."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from synth import iemocap, speech_commands, unlabeled, voxceleb
from synth.augment import Session
from synth.context import Context
from synth.render import SpeechJob
from synth.sizes import load_size
from synth.voices import build_speakers


def _response(session: Session) -> np.ndarray:
    """The magnitude response of the session's channel (a unit impulse recorded at the top of its level range)."""
    impulse = np.zeros(4096, dtype=np.float32)
    impulse[0] = 1.0
    return np.abs(np.fft.rfft(session.record(impulse, np.random.default_rng(0), (1.0, 1.0))))


def test_a_session_has_one_channel_and_gain_and_sessions_differ():
    a, b = Session.of(0, "voxceleb", "id10001/vidA"), Session.of(0, "voxceleb", "id10001/vidB")
    assert a == Session.of(0, "voxceleb", "id10001/vidA")  # the same in every process
    np.testing.assert_allclose(_response(a), _response(a))
    # two sessions differ in frequency response by several dB somewhere
    assert np.max(np.abs(20 * np.log10(_response(a) / _response(b)))) > 3.0


def test_session_gain_spans_tens_of_db_and_never_clips():
    wav = np.random.default_rng(1).standard_normal(16000).astype(np.float32)
    peaks = [float(np.max(np.abs(Session.of(0, "ks", f"spk{i}").record(wav, np.random.default_rng(i), (0.3, 0.9)))))
             for i in range(200)]
    assert max(peaks) <= 0.9 + 1e-6
    assert 20 * np.log10(max(peaks) / min(peaks)) > 20.0  # the old per-utterance peak range spanned 9.5 dB


def _plan(module, size: str = "tiny"):
    ctx = Context(root=None, seed=0, size=load_size(size), speakers=build_speakers(0))
    return [j for j in module.plan(ctx)[0] if isinstance(j, SpeechJob)]


def test_speaker_tasks_record_each_speaker_in_several_sessions():
    """SID/ASV labels are speakers: a speaker's videos differ in channel and gain, as in VoxCeleb."""
    sessions = defaultdict(set)
    for job in _plan(voxceleb):
        sessions[job.speaker.name].add(job.session)
    assert sessions and all(len(s) >= 2 for s in sessions.values())


@pytest.mark.parametrize("module, label_of", [
    (speech_commands, lambda job: job.chunks[0]),               # the keyword
    (iemocap, lambda job: job.level),                           # the emotion's own loudness range
])
def test_a_session_records_many_labels(module, label_of):
    """KS and ER labels are never a session's: every session with several utterances holds several labels."""
    labels = defaultdict(set)
    for job in _plan(module):
        assert job.session is not None
        labels[job.session].add(label_of(job))
    assert labels and all(len(v) >= 2 for v in labels.values())


def test_pretraining_pool_keeps_its_recordings():
    """The unlabeled pool has no sessions: the shipped teacher's pretraining audio renders as before."""
    assert all(job.session is None for job in _plan(unlabeled))
