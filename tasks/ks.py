"""KS — keyword spotting on Speech Commands v0.01 (SUPERB protocol).

Protocol: 12 classes — the 10 words yes/no/up/down/left/right/on/off/stop/go, ``_unknown_`` (every other word) and
``_silence_``; train = the train root minus ``validation_list.txt`` and ``testing_list.txt``; dev =
``validation_list.txt``; test = the separate official test archive (12 folders). Mean-pooled linear head
(Linear(D -> 256), mean pool, linear), cross-entropy with class-balanced sampling; metric accuracy %.

Also as s3prl: every clip goes through sox ``gain -3.0`` before the upstream (``speech_commands/dataset.py:22,35``;
``data.gain_db``), and checkpoints are chosen on a class-balanced dev accuracy: s3prl scores each dev evaluation on a
fresh resample of dev drawn with weights 1 / class count (``speech_commands/expert.py:64-74,90-91``), whose expected
accuracy is the mean over classes of each class's accuracy. The dev row's ``accuracy`` is that expectation (no
resampling noise); ``accuracy_unbalanced`` is the plain one. Test accuracy is plain, as s3prl's.

Differences from SUPERB (s3prl ``speech_commands``) and why:
* ``_silence_`` for train/dev: s3prl draws a random 1 s crop of a background-noise file every time such an item is
  loaded; we cut the noise files into fixed 1 s slices (every 10th slice to dev, the rest to train), so the data —
  and hence the feature cache — is deterministic.
* Batches are sized by seconds instead of 32 utterances.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from common import datasets
from common.audio import audio_duration
from common.folders import layout_files

from .audit import MAX_LISTED
from .base import DatasetNotFoundError, Utterance, require_file
from .classification import ClassificationTask, PooledTaskConfig, balanced_weights
from .listfile import read_text_lines
from .registry import register_task

WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
UNKNOWN, SILENCE = "_unknown_", "_silence_"
CLASSES = WORDS + [UNKNOWN, SILENCE]
TRAIN_DIR, TEST_DIR = datasets.SPEECH_COMMANDS, datasets.SPEECH_COMMANDS_TEST
NOISE_DIR = "_background_noise_"


@dataclass
class KSDataConfig:
    gain_db: float = -3.0  # sox gain before the upstream (SUPERB: -3.0; 0 = none)
    silence_seconds: float = 1.0  # length of the _silence_ clips cut from background noise
    silence_dev_every: int = 10  # every N-th silence clip goes to dev


@dataclass
class KSConfig(PooledTaskConfig):
    data: KSDataConfig = field(default_factory=KSDataConfig)


def _word_label(word: str) -> str:
    return word if word in WORDS else UNKNOWN


def _read_list(path: Path) -> dict[str, int]:
    """``{relative path: line number}`` of a Speech Commands list (BOM and CRLF accepted, blank lines skipped)."""
    out: dict[str, int] = {}
    for n, line in enumerate(read_text_lines(path), 1):
        if line.strip():
            out.setdefault(line.strip(), n)
    return out


@register_task("ks")
class KeywordSpotting(ClassificationTask):
    config_class = KSConfig
    dataset_dirs = (TRAIN_DIR, TEST_DIR)
    layout_help = (f"{TRAIN_DIR}/<word>/<hash>_nohash_<n>.wav + validation_list.txt + testing_list.txt + "
                   f"{NOISE_DIR}/*.wav, and {TEST_DIR}/<12 class folders>/*.wav")
    classes = CLASSES

    def load_split(self, split: str) -> list[Utterance]:
        utts = self._load_test() if split == "test" else self._load_train_dev(split)
        return [replace(u, effects=self.audio_effects()) for u in utts]

    def audio_effects(self) -> tuple[tuple[str, ...], ...]:
        """s3prl's ``gain -3.0`` (``data.gain_db``; none at 0)."""
        gain = self.config.data.gain_db
        return (("gain", f"{gain:.1f}"),) if gain else ()

    def score(self, split: str, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, float]:
        """Test: accuracy %. Dev: ``accuracy`` = the mean of the per-class accuracies (the expectation of s3prl's
        class-balanced dev resample, which picks the checkpoint) and ``accuracy_unbalanced``."""
        plain = super().score(split, utts, predictions)
        if split != "dev":
            return plain
        by_class: dict[str, list[bool]] = {}
        for u, p in zip(utts, predictions):
            by_class.setdefault(u.label, []).append(u.label == p)
        balanced = 100.0 * sum(sum(v) / len(v) for v in by_class.values()) / len(by_class)
        return {"accuracy": balanced, "accuracy_unbalanced": plain["accuracy"]}

    def _load_train_dev(self, split: str) -> list[Utterance]:
        root = self.data_root / TRAIN_DIR
        held_out = {
            "dev": _read_list(require_file(root / "validation_list.txt", self.name, "dev file list")),
            "test": _read_list(require_file(root / "testing_list.txt", self.name, "test file list")),
        }
        utts = []
        for wav in layout_files(root, "*/*.wav")[0]:
            word = wav.parent.name
            if word == NOISE_DIR:
                continue
            rel = f"{word}/{wav.name}"
            in_split = rel in held_out["dev"] if split == "dev" else rel not in held_out["dev"] | held_out["test"]
            if in_split:
                utts.append(Utterance(id=rel, path=wav, duration=audio_duration(wav), speaker=wav.name.split("_")[0],
                                      label=_word_label(word)))
        return utts + self._silence_clips(split)

    def _silence_clips(self, split: str) -> list[Utterance]:
        noise = layout_files(self.data_root / TRAIN_DIR / NOISE_DIR, "*.wav")[0]
        if not noise:
            raise DatasetNotFoundError(f"task 'ks': no {NOISE_DIR}/*.wav under {self.data_root / TRAIN_DIR} "
                                       "(the _silence_ class is cut from them)")
        clip, every = self.config.data.silence_seconds, self.config.data.silence_dev_every
        utts, n = [], 0
        for wav in noise:
            total = audio_duration(wav)
            for k in range(int(total // clip)):
                if (n % every == 0) == (split == "dev"):
                    utts.append(Utterance(id=f"{NOISE_DIR}/{wav.stem}@{k}", path=wav, start=k * clip,
                                          duration=clip, label=SILENCE))
                n += 1
        return utts

    def audit_splits(self, splits: dict[str, list[Utterance]], warnings: list[str]) -> list[str]:
        """Every line of validation_list.txt / testing_list.txt names an existing file; the dev list is not empty
        (else dev would silently be the silence clips and the listed files would train); no file is on both."""
        root = self.data_root / TRAIN_DIR
        problems = super().audit_splits(splits, warnings)
        lists = {name: _read_list(root / name) for name in ("validation_list.txt", "testing_list.txt")}
        if not lists["validation_list.txt"]:
            problems.append(f"{root / 'validation_list.txt'} is empty: the dev split would hold only _silence_ "
                            f"clips and the files meant for dev would be trained on")
        for name, entries in lists.items():
            missing = [(n, rel) for rel, n in entries.items() if not (root / rel).is_file()]
            for n, rel in missing[:MAX_LISTED]:
                problems.append(f"{root / name}:{n}: {rel} does not exist under {root}")
            if len(missing) > MAX_LISTED:
                problems.append(f"{root / name}: {len(missing) - MAX_LISTED} more listed files do not exist")
        both = sorted(set(lists["validation_list.txt"]) & set(lists["testing_list.txt"]))
        if both:
            shown = ", ".join(both[:MAX_LISTED]) + (f", ... and {len(both) - MAX_LISTED} more"
                                                    if len(both) > MAX_LISTED else "")
            problems.append(f"{len(both)} file(s) are in both validation_list.txt and testing_list.txt: {shown}")
        return problems

    def _load_test(self) -> list[Utterance]:
        root = self.data_root / TEST_DIR
        utts = []
        for wav in layout_files(root, "*/*.wav")[0]:
            label = wav.parent.name
            if label not in CLASSES:
                raise DatasetNotFoundError(f"task 'ks': unexpected test folder {wav.parent} (expected the 12 "
                                           f"class folders {', '.join(CLASSES)})")
            utts.append(Utterance(id=f"test/{label}/{wav.name}", path=wav, duration=audio_duration(wav), label=label))
        return utts

    def train_sampling_weights(self, utts: Sequence[Utterance]) -> list[float]:
        return balanced_weights([u.label for u in utts])
