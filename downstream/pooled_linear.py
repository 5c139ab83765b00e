"""Utterance-level head (KS, IC, SID, ER): Linear projector, mean pool over valid frames, one linear per output."""
from __future__ import annotations

import torch
from torch import nn

from .masking import mean_pool


class PooledLinearHead(nn.Module):
    """``features [batch, frame, input_dim]`` -> list of logits ``[batch, classes_i]``, one per entry of ``num_classes``.

    As s3prl's UtteranceLevel model: projector (input_dim -> proj_dim), mean pooling, linear classifier(s).
    IC uses three outputs (action, object, location); the other tasks one.
    """

    def __init__(self, input_dim: int, num_classes: list[int], proj_dim: int = 256):
        super().__init__()
        self.projector = nn.Linear(input_dim, proj_dim)
        self.classifiers = nn.ModuleList(nn.Linear(proj_dim, n) for n in num_classes)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        pooled = mean_pool(self.projector(features), lengths)
        return [c(pooled) for c in self.classifiers]
