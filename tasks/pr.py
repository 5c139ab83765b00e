"""PR — phoneme recognition on LibriSpeech (SUPERB protocol).

Protocol: train-clean-100 / dev-clean / test-clean; frozen upstream, weighted sum, Linear(D -> 256) projector and a
frame-wise linear layer over 39 phones + blank, CTC loss, greedy decoding; metric PER % (phone edit distance /
reference phones, editdistance), selected on dev-clean.

Differences from SUPERB (s3prl ``ctc/libriphone.yaml``) and why:
* Phones: s3prl reads a prepared lexicon-derived phone transcription (g2p); we read ``<spk>-<chapter>.phn.txt`` when
  present (offline corpus) and otherwise map words with CMUdict (first pronunciation, stress removed). Utterances
  with an out-of-lexicon word are dropped and the count is logged, because a guessed pronunciation would corrupt
  the reference.
* Batches are sized by seconds (``batch.max_seconds``) instead of 16 utterances x 2 accumulation.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from common.datasets import CMU_PHONES
from common.phones import cmudict_phones
from downstream.ctc_heads import BiLSTMCTCHead, LinearCTCHead

from .base import TaskConfig, Utterance
from .ctc import BLANK, CTCTask
from .librispeech import LAYOUT, LIBRISPEECH_DIR, load_librispeech
from .registry import register_task

log = logging.getLogger(__name__)


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
class PRConfig(TaskConfig):
    head: PRHeadConfig = field(default_factory=PRHeadConfig)
    data: LibriSpeechSplits = field(default_factory=LibriSpeechSplits)


def words_to_phones(words: list[str]) -> list[str] | None:
    """CMUdict phones of ``words`` (first pronunciation, stress removed); None if a word is not in CMUdict."""
    try:
        return cmudict_phones(words)
    except KeyError:
        return None


@register_task("pr")
class PhonemeRecognition(CTCTask):
    config_class = PRConfig
    primary_metric = "per"
    dataset_dirs = (LIBRISPEECH_DIR,)
    layout_help = LAYOUT
    vocab = [BLANK, *CMU_PHONES]

    def load_split(self, split: str) -> list[Utterance]:
        subset = getattr(self.config.data, split)
        utts, dropped = [], 0
        for u in load_librispeech(self.data_root, subset, self.name):
            phones = u.label if u.label is not None else words_to_phones(u.transcript.split())
            if phones is None:
                dropped += 1
                continue
            utts.append(Utterance(id=u.id, path=u.path, duration=u.duration, speaker=u.speaker, label=phones,
                                  transcript=u.transcript))
        if dropped:
            log.warning("pr/%s: dropped %d utterance(s) with words missing from CMUdict", subset, dropped)
            self.count_dropped(split, "utterances with words missing from CMUdict (no phone targets)", dropped)
        return utts

    def targets(self, utt: Utterance) -> list[str]:
        return list(utt.label)

    def build_head(self, input_dim: int) -> nn.Module:
        """Output: log-probabilities ``[batch, frame, 40]`` (blank + 39 CMU phones) at the upstream frame rate;
        ``head.kind`` chooses SUPERB's linear probe or a BiLSTM (see :class:`PRHeadConfig`)."""
        h = self.config.head
        if h.kind == "bilstm":
            return BiLSTMCTCHead(input_dim, len(self.vocab), h.proj_dim, h.hidden_size, h.num_layers, dropout=0.0)
        return LinearCTCHead(input_dim, len(self.vocab), h.proj_dim)
