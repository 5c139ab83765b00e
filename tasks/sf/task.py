"""SF — slot filling on Audio SNIPS, as SUPERB runs it.

Protocol: the frozen upstream's layers are combined by the learnable weighted sum; a projector and a 2-layer BiLSTM
emit CTC log-probabilities over characters plus one ``B-<type>`` and one ``E-<type>`` token per slot type (SUPERB's
character-slot tokenizer); greedy CTC decoding. Metrics as s3prl's ``downstream/ctc/metric.py``: slot-type F1
(primary, used for dev selection) and slot-value CER, in percent. Splits: the ``train``/``valid``/``test`` folders,
each filtered to SUPERB's TTS voices (8 / 4 / 4, ``data.*_voices``). Vocabulary and targets as s3prl's
character-slot tokenizer: blank, ``<eos>`` (ends every target), ``<unk>``, space, A-Z, apostrophe, B-/E- per slot.

Differences from SUPERB (measured or argued in docs/PROTOCOL.md, SF): SpecAugment on the features (``specaug``, on
in the full config, as s3prl's snips.yaml) has no time warp (torchaudio has none for features); batches are sized
by seconds (100 s ≈ SUPERB's 32 utterances) rather than by utterance count.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from downstream.ctc_heads import BiLSTMCTCHead, BiLSTMCTCHeadConfig, ctc_greedy_decode, ctc_loss
from downstream.specaug import SpecAugConfig
from common.datasets import SNIPS_VOICES
from tasks.base import Task, TaskConfig, Utterance
from tasks.registry import register_task

from .data import SNIPS_DIR, load_snips, load_split
from .metrics import slot_type_f1, slot_value_cer


@dataclass
class SFData:
    """The voices each split keeps (s3prl ``downstream/ctc/snips.yaml:49-99``); the folders' other voices are left
    out."""

    train_voices: list[str] = field(default_factory=lambda: list(SNIPS_VOICES["train"]))
    dev_voices: list[str] = field(default_factory=lambda: list(SNIPS_VOICES["dev"]))
    test_voices: list[str] = field(default_factory=lambda: list(SNIPS_VOICES["test"]))


@dataclass
class SFConfig(TaskConfig):
    head: BiLSTMCTCHeadConfig = field(default_factory=BiLSTMCTCHeadConfig)
    specaug: SpecAugConfig = field(default_factory=SpecAugConfig)
    data: SFData = field(default_factory=SFData)


@register_task("sf")
class SlotFilling(Task):
    config_class = SFConfig
    primary_metric = "slot_type_f1"
    higher_is_better = True
    dataset_dirs = (SNIPS_DIR,)
    layout_help = "SNIPS/all.iob.snips.txt, SNIPS/slots.txt, SNIPS/{train,valid,test}/<speaker>-snips-<split>-<n>.wav"

    def __init__(self, config: SFConfig, data_root):
        super().__init__(config, data_root)
        self._snips = None

    def _load(self):
        if self._snips is None:
            self.check_data()
            self._snips = load_snips(self.data_root)
        return self._snips

    @property
    def vocab(self):
        return self._load()[1]

    def load_split(self, split: str) -> list[Utterance]:
        sentences, vocab = self._load()
        dropped: list = []
        utts = load_split(self.data_root, split, sentences, vocab, dropped,
                          voices=getattr(self.config.data, f"{split}_voices"))
        if dropped:
            self.count_dropped(split, "audio files without a transcript line (s3prl skips them too)", len(dropped))
        return utts

    def build_head(self, input_dim: int) -> torch.nn.Module:
        """Output: log-probabilities ``[batch, frame, len(vocab)]`` (characters, slot tags and blank) at the
        upstream frame rate."""
        h = self.config.head
        return BiLSTMCTCHead(input_dim, len(self.vocab), proj_dim=h.proj_dim, hidden_size=h.hidden_size,
                             num_layers=h.num_layers, dropout=h.dropout)

    def loss(self, output: Any, lengths: torch.Tensor, utts: Sequence[Utterance]) -> torch.Tensor:
        return ctc_loss(output, lengths, [list(u.label) for u in utts])

    def predict(self, output: Any, lengths: torch.Tensor, utts: Sequence[Utterance]) -> list[str]:
        return [self.vocab.decode(ids) for ids in ctc_greedy_decode(output, lengths)]

    def score(self, split: str, utts: Sequence[Utterance], predictions: Sequence[str]) -> dict[str, float]:
        refs = [u.transcript for u in utts]
        return {"slot_type_f1": 100.0 * slot_type_f1(list(predictions), refs),
                "slot_value_cer": 100.0 * slot_value_cer(list(predictions), refs)}
