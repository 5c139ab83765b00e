"""PR — phoneme recognition on LibriSpeech, as SUPERB runs it (s3prl ``downstream/ctc`` + ``libriphone.yaml``).

Protocol: train-clean-100 / dev-clean / test-clean, every utterance; frozen upstream, weighted sum, Linear(D -> 256)
projector and a frame-wise linear layer over s3prl's 74 outputs (blank, ``<eos>``, ``<unk>``, then
``phoneme.txt``: SIL, SPN and the 69 stress-marked ARPAbet phones); CTC loss with targets ending in ``<eos>``;
greedy decoding; metric PER % (phone edit distance / reference phones), selected on dev-clean.

Phone targets, in this order:
* ``data.lexicon`` given (``-o data.lexicon=PATH``): s3prl's g2p lexicons, ``librispeech-lexicon-200k-g2p.txt``
  then ``librispeech-lexicon-allothers-g2p.txt`` (PATH is a folder holding them, or one lexicon file); each word's
  first entry, as s3prl (``downstream/ctc/corpus/libriphone.py:45-58``). They cover every LibriSpeech word, so every
  utterance is kept; a word they lack is an error naming it. The rows are SUPERB-comparable.
* otherwise ``<spk>-<chapter>.phn.txt`` beside the transcript (the offline corpus: the phones the synthesiser spoke);
* otherwise CMUdict (first pronunciation, stress kept): the closest thing without s3prl's files. Utterances with a
  word CMUdict lacks cannot be phonemised and are left out, test-clean included, so the PER is not SUPERB's: the
  run says so once and its rows are marked not comparable.

Batches are sized by seconds (``batch.max_seconds``) instead of 16 utterances x 2 accumulation (docs/PROTOCOL.md).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from torch import nn

from common.datasets import SUPERB_PHONES
from common.phones import cmudict_phones
from downstream.ctc_heads import BiLSTMCTCHead, LinearCTCHead

from .base import DatasetNotFoundError, TaskConfig, Utterance
from .ctc import BLANK, CTCTask
from .librispeech import LAYOUT, LIBRISPEECH_DIR, load_librispeech
from .listfile import ListFileError, read_fields
from .registry import register_task

log = logging.getLogger(__name__)

# s3prl libriphone.yaml:40-43, in its order (the first file's entry wins for a word in both)
LEXICON_FILES = ("librispeech-lexicon-200k-g2p.txt", "librispeech-lexicon-allothers-g2p.txt")
EOS, UNK = "<eos>", "<unk>"
NOT_COMPARABLE_CMUDICT = ("PR phones from CMUdict (no -o data.lexicon=<s3prl's g2p lexicons>): utterances with "
                          "out-of-CMUdict words are left out")
_SAID: set[str] = set()  # the not-comparable line is printed once per process


@dataclass
class PRHeadConfig:
    # "linear": SUPERB's probe (projector + frame-wise linear, no non-linearity between). "bilstm": the ASR head's
    # BiLSTM-CTC (hidden_size, num_layers) -- not SUPERB's PR protocol; results rows record the config
    kind: Literal["linear", "bilstm"] = "linear"
    proj_dim: int = 256
    hidden_size: int = 128
    num_layers: int = 1


@dataclass
class LibriSpeechSplits:
    train: str = "train-clean-100"
    dev: str = "dev-clean"
    test: str = "test-clean"


@dataclass
class PRData(LibriSpeechSplits):
    # s3prl's g2p lexicons: a folder holding LEXICON_FILES, or one lexicon file ("" = none: see the module docstring)
    lexicon: str = ""


@dataclass
class PRConfig(TaskConfig):
    head: PRHeadConfig = field(default_factory=PRHeadConfig)
    data: PRData = field(default_factory=PRData)


def lexicon_files(path: str | Path) -> list[Path]:
    """The lexicon files ``data.lexicon`` names: a file, or a folder's ``LEXICON_FILES`` (both must be there).
    Raises DatasetNotFoundError naming what is missing."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = [path / name for name in LEXICON_FILES]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DatasetNotFoundError(f"data.lexicon={path}: {', '.join(missing)} not found there (s3prl's "
                                       f"downstream/ctc/lexicon/ files: {', '.join(LEXICON_FILES)})")
        return files
    raise DatasetNotFoundError(f"data.lexicon={path}: no such lexicon file or folder")


