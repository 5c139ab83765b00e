"""ER — emotion recognition on IEMOCAP (SUPERB protocol).

Protocol: four classes neu, hap (happy + excited merged), ang, sad; other labels dropped. Leave-one-session-out:
fold K (``--fold K``, K = 1..5) tests on Session K and trains on the other four sessions, of which a random 20 %
(fixed by the fold, not by the run seed) is held out as dev. Mean-pooled linear head, cross-entropy; metric
accuracy %. The report averages the test accuracy over the folds that were run (SUPERB reports the mean of 5):
``--task all`` with the full profile runs the 5 folds, ``--task er`` runs fold ``data.fold`` (1) or ``--fold K``.

Differences from SUPERB (s3prl ``emotion``) and why:
* The dev subset is drawn by hashing utterance ids with the fold number, so it is identical across upstreams,
  machines and library versions. s3prl's is fixed too (``torch.manual_seed(0)`` then ``random_split`` 80/20,
  ``emotion/expert.py:48-52``) but is another 20 %: it depends on torch's generator and the dataset order.
* Batches are sized by seconds instead of 4 utterances x 8 accumulation.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from common import datasets
from common.audio import audio_duration
from common.folders import layout_files

from .base import DatasetNotFoundError, Utterance
from .classification import ClassificationTask, PooledTaskConfig
from .registry import register_task

IEMOCAP_DIR = datasets.IEMOCAP
LABEL_MAP = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\t(\S+)\t(\S+)\t\[")


@dataclass
class ERDataConfig:
    fold: int = 1  # test session
    dev_fraction: float = 0.2


@dataclass
class ERConfig(PooledTaskConfig):
    data: ERDataConfig = field(default_factory=ERDataConfig)


def read_session_labels(session_dir, dropped: dict[str, str] | None = None) -> dict[str, str]:
    """``{utterance id: 4-class label}`` from ``SessionN/dialog/EmoEvaluation/*.txt`` (other lines ignored).

    Utterances whose label is outside the 4 classes (``fru``, ``xxx``, ...; SUPERB drops them) go into
    ``dropped`` as ``{utterance id: label}`` when given. An utterance labelled twice (two lines, in one file or two)
    raises ``ValueError`` naming every such line: which label would win is not for the loader to guess."""
    labels, first, twice = {}, {}, []
    for path in layout_files(session_dir / "dialog" / "EmoEvaluation", "*.txt")[0]:
        # latin-1 never fails: only the ASCII header lines are read, and IEMOCAP's free-text comments vary
        text = path.read_text(encoding="latin-1").lstrip("\ufeff\xef\xbb\xbf")
        for n, line in enumerate(text.splitlines(), 1):
            m = LINE.match(line)
            if not m:
                continue
            if m.group(1) in first:
                twice.append(f"{path}:{n}: {m.group(1)} is already labelled at {first[m.group(1)]}")
                continue
            first[m.group(1)] = f"{path.name}:{n}"
            if m.group(2) in LABEL_MAP:
                labels[m.group(1)] = LABEL_MAP[m.group(2)]
            elif dropped is not None:
                dropped[m.group(1)] = m.group(2)
    if twice:
        raise ValueError(f"{len(twice)} utterance(s) labelled twice: " + "; ".join(twice[:40])
                         + (f"; ... and {len(twice) - 40} more" if len(twice) > 40 else ""))
    return labels


@register_task("er")
class EmotionRecognition(ClassificationTask):
    config_class = ERConfig
    folds = (1, 2, 3, 4, 5)  # leave-one-session-out: `--task all` (full profile) runs every one
    dataset_dirs = (IEMOCAP_DIR,)
    layout_help = (f"{IEMOCAP_DIR}/Session{{1..5}}/sentences/wav/<dialog>/<utt>.wav + "
                   f"{IEMOCAP_DIR}/Session{{N}}/dialog/EmoEvaluation/<dialog>.txt")
    classes = ["neu", "hap", "ang", "sad"]
    # leave-one-session-out: the test session's two speakers are in no other session (dev is drawn from train's)
    speaker_disjoint_splits = (("train", "test"), ("dev", "test"))
    speaker_protocol = "IEMOCAP leave-one-session-out: each session has its own two speakers"

    def __init__(self, config: ERConfig, data_root):
        super().__init__(config, data_root)
        if not 1 <= config.data.fold <= 5:
            raise ValueError(f"task 'er': --fold must be 1..5 (the test session), got {config.data.fold}")

    def fold(self) -> int:
        return self.config.data.fold

    def _session(self, n: int) -> list[Utterance]:
        session = self.data_root / IEMOCAP_DIR / f"Session{n}"
        if not session.is_dir():
            raise DatasetNotFoundError(f"task 'er': {session} not found (expected {self.layout_help})")
        utts, dropped = [], {}
        labels = read_session_labels(session, dropped)
        self._dropped_ids = {**getattr(self, "_dropped_ids", {}), **dropped}
        missing = []
        for utt_id, label in sorted(labels.items()):
            dialog = utt_id.rsplit("_", 1)[0]
            wav = session / "sentences" / "wav" / dialog / f"{utt_id}.wav"
            if not wav.is_file():
                missing.append(str(wav))
                continue
            utts.append(Utterance(id=utt_id, path=wav, duration=audio_duration(wav), speaker=utt_id[:5] + utt_id[-4],
                                  label=label))
        if missing:  # every one, not only the first
            raise DatasetNotFoundError(f"task 'er': {len(missing)} file(s) labelled in {session}/dialog/EmoEvaluation "
                                       f"are missing: " + ", ".join(missing[:40])
                                       + (f", ... and {len(missing) - 40} more" if len(missing) > 40 else ""))
        return utts

    def _is_dev(self, utt_id: str) -> bool:
        digest = hashlib.sha256(f"fold{self.config.data.fold}:{utt_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2 ** 64 < self.config.data.dev_fraction

    def load_split(self, split: str) -> list[Utterance]:
        fold = self.config.data.fold
        self._dropped_ids = {}
        if split == "test":
            utts = self._session(fold)
        else:
            rest = [u for n in range(1, 6) if n != fold for u in self._session(n)]
            utts = [u for u in rest if self._is_dev(u.id) == (split == "dev")]
            self._dropped_ids = {k: v for k, v in self._dropped_ids.items() if self._is_dev(k) == (split == "dev")}
        for label in sorted(set(self._dropped_ids.values())):  # SUPERB keeps neu/hap(+exc)/ang/sad only
            n = sum(v == label for v in self._dropped_ids.values())
            self.count_dropped(split, f"utterances labelled {label!r} (not one of the 4 classes)", n)
        return utts
