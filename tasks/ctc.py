"""Shared part of the CTC tasks (PR, ASR): token vocabulary, CTC loss, greedy decoding, token error rate.

As in s3prl, every CTC target ends with an end token (``<eos>``: ``downstream/ctc/text.py:59,296``; fairseq's
``</s>``: ``downstream/asr/fairseq_dictionary.py:426``) that greedy decoding drops again
(``downstream/ctc/expert.py:88-97``; ``Dictionary.string``).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from downstream.ctc_heads import ctc_greedy_decode, ctc_loss

from .base import Task, Utterance, error_rate_percent

BLANK = "<blank>"


class CTCTask(Task):
    """Subclasses set ``vocab`` (index 0 is the CTC blank), ``end_token`` (a vocab entry appended to every CTC
    target and dropped from decoded hypotheses; None for none) and ``targets(utt)`` -> token list.

    ``score`` computes the token error rate over ``error_unit`` tokens of the decoded sequence (words for WER,
    phones for PER).
    """

    higher_is_better = False
    vocab: list[str] = [BLANK]
    end_token: str | None = None

    def targets(self, utt: Utterance) -> list[str]:
        raise KeyError(f"task {self.name!r} defines no targets")

    def reference_units(self, utt: Utterance) -> list[str]:
        """Units the error rate counts (default: the CTC targets themselves)."""
        return self.targets(utt)

    def hypothesis_units(self, tokens: list[str]) -> list[str]:
        return tokens

    def ctc_targets(self, utt: Utterance) -> list[str]:
        """The tokens CTC is trained on: :meth:`targets` then ``end_token``."""
        return self.targets(utt) + ([self.end_token] if self.end_token else [])

    def _ids(self, utt: Utterance) -> list[int]:
        index = self._index()
        try:
            return [index[t] for t in self.ctc_targets(utt)]
        except KeyError as e:
            raise ValueError(f"utterance {utt.id}: token {e.args[0]!r} is not in the {self.name} vocabulary") from None

    def _index(self) -> dict[str, int]:
        if not hasattr(self, "_index_cache"):
            self._index_cache = {t: i for i, t in enumerate(self.vocab)}
        return self._index_cache

    def loss(self, output: torch.Tensor, lengths: torch.Tensor, utts: Sequence[Utterance]) -> torch.Tensor:
        return ctc_loss(output, lengths, [self._ids(u) for u in utts])

    def predict(self, output: torch.Tensor, lengths: torch.Tensor, utts: Sequence[Utterance]) -> list[Any]:
        end = self._index().get(self.end_token) if self.end_token else None
        return [" ".join(self.vocab[i] for i in ids if i != end) for ids in ctc_greedy_decode(output, lengths)]

    def score(self, split: str, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, float]:
        refs = [self.reference_units(u) for u in utts]
        hyps = [self.hypothesis_units(p.split()) for p in predictions]
        return {self.primary_metric: error_rate_percent(refs, hyps)}
