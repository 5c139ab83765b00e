"""Tensor helpers every layer shares: the valid-frame mask of padded batches and the device a module lives on."""
from __future__ import annotations

import torch
from torch import nn


def frame_mask(lengths: torch.Tensor, max_frames: int) -> torch.Tensor:
    """``[batch, frame]`` bool, True on the first ``lengths[b]`` frames of row ``b`` (on ``lengths``' device).

    lengths: ``[batch]`` valid frames (or samples) per row; max_frames: the padded length.
    """
    return torch.arange(max_frames, device=lengths.device)[None, :] < lengths[:, None]


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (CPU for a module without parameters)."""
    return next((p.device for p in module.parameters()), torch.device("cpu"))
