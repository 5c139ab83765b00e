"""Masks and pooling over padded frame sequences."""
from __future__ import annotations

import torch

from common.tensors import frame_mask


def mean_pool(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over valid frames: ``[batch, frame, feature] -> [batch, feature]``."""
    mask = frame_mask(lengths, features.shape[1]).unsqueeze(-1).to(features.dtype)
    return (features * mask).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(features.dtype)


def utterance_cmvn(features: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per utterance and dimension: minus the mean over its valid frames, divided by the standard deviation there
    (as FBANK's CMVN); padded frames stay zero. ``[batch, frame, feature]`` → same shape."""
    lengths = lengths.to(features.device)
    mask = frame_mask(lengths, features.shape[1]).unsqueeze(-1).to(features.dtype)
    mean = mean_pool(features, lengths)[:, None]
    var = mean_pool((features - mean) ** 2, lengths)[:, None]
    return (features - mean) / torch.sqrt(var + eps) * mask
