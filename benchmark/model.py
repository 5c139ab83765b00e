"""The downstream model a run trains (the learnt weighted sum over the upstream's hidden states, then the task's
head) and the upstream's shape it is built for."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from common.audio import SAMPLE_RATE
from common.tensors import module_device
from downstream.weighted_sum import WeightedSum
from tasks.base import Task


class DownstreamModel(nn.Module):
    """Weighted sum over layers, then the task head: ``[layer, batch, frame, feature] -> head output``."""

    def __init__(self, num_layers: int, head: nn.Module, layer: int | None = None,
                 augment: nn.Module | None = None):
        super().__init__()
        self.weighted_sum = WeightedSum(num_layers, layer)
        self.augment = augment  # e.g. SpecAugment on the weighted sum (ASR, SF); active in training mode only
        self.head = head

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> Any:
        device = module_device(self.head)
        features = self.weighted_sum(hidden.to(device))
        if self.augment is not None:
            features = self.augment(features)
        return self.head(features, lengths.to(device))


@dataclass(frozen=True)
class UpstreamShape:
    """What a downstream model needs to know about its upstream."""

    num_layers: int  # entries of ``hidden_states``
    feature_dim: int  # width of each hidden state
    layer: int | None  # the one hidden state ``--layer`` picks (0-based, non-negative); None: the weighted sum


def probe_upstream(upstream: nn.Module, layer: int | None) -> UpstreamShape:
    """The upstream's shape, from one forward of one second of silence; ``layer`` (negative counts from the end) is
    resolved as :class:`downstream.weighted_sum.WeightedSum` does, which raises ValueError when it is out of range."""
    with torch.inference_mode():
        probe = upstream([torch.zeros(SAMPLE_RATE, device=module_device(upstream))])
    num_layers = len(probe.hidden_states)
    return UpstreamShape(num_layers, int(probe.hidden_states[0].shape[-1]),
                         None if layer is None else WeightedSum(num_layers, layer).layer)


def build_downstream(task: Task, shape: UpstreamShape, seed: int, device: str) -> DownstreamModel:
    """A fresh downstream model for ``task`` on an upstream of ``shape``, initialised from ``seed``, on ``device``."""
    torch.manual_seed(seed)
    model = DownstreamModel(shape.num_layers, task.build_head(shape.feature_dim), shape.layer, task.build_augment())
    return model.to(device)
