"""Frame-level CTC heads (PR: linear; ASR: 2-layer BiLSTM) and greedy CTC decoding. Index 0 is the blank."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.tensors import frame_mask

from .rnn import MaskedBiLSTM


class LinearCTCHead(nn.Module):
    """PR head: projector then a frame-wise linear to the vocabulary.

    ``features [batch, frame, input_dim] -> log-probabilities [batch, frame, vocab]``.
    """

    def __init__(self, input_dim: int, vocab_size: int, proj_dim: int = 256):
        super().__init__()
        self.projector = nn.Linear(input_dim, proj_dim)
        self.output = nn.Linear(proj_dim, vocab_size)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.output(self.projector(features)), dim=-1)


class FrameLinearCTCHead(nn.Module):
    """One linear layer per frame to the vocabulary, as transformers' ``*ForCTC`` models (``lm_head``) have: the
    head for fine-tuning an upstream on ASR that exports as a ``HubertForCTC``.

    ``features [batch, frame, input_dim] -> log-probabilities [batch, frame, vocab]``.
    """

    def __init__(self, input_dim: int, vocab_size: int):
        super().__init__()
        self.output = nn.Linear(input_dim, vocab_size)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.output(features), dim=-1)


@dataclass
class BiLSTMCTCHeadConfig:
    """SUPERB's ASR/SF head sizes (s3prl downstream/asr): projector, BiLSTM layers, dropout."""

    proj_dim: int = 1024
    hidden_size: int = 1024
    num_layers: int = 2
    dropout: float = 0.2


class BiLSTMCTCHead(nn.Module):
    """ASR/SF head as s3prl's ``RNNs`` (``downstream/asr/model.py:76-133``, ``proj``/``layer_norm`` off): projector,
    a stack of bidirectional LSTMs each followed by dropout (the last included), linear to the vocabulary.

    ``features [batch, frame, input_dim] -> log-probabilities [batch, frame, vocab]``; the backward direction never
    reads padded frames (see :class:`~downstream.rnn.MaskedBiLSTM`). ``tests/test_superb_parity.py`` checks the
    parameter count, and the training-mode outputs with the same weights and random state, against s3prl's.
    """

    def __init__(self, input_dim: int, vocab_size: int, proj_dim: int = 1024, hidden_size: int = 1024,
                 num_layers: int = 2, dropout: float = 0.2):
        super().__init__()
        self.projector = nn.Linear(input_dim, proj_dim)
        self.lstm = MaskedBiLSTM(proj_dim, hidden_size, num_layers, dropout=dropout, dropout_after_last=True)
        self.output = nn.Linear(2 * hidden_size, vocab_size)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out = self.lstm(self.projector(features), lengths)
        return F.log_softmax(self.output(out), dim=-1)


def ctc_loss(log_probs: torch.Tensor, lengths: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
    """Mean CTC loss per target token; ``log_probs [batch, frame, vocab]``, targets as id lists (no blanks)."""
    flat = torch.tensor([t for seq in targets for t in seq], dtype=torch.long, device=log_probs.device)
    target_lengths = torch.tensor([len(seq) for seq in targets], dtype=torch.long)
    return F.ctc_loss(log_probs.transpose(0, 1).float(), flat, lengths.cpu(), target_lengths, blank=0,
                      reduction="mean", zero_infinity=True)


def ctc_greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks (id 0). Returns token ids per utterance."""
    best = log_probs.argmax(-1).masked_fill(~frame_mask(lengths, log_probs.shape[1]), 0).cpu()
    out = []
    for seq, n in zip(best.tolist(), lengths.tolist()):
        ids, prev = [], 0
        for t in seq[:n]:
            if t != prev and t != 0:
                ids.append(t)
            prev = t
        out.append(ids)
    return out
