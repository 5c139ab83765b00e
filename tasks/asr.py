"""ASR — speech recognition on LibriSpeech (SUPERB protocol).

Protocol: train-clean-100 / dev-clean / test-clean; frozen upstream, weighted sum, Linear(D -> 1024) projector,
2-layer BiLSTM (1024 per direction, dropout 0.2 after each), CTC over s3prl's 32 outputs (blank, ``<pad>``,
``</s>``, ``<unk>``, A-Z, apostrophe, word boundary ``|``) with targets ending ``| </s>``, greedy decoding, no
language model; metric WER % (word edit distance / reference words, editdistance), selected on dev-clean; CER %
(character edit distance, word boundaries included) is reported beside it.

Differences from SUPERB (s3prl ``asr/config.yaml``) and why:
* SpecAugment on the weighted-sum features as s3prl's recipe (``specaug``: 2 time masks of 0-40 frames, 4 feature
  masks of 0-50 dims, on in the full SUPERB config) but without its time warp (torchaudio has none for features).
* Batches are sized by seconds (``batch.max_seconds``: 200 s, s3prl's effective 16 utterances) instead of by
  utterance count, so memory stays flat.
* Greedy decoding only (SUPERB's headline ASR number is also without LM).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Sequence

from torch import nn

from downstream.ctc_heads import BiLSTMCTCHead, BiLSTMCTCHeadConfig, FrameLinearCTCHead
from downstream.specaug import SpecAugConfig

from .base import TaskConfig, Utterance, error_rate_percent
from .ctc import BLANK, CTCTask
from .librispeech import LAYOUT, LIBRISPEECH_DIR, load_librispeech
from .pr import LibriSpeechSplits
from .registry import register_task

WORD_BOUNDARY = "|"
CHARS = [WORD_BOUNDARY, "'"] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
END = "</s>"
# s3prl's fairseq dictionary: <s> (its CTC blank), <pad>, </s>, <unk>, then char.dict's 28 characters
# (downstream/asr/expert.py:84-100): the same 32 outputs, so the head has SUPERB's parameter count.
SPECIALS = ["<pad>", END, "<unk>"]


log = logging.getLogger(__name__)


@dataclass
class ASRHeadConfig(BiLSTMCTCHeadConfig):
    # "bilstm": SUPERB's head. "linear": one frame-wise linear (transformers' *ForCTC lm_head), for fine-tuning an
    # upstream with --layer on its last hidden state: the run then also exports a HubertForCTC dir.
    kind: Literal["bilstm", "linear"] = "bilstm"


@dataclass
class ASRConfig(TaskConfig):
    head: ASRHeadConfig = field(default_factory=ASRHeadConfig)
    specaug: SpecAugConfig = field(default_factory=SpecAugConfig)
    data: LibriSpeechSplits = field(default_factory=LibriSpeechSplits)


def text_to_chars(text: str) -> list[str]:
    """``"HI THERE"`` -> ``['H', 'I', '|', 'T', ...]``; characters outside A-Z and ' are dropped."""
    words = ["".join(c for c in w if c in CHARS) for w in text.upper().split()]
    return list(WORD_BOUNDARY.join(w for w in words if w))


def chars_to_words(chars: list[str]) -> list[str]:
    return [w for w in "".join(chars).split(WORD_BOUNDARY) if w]


@register_task("asr")
class SpeechRecognition(CTCTask):
    config_class = ASRConfig
    primary_metric = "wer"
    dataset_dirs = (LIBRISPEECH_DIR,)
    layout_help = LAYOUT
    vocab = [BLANK, *SPECIALS, *CHARS]
    end_token = END

    def load_split(self, split: str) -> list[Utterance]:
        # ASR's target is the transcript; drop the phone labels the loader attaches for PR.
        return [replace(u, label=None) for u in load_librispeech(self.data_root, getattr(self.config.data, split),
                                                                 self.name)]

    def targets(self, utt: Utterance) -> list[str]:
        """Characters with ``|`` between words and after the last one, as s3prl's (``downstream/asr/dataset.py:121``)."""
        return text_to_chars(utt.transcript) + [WORD_BOUNDARY]

    def reference_units(self, utt: Utterance) -> list[str]:
        return utt.transcript.split()

    def hypothesis_units(self, tokens: list[str]) -> list[str]:
        return chars_to_words(tokens)

    def score(self, split: str, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, float]:
        """WER (the selected metric), and CER beside it: the character error rate over the same characters, each
        word boundary counting as one (reference ``text_to_chars(transcript)``, hypothesis its decoded words joined
        by ``|``). CER shows a head that learns spelling before it gets whole words right."""
        scores = super().score(split, utts, predictions)
        refs = [text_to_chars(u.transcript) for u in utts]
        hyps = [list(WORD_BOUNDARY.join(chars_to_words(p.split()))) for p in predictions]
        scores["cer"] = error_rate_percent(refs, hyps)
        return scores

    def build_head(self, input_dim: int) -> nn.Module:
        """Output: log-probabilities ``[batch, frame, len(vocab)]`` (characters + blank) at the upstream frame
        rate (``head.kind``: the BiLSTM, or one linear per frame); ``lengths`` stay the input's valid frames."""
        h = self.config.head
        if h.kind == "linear":
            return FrameLinearCTCHead(input_dim, len(self.vocab))
        return BiLSTMCTCHead(input_dim, len(self.vocab), h.proj_dim, h.hidden_size, h.num_layers, h.dropout)

    def export_fine_tuned(self, upstream: nn.Module, model: nn.Module, layer: int | None, num_layers: int,
                          directory: Path) -> Path | None:
        """After ``--upstream-trainable``: a transformers ``HubertForCTC`` dir (+ its CTC tokenizer and feature
        extractor) that decodes as this run does, when the run is representable: a HuBERT-family upstream,
        ``head.kind=linear`` and ``--layer`` on the last hidden state. Otherwise logs why and returns None.

        upstream: the fine-tuned upstream; model: the trained downstream model (``.head``); layer: the fixed hidden
        state (None: the weighted sum); num_layers: how many hidden states the upstream has."""
        from upstream.checkpoints import export_hubert_ctc
        from upstream.hubert import HubertUpstream

        needs = []
        if self.config.head.kind != "linear":
            needs.append("-o head.kind=linear")
        if layer != num_layers - 1:
            needs.append(f"--layer {num_layers - 1} (the last hidden state)")
        if not isinstance(upstream, HubertUpstream) or upstream.include_pred_heads:
            needs.append("a HuBERT-family upstream without prediction-head outputs")
        if needs:
            log.info("no HubertForCTC export (transformers' CTC model is one linear on the last hidden state): "
                     "it needs %s", ", ".join(needs))
            return None
        path = export_hubert_ctc(upstream, model.head.output, self.vocab, directory, WORD_BOUNDARY)
        log.info("HubertForCTC written to %s", path)
        return path
