"""Tensor helpers every layer shares: the valid-frame mask of padded batches, the device a module lives on, and
the hash of a module's weights."""
from __future__ import annotations

import hashlib
import json

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


def weights_hash(state: dict[str, torch.Tensor], config: dict) -> str:
    """sha256 (hex) of ``config`` (JSON, sorted keys) and every tensor of ``state`` (name, dtype, shape, bytes), so
    any change of the weights or of what ``config`` describes changes it."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
