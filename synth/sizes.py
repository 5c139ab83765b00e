"""How big each part of the corpus is: typed settings loaded from ``synth/sizes/<size>.yaml``."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from common.config import load_config

SIZES_DIR = Path(__file__).parent / "sizes"


@dataclasses.dataclass
class LibriSpeechSize:
    train_speakers: int = 40
    dev_speakers: int = 8
    test_speakers: int = 8
    train_utts_per_speaker: int = 25
    eval_utts_per_speaker: int = 12
    min_words: int = 6
    max_words: int = 16


@dataclasses.dataclass
class SpeechCommandsSize:
    train_speakers: int = 40
    validation_speakers: int = 6
    testing_speakers: int = 6
    test_set_speakers: int = 8
    keyword_repeats: int = 2  # times each speaker says each of the 10 keywords
    auxiliary_words_per_speaker: int = 6  # of the 20 non-keyword words, each speaker says this many
    background_seconds: float = 30.0
    test_set_unknown_per_speaker: int = 3
    test_set_silence_clips: int = 24


@dataclasses.dataclass
class FluentSize:
    train_speakers: int = 30
    valid_speakers: int = 6
    test_speakers: int = 8
    train_utts_per_intent: int = 24
    eval_utts_per_intent: int = 5


@dataclasses.dataclass
class VoxCelebSize:
    dev_speakers: int = 40
    test_speakers: int = 12
    videos_per_speaker: int = 4
    utts_per_video: int = 4
    trials: int = 2400


@dataclasses.dataclass
class IemocapSize:
    utts_per_emotion_per_speaker: int = 16


@dataclasses.dataclass
class QuesstSize:
    documents: int = 240
    document_speakers: int = 20
    query_speakers: int = 8
    dev_queries: int = 20
    eval_queries: int = 20
    docs_per_query: int = 4


@dataclasses.dataclass
class SnipsSize:
    train_utts_per_speaker: int = 90
    eval_utts_per_speaker: int = 20


@dataclasses.dataclass
class Libri2MixSize:
    train_recordings: int = 120
    dev_recordings: int = 20
    test_recordings: int = 20
    speakers_per_split: tuple[int, int, int] = (24, 8, 8)
    turns: tuple[int, int] = (3, 5)


@dataclasses.dataclass
class UnlabeledSize:
    utterances: int = 1800
    min_words: int = 10
    max_words: int = 22


@dataclasses.dataclass
class SizeConfig:
    name: str = "small"
    librispeech: LibriSpeechSize = dataclasses.field(default_factory=LibriSpeechSize)
    speech_commands: SpeechCommandsSize = dataclasses.field(default_factory=SpeechCommandsSize)
    fluent: FluentSize = dataclasses.field(default_factory=FluentSize)
    voxceleb: VoxCelebSize = dataclasses.field(default_factory=VoxCelebSize)
    iemocap: IemocapSize = dataclasses.field(default_factory=IemocapSize)
    quesst: QuesstSize = dataclasses.field(default_factory=QuesstSize)
    snips: SnipsSize = dataclasses.field(default_factory=SnipsSize)
    libri2mix: Libri2MixSize = dataclasses.field(default_factory=Libri2MixSize)
    unlabeled: UnlabeledSize = dataclasses.field(default_factory=UnlabeledSize)


def available_sizes() -> list[str]:
    return sorted(p.stem for p in SIZES_DIR.glob("*.yaml"))


def load_size(name: str) -> SizeConfig:
    path = SIZES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown corpus size {name!r}; known sizes: {', '.join(available_sizes())}")
    return load_config(SizeConfig, path)