def read_lexicon(files: list[Path]) -> dict[str, tuple[str, ...]]:
    """``WORD -> phones`` from s3prl-format lexicons (``WORD PH1 PH2 ...`` per line), the first entry of a word
    across ``files`` in order. Raises ListFileError naming file and line for a phone outside SUPERB's set.
    Read once per process while the files stay unchanged (the three splits share it)."""
    return _read_lexicon(tuple((f, f.stat().st_mtime_ns, f.stat().st_size) for f in files))


@functools.lru_cache(maxsize=2)
def _read_lexicon(files: tuple[tuple[Path, int, int], ...]) -> dict[str, tuple[str, ...]]:
    known = frozenset(SUPERB_PHONES)
    out: dict[str, tuple[str, ...]] = {}
    for path, _, _ in files:
        for lineno, fields, raw in read_fields(path, 2, None, "'WORD PHONE PHONE ...'"):
            bad = [p for p in fields[1:] if p not in known]
            if bad:
                raise ListFileError(path, lineno, f"phone(s) {bad} are not in SUPERB's phone set (stress-marked "
                                    "ARPAbet + SIL, SPN)", raw)
            out.setdefault(fields[0].upper(), tuple(fields[1:]))
    return out


@register_task("pr")
class PhonemeRecognition(CTCTask):
    config_class = PRConfig
    primary_metric = "per"
    dataset_dirs = (LIBRISPEECH_DIR,)
    layout_help = LAYOUT
    vocab = [BLANK, EOS, UNK, *SUPERB_PHONES]
    end_token = EOS

    def load_split(self, split: str) -> list[Utterance]:
        subset = getattr(self.config.data, split)
        lexicon = read_lexicon(lexicon_files(self.config.data.lexicon)) if self.config.data.lexicon else None
        known = frozenset(SUPERB_PHONES)
        utts, dropped = [], 0
        for u in load_librispeech(self.data_root, subset, self.name):
            if lexicon is not None:
                missing = [w for w in u.transcript.split() if w not in lexicon]
                if missing:
                    raise ValueError(f"utterance {u.id}: word {missing[0]!r} is not in data.lexicon="
                                     f"{self.config.data.lexicon} (s3prl's g2p lexicons cover every LibriSpeech word)")
                phones = [p for w in u.transcript.split() for p in lexicon[w]]
            elif u.label is not None:
                bad = sorted(set(u.label) - known)
                if bad:
                    raise ValueError(f"utterance {u.id} ({u.path.parent}): .phn.txt phones {bad[:5]} are not in "
                                     "SUPERB's stress-marked set (a corpus built before it: rebuild it with "
                                     "python -m synth)")
                phones = list(u.label)
            else:
                try:
                    phones = cmudict_phones(u.transcript.split())
                except KeyError:
                    dropped += 1
                    continue
            utts.append(Utterance(id=u.id, path=u.path, duration=u.duration, speaker=u.speaker, label=phones,
                                  transcript=u.transcript))
        if dropped:
            self.count_dropped(split, "utterances with words missing from CMUdict (no phone targets)", dropped)
            if split == "test" and str(self.data_root) not in _SAID:
                _SAID.add(str(self.data_root))
                log.warning("PR: PER is not comparable with SUPERB's: no -o data.lexicon=<s3prl's "
                            "downstream/ctc/lexicon folder>, so phones come from CMUdict and %d test utterance(s) "
                            "with out-of-CMUdict words are left out (SUPERB keeps every one)", dropped)
        return utts

    def superb_comparability(self, dropped: dict[str, dict[str, int]]) -> list[str]:
        """Not SUPERB's numbers when phones came from CMUdict and utterances were left out for it (no lexicon;
        ``dropped``: the audit's left-out counts per split and reason)."""
        if not self.config.data.lexicon and any("CMUdict" in reason for counts in dropped.values()
                                                 for reason in counts):
            return [NOT_COMPARABLE_CMUDICT]
        return []

    def targets(self, utt: Utterance) -> list[str]:
        return list(utt.label)

    def build_head(self, input_dim: int) -> nn.Module:
        """Output: log-probabilities ``[batch, frame, 74]`` (blank, ``<eos>``, ``<unk>``, SIL, SPN and the 69
        stress-marked phones, as s3prl's) at the upstream frame rate; ``head.kind`` chooses SUPERB's linear probe
        or a BiLSTM (see :class:`PRHeadConfig`)."""
        h = self.config.head
        if h.kind == "bilstm":
            return BiLSTMCTCHead(input_dim, len(self.vocab), h.proj_dim, h.hidden_size, h.num_layers, dropout=0.0)
        return LinearCTCHead(input_dim, len(self.vocab), h.proj_dim)
