"""The record every task loader produces and the engine consumes, and how its audio is read.

It lives on the ground floor (beside audio reading) so that the feature cache, the batching and the tasks all
import it from here: no layer above has to hand it down.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .audio import AudioError, load_audio
from .effects import apply_effects, load_with_effects


@dataclass(frozen=True)
class Utterance:
    """One supervised piece of audio (lhotse-style record); nothing past the loader sees the dataset layout.

    id: unique within the task (used as the cache key together with the audio's identity).
    path: audio file; ``start``/``duration`` (seconds) select a slice — ``duration`` is always the slice length.
    channel: the 0-based channel of a multi-channel file this record reads (lhotse's ``Cut.channel``: one side of
      a stereo conversation); None reads every channel, downmixed.
    speaker: speaker id ('' when unknown).
    label: the task's target; its meaning is the task's (each loader documents it):
      PR: phone list (CMU set; the ``.phn.txt`` line or CMUdict of ``transcript``); ASR: None (``transcript`` is the
      target); KS: keyword, ``_unknown_`` or ``_silence_``; IC: ``(action, object, location)``; SID: speaker id;
      ER: one of neu/hap/ang/sad; SF: token ids of the slot-tagged transcript (``tasks/sf/data.py``);
      ASV: training speaker index (None for trial utterances); SD: speaker turns ``((speaker index, start s,
      end s), ...)`` relative to the slice; QbE: None (queries and documents are matched by the scoring files).
    transcript: the text, for tasks that have one.
    effects: a sox effect chain applied to the audio before the upstream (``common/effects.py``; s3prl's ``gain
      -3.0`` for KS and QbE, plus silence trimming for ASV). A chain with ``silence`` changes the length: such a
      record is a whole file (``start`` 0) and ``duration`` is its length *after* the chain.
    """

    id: str
    path: Path
    duration: float
    start: float = 0.0
    speaker: str = ""
    label: Any = None
    transcript: str = ""
    channel: int | None = None
    effects: tuple[tuple[str, ...], ...] = ()


def load_utterance_audio(utt: Utterance) -> torch.Tensor:
    """The utterance's slice after its ``effects`` as a 16 kHz mono float32 ``[time]`` tensor; raises
    :class:`common.audio.AudioError`."""
    if any(e[0] == "silence" for e in utt.effects):
        if utt.start:
            raise AudioError(f"utterance {utt.id}: a sox chain with 'silence' applies to whole files, not to a "
                             f"slice starting at {utt.start} s")
        return load_with_effects(utt.path, utt.effects)
    whole = utt.start == 0.0 and utt.duration <= 0.0
    wav = load_audio(utt.path, start=utt.start, duration=None if whole else utt.duration, channel=utt.channel)
    return apply_effects(wav, utt.effects)
