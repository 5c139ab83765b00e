"""The one contract every upstream follows: a list of 16 kHz waveforms in, all hidden states out."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from common import tensors
from common.tensors import module_device
from common.audio import SAMPLE_RATE


@dataclass
class UpstreamOutput:
    """What every upstream returns.

    hidden_states: list of ``[batch, frame, feature]`` tensors. Entry 0 is the encoder input (for HuBERT-like models,
        transformers' convention: after the positional convolution and, in post-LN models, the layer norm), then one
        entry per transformer layer. Frames past ``lengths[b]`` are padding and hold zeros.
    lengths: ``[batch]`` number of valid frames per utterance.
    """

    hidden_states: list[torch.Tensor]
    lengths: torch.Tensor


class Upstream(nn.Module, abc.ABC):
    """Base class: subclasses set ``downsample_rate`` and implement :meth:`extract`.

    ``forward`` validates the waveforms (clear ``ValueError`` naming the utterance) before calling ``extract``.
    """

    sample_rate: int = SAMPLE_RATE
    downsample_rate: int = 320
    # True when the weights are a random initialisation rather than trained ones (recorded in every results row)
    random_init: bool = False

    def min_samples(self) -> int:
        """Shortest waveform that yields at least one frame."""
        return self.downsample_rate

    @abc.abstractmethod
    def extract(self, wavs: list[torch.Tensor]) -> UpstreamOutput:
        """Compute hidden states for validated float32 1-D waveforms."""

    def forward(self, wavs: Sequence[torch.Tensor]) -> UpstreamOutput:
        checked = validate_waveforms(wavs, self.min_samples())
        return self.extract(checked)

    @property
    def num_hidden_states(self) -> int:
        """Length of ``hidden_states`` (layers + 1 for transformer upstreams), from one short forward pass."""
        with torch.inference_mode():
            device = module_device(self)
            return len(self.forward([torch.zeros(self.min_samples() * 2, device=device)]).hidden_states)

    def hash_config(self) -> dict:
        """What, besides the weights, determines the features (overridden by parametrised upstreams)."""
        return {"type": type(self).__name__}

    def hash_state(self) -> dict[str, torch.Tensor]:
        """The tensors that determine the features (default: the whole state dict; HuBERT leaves out its
        pretraining heads, which an exported copy does not carry)."""
        return self.state_dict()

    def weights_hash(self) -> str:
        """sha256 of :meth:`hash_config` and every :meth:`hash_state` tensor (name, dtype, shape, bytes): the
        upstream's identity in the feature cache and the report. It covers what determines the features, not
        incidental config (dropout rates, unused heads), so an exported and reloaded copy keeps it.
        Parameter-free upstreams hash their config only."""
        return tensors.weights_hash(self.hash_state(), self.hash_config())

    def frames_for(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Number of output frames for waveforms of ``num_samples`` samples (overridden by conv front ends)."""
        return torch.div(num_samples, self.downsample_rate, rounding_mode="floor")


def validate_waveforms(wavs: Sequence[torch.Tensor], min_samples: int) -> list[torch.Tensor]:
    """Check a batch of waveforms; return them as float32 1-D tensors.

    Raises ValueError naming the utterance index for: not a tensor, 2-D/stereo, non-float dtype, too short,
    NaN/inf.
    """
    if isinstance(wavs, torch.Tensor):
        raise ValueError("expected a list of 1-D waveforms (16 kHz), got a single tensor; wrap it in a list")
    if len(wavs) == 0:
        raise ValueError("expected a non-empty list of 1-D waveforms (16 kHz)")
    out = []
    for i, w in enumerate(wavs):
        if not isinstance(w, torch.Tensor):
            raise ValueError(f"utterance {i}: expected a torch.Tensor, got {type(w).__name__}")
        if w.dim() != 1:
            raise ValueError(f"utterance {i}: expected a 1-D mono waveform, got shape {tuple(w.shape)} "
                             "(downmix stereo and squeeze channel dims first)")
        if not torch.is_floating_point(w):
            raise ValueError(f"utterance {i}: expected a float waveform in [-1, 1], got dtype {w.dtype}")
        if w.numel() < min_samples:
            raise ValueError(f"utterance {i}: {w.numel()} samples is shorter than one frame "
                             f"({min_samples} samples at 16 kHz)")
        if not torch.isfinite(w).all():
            raise ValueError(f"utterance {i}: waveform contains NaN or inf")
        out.append(w.float())
    return out


def pad_waveforms(wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to ``[batch, time]`` with zeros; returns (padded, lengths in samples)."""
    lengths = torch.tensor([w.numel() for w in wavs], device=wavs[0].device)
    padded = torch.zeros(len(wavs), int(lengths.max()), device=wavs[0].device, dtype=wavs[0].dtype)
    for i, w in enumerate(wavs):
        padded[i, : w.numel()] = w
    return padded, lengths


def shortest_waveform(frames_for: Callable[[torch.Tensor], torch.Tensor]) -> int:
    """The fewest samples for which ``frames_for`` (samples ``[n]`` -> frames ``[n]``) gives one frame (binary search
    up to one second, which always yields a frame)."""
    low, high = 1, SAMPLE_RATE
    while low < high:
        mid = (low + high) // 2
        if int(frames_for(torch.tensor([mid]))[0]) >= 1:
            high = mid
        else:
            low = mid + 1
    return low


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

