"""SpecAugment on the weighted-sum features (s3prl's SUPERB ASR and SF recipes), with torchaudio's transform.

s3prl (``downstream/asr/config.yaml`` ``specaug``; FACTS.md): time warp window 5, 2 time masks of 0-40 frames,
4 frequency masks of 0-50 feature dims, masked values set to zero, training only. torchaudio's
``transforms.SpecAugment`` draws the masks (per utterance: ``iid_masks``); it has no time warp for features, so the
time warp is left out (a documented deviation).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio
from torch import nn


@dataclass
class SpecAugConfig:
    """Masks on ``[batch, frame, feature]`` features during training (s3prl's SUPERB values as defaults)."""

    enabled: bool = False
    num_time_masks: int = 2
    time_mask_width: int = 40   # frames: each time mask is 0..width wide
    num_freq_masks: int = 4
    freq_mask_width: int = 50   # feature dims: each frequency mask is 0..width wide


class FeatureSpecAugment(nn.Module):
    """``[batch, frame, feature]`` → the same with random time and feature masks (zeros) in training mode; the
    identity in eval mode. No parameters."""

    def __init__(self, cfg: SpecAugConfig):
        super().__init__()
        self.augment = torchaudio.transforms.SpecAugment(
            n_time_masks=cfg.num_time_masks, time_mask_param=cfg.time_mask_width, n_freq_masks=cfg.num_freq_masks,
            freq_mask_param=cfg.freq_mask_width, iid_masks=True, zero_masking=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return features
        # torchaudio masks [..., freq, time]; its iid masks need a channel dim: [batch, 1, feature, frame]
        masked = self.augment(features.transpose(1, 2)[:, None])
        return masked[:, 0].transpose(1, 2)
