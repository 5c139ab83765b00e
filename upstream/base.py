"""The one contract every upstream follows: a list of 16 kHz waveforms in, all hidden states out."""
from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
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
    # True for models pretrained on normalised audio: each waveform is layer-normed on its own (see
    # :func:`normalize_waveforms`) before the model sees it. Set by the constructor from the checkpoint.
    normalize_waveform: bool = False

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
        Parameter-free upstreams hash their config only. Waveform normalisation enters the hash only when on, so
        the same weights with and without it never share a cache key while every existing key stays as it was."""
        config = self.hash_config()
        if self.normalize_waveform:
            config = {**config, "normalize_waveform": True}
        return tensors.weights_hash(self.hash_state(), config)

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


def normalize_waveforms(wavs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each 1-D waveform minus its mean, divided by ``sqrt(var + 1e-5)`` (biased variance over its own samples):
    ``F.layer_norm(wav, wav.shape)``, what s3prl applies for models pretrained with fairseq's
    ``task.normalize=True`` (s3prl ``upstream/hubert/expert.py:57-58``; transformers' ``do_normalize`` is the same
    up to its eps of 1e-7). Computed before padding, so padding never enters the statistics and a batch gives
    each utterance the result it gets alone."""
    return [F.layer_norm(w, w.shape) for w in wavs]


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


class BucketedUpstream(Upstream):
    """An encoder ``self.model`` (an ``nn.Module``) behind the contract, run by the subclass's :meth:`_run` on groups
    of utterances (:meth:`buckets`) whose results are scattered back in input order: HuBERT-family and transformers
    upstreams.

    The model is frozen and stays in eval mode (no dropout) unless ``fine_tune`` is set (``--upstream-trainable``):
    then gradients flow and ``train()`` puts it in train mode.
    """

    def __init__(self, model: nn.Module, bucket_fill: float, min_bucket_size: int, max_bucket_samples: int,
                 normalize_waveform: bool = False):
        super().__init__()
        self.model = model.eval()
        self.normalize_waveform = normalize_waveform
        self.bucket_fill, self.min_bucket_size = bucket_fill, min_bucket_size
        self.max_bucket_samples = max_bucket_samples
        self.fine_tune = False

    @abc.abstractmethod
    def _run(self, wavs: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Hidden states ``[batch, frame, feature]`` (zero past each length) and lengths ``[batch]`` in frames of one
        group of validated waveforms."""

    def train(self, mode: bool = True) -> "BucketedUpstream":
        """A frozen feature extractor keeps its model in eval mode (no dropout); with ``fine_tune`` it follows
        ``mode``."""
        super().train(mode)
        if not self.fine_tune:
            self.model.eval()
        return self

    def min_samples(self) -> int:
        return shortest_waveform(self.frames_for)

    def buckets(self, lengths: list[int]) -> list[list[int]]:
        """Indices grouped longest first. An utterance joins the current group while the group stays at least
        ``bucket_fill`` real audio (vs padding) and within ``max_bucket_samples`` padded samples; a trailing group
        of fewer than ``min_bucket_size`` joins the one before it (on CPU, tiny batches run less efficiently than
        a little padding costs)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        groups: list[list[int]] = []
        for i in order:
            if groups:
                group = groups[-1]
                padded = lengths[group[0]] * (len(group) + 1)
                real = sum(lengths[j] for j in group) + lengths[i]
                if real >= self.bucket_fill * padded and padded <= self.max_bucket_samples:
                    group.append(i)
                    continue
            groups.append([i])
        if len(groups) > 1 and len(groups[-1]) < self.min_bucket_size:
            tail = groups.pop()
            if lengths[groups[-1][0]] * (len(groups[-1]) + len(tail)) <= self.max_bucket_samples:
                groups[-1] += tail
            else:
                groups.append(tail)
        return groups

    def extract(self, wavs: list[torch.Tensor]) -> UpstreamOutput:
        # no_grad unless fine-tuning with gradients on (weight norm under FlopCounterMode needs no_grad, not only
        # inference_mode)
        with contextlib.nullcontext() if self.fine_tune and torch.is_grad_enabled() else torch.no_grad():
            if self.normalize_waveform:
                wavs = normalize_waveforms(wavs)
            groups = self.buckets([w.numel() for w in wavs])
            if len(groups) == 1:
                states, frames = self._run([wavs[i] for i in groups[0]])
                order = torch.argsort(torch.tensor(groups[0], device=frames.device))
                return UpstreamOutput([s[order] for s in states], frames[order])
            runs = [(g, *self._run([wavs[i] for i in g])) for g in groups]
            frames = torch.zeros(len(wavs), dtype=torch.long, device=runs[0][2].device)
            max_frames = max(int(r[2].max()) for r in runs)
            outs = [s.new_zeros(len(wavs), max_frames, s.shape[-1]) for s in runs[0][1]]
            for g, states, lens in runs:
                index = torch.tensor(g, device=lens.device)
                frames[index] = lens
                for out, s in zip(outs, states):
                    out[index, : s.shape[1]] = s
            return UpstreamOutput(outs, frames)
