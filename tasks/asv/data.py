"""VoxCeleb1 loader for speaker verification: training speakers, a held-out dev trial list, the official test trials.

Layout: ``VoxCeleb1/dev/wav/<spk>/<video>/<n>.wav`` (development speakers), ``VoxCeleb1/test/wav/...`` and
``VoxCeleb1/veri_test.txt`` (``<1|0> <spk>/<video>/<n>.wav <spk>/<video>/<n>.wav``, paths under ``test/wav``).
The dev trial list is made here from development speakers held out of training (never from test).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from common import datasets
from common.audio import audio_duration
from common.folders import layout_files
from tasks.base import DatasetNotFoundError, Utterance
from tasks.listfile import ListFileError, read_fields

VOX_DIR = datasets.VOXCELEB1


@dataclass(frozen=True)
class Trial:
    label: int  # 1 = same speaker
    enroll: str  # utterance ids
    test: str


def _utterance(wav_root: Path, rel: str) -> Utterance:
    path = wav_root / rel
    return Utterance(id=rel[:-4] if rel.endswith(".wav") else rel, path=path, duration=audio_duration(path),
                     speaker=rel.split("/")[0])


def scan_speakers(wav_root: Path) -> dict[str, list[Utterance]]:
    """Speaker id → utterances under ``wav_root`` (``<spk>/<video>/<n>.wav``), sorted."""
    if not wav_root.is_dir():
        raise DatasetNotFoundError(f"VoxCeleb1 folder {wav_root} not found (expected <spk>/<video>/<n>.wav)")
    out: dict[str, list[Utterance]] = {}
    for wav in layout_files(wav_root, "*/*/*.wav")[0]:
        utt = _utterance(wav_root, wav.relative_to(wav_root).as_posix())
        out.setdefault(utt.speaker, []).append(utt)
    if not out:
        raise DatasetNotFoundError(f"no <spk>/<video>/<n>.wav files under {wav_root}")
    return out


def split_dev_speakers(speakers: list[str], num_dev: int, seed: int) -> tuple[list[str], list[str]]:
    """(training speakers, held-out dev speakers), chosen by a seeded shuffle of the sorted ids."""
    if not 2 <= num_dev < len(speakers):
        raise ValueError(f"need 2 <= dev speakers < {len(speakers)} development speakers, got {num_dev}")
    order = sorted(speakers)
    random.Random(seed).shuffle(order)
    return sorted(order[num_dev:]), sorted(order[:num_dev])


def make_trials(by_speaker: dict[str, list[Utterance]], num_trials: int, seed: int) -> list[Trial]:
    """A balanced trial list: half same-speaker pairs, half different-speaker pairs, no pair twice."""
    rng = random.Random(seed)
    speakers = sorted(s for s, u in by_speaker.items() if u)
    multi = [s for s in speakers if len(by_speaker[s]) >= 2]
    if not multi or len(speakers) < 2:
        raise ValueError("dev trials need a speaker with two utterances and at least two speakers")
    trials, seen = [], set()
    for attempt in range(num_trials * 20):
        if len(trials) >= num_trials:
            break
        if len(trials) % 2 == 0:
            spk = rng.choice(multi)
            a, b = rng.sample(by_speaker[spk], 2)
            label = 1
        else:
            s1, s2 = rng.sample(speakers, 2)
            a, b = rng.choice(by_speaker[s1]), rng.choice(by_speaker[s2])
            label = 0
        key = tuple(sorted((a.id, b.id)))
        if key not in seen:
            seen.add(key)
            trials.append(Trial(label, a.id, b.id))
    return trials


def read_trial_list(path: Path, wav_root: Path) -> tuple[list[Trial], list[Utterance]]:
    """Trials of ``veri_test.txt`` and the utterances they use (checked to exist, line named otherwise)."""
    if not path.is_file():
        raise DatasetNotFoundError(f"VoxCeleb1 trial list {path} not found")
    trials, utts = [], {}
    for lineno, (label, a, b), raw in read_fields(path, 3, 3, "'<1|0> <spk>/<video>/<n>.wav <...>.wav'"):
        if label not in ("0", "1"):
            raise ListFileError(path, lineno, f"trial label must be 1 (same speaker) or 0, got {label!r}", raw)
        for rel in (a, b):
            if rel not in utts:
                if not (wav_root / rel).is_file():
                    raise ListFileError(path, lineno, f"audio {wav_root / rel} not found", raw)
                utts[rel] = _utterance(wav_root, rel)
        trials.append(Trial(int(label), utts[a].id, utts[b].id))
    if not trials:
        raise ListFileError(path, 1, "no trials")
    return trials, list(utts.values())
