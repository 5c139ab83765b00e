"""Frame-level diarization head (SUPERB's: one LSTM layer of 512 + linear) and the permutation-invariant BCE loss."""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from common.tensors import frame_mask

from .masking import utterance_cmvn


class DiarizationHead(nn.Module):
    """``[batch, frame, feature]`` → ``[batch, frame, num_speakers]`` speaker-activity logits.

    ``input_cmvn``: normalise each utterance's input over its own frames first (:func:`utterance_cmvn`). Not in
    SUPERB's head, and off in the demo too (measurements in docs/results/task_sd.md).
    """

    def __init__(self, input_dim: int, num_speakers: int = 2, hidden_size: int = 512, rnn_layers: int = 1,
                 input_cmvn: bool = False):
        super().__init__()
        self.input_cmvn = input_cmvn
        self.rnn = nn.LSTM(input_dim, hidden_size, num_layers=rnn_layers, batch_first=True) if rnn_layers else None
        self.linear = nn.Linear(hidden_size if rnn_layers else input_dim, num_speakers)
        self.num_speakers = num_speakers

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if features.dim() != 3:
            raise ValueError(f"expected features [batch, frame, feature], got shape {tuple(features.shape)}")
        x = utterance_cmvn(features, lengths) if self.input_cmvn else features
        if self.rnn is not None:
            # Unidirectional, so the valid frames never see the padding that follows them: padded input gives
            # them exactly the packed result, on CPU several times faster (packed input skips the oneDNN kernel).
            # The padded frames' outputs are masked by the loss and the scoring.
            x, _ = self.rnn(x)
        return self.linear(x)


def pit_bce_loss(logits: torch.Tensor, labels: torch.Tensor,
                 lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Permutation-invariant binary cross-entropy, weighted per frame as s3prl's ``pit_loss``
    (``s3prl/downstream/diarization/utils.py:29-51``).

    logits, labels: ``[batch, frame, speaker]``; lengths: ``[batch]`` valid frames. For each utterance, the speaker
    order of ``labels`` with the lowest sum over its valid frames of the speaker-mean BCE; the loss is the sum of
    those minima over the batch divided by the batch's valid frames (so a long chunk weighs more than a short one).
    Returns (that loss, the permuted labels ``[batch, frame, speaker]`` for accuracy bookkeeping).
    """
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must have the same shape")
    mask = frame_mask(lengths.to(logits.device), logits.shape[1]).unsqueeze(-1).to(logits.dtype)
    perms = list(itertools.permutations(range(labels.shape[-1])))
    losses = torch.stack([
        (F.binary_cross_entropy_with_logits(logits, labels[..., list(p)], reduction="none") * mask).mean(dim=2)
        .sum(dim=1) for p in perms], dim=1)  # [batch, permutation]: Σ_frames mean_speakers BCE
    best = losses.argmin(dim=1)
    permuted = torch.stack([labels[b][..., list(perms[int(i)])] for b, i in enumerate(best)])
    total_frames = lengths.to(logits.device).sum().clamp(min=1).to(logits.dtype)
    return losses.gather(1, best[:, None]).sum() / total_frames, permuted


def pit_frame_accuracy(posteriors: torch.Tensor, labels: torch.Tensor) -> float:
    """s3prl's diarization accuracy of one chunk (``calc_diarization_error``, ``utils.py:62-103``, with the labels in
    the order ``pit_loss`` picks): the fraction of (frame, speaker) cells where ``posterior > 0.5`` equals the label.

    posteriors, labels: ``[frame, speaker]`` (sigmoid outputs, 0/1). The speaker order is the one with the lowest
    BCE, as the loss chooses it."""
    logits = torch.logit(posteriors.double().clamp(1e-7, 1 - 1e-7))[None]
    _, permuted = pit_bce_loss(logits, labels.double()[None], torch.tensor([labels.shape[0]]))
    return float(((posteriors > 0.5).double() == permuted[0]).double().mean())
