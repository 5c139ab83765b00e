"""Where a batch's hidden states come from: the feature cache, or the upstream run in the loop.

Both sources return the same :class:`tasks.base.FeatureBatch`, so the training loop does not know which one it uses.
A crop ``(start_s, duration_s)`` per utterance (relative to the utterance) supports random training crops (SID):
the cached source cuts frames, the live source cuts samples.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch

from common.audio import SAMPLE_RATE, require_samples
from common.tensors import module_device
from common.utterance import Utterance, load_utterance_audio
from tasks.base import FeatureBatch

from .cache import FeatureCache, upstream_min_samples

Crop = tuple[float, float]


def _pad(arrays: Sequence[torch.Tensor | np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[layer, frame_i, feature]`` items into ``[layer, batch, frame, feature]`` float32, zero-padded.

    Items are copied in their own dtype (fp16 from the cache) and converted once, which is cheaper than
    converting each item.
    """
    lengths = torch.tensor([a.shape[1] for a in arrays], dtype=torch.long)
    num_layers, _, dim = arrays[0].shape
    dtype = torch.float16 if isinstance(arrays[0], np.ndarray) and arrays[0].dtype == np.float16 else torch.float32
    out = torch.zeros(num_layers, len(arrays), int(lengths.max()), dim, dtype=dtype)
    view = out.numpy()  # numpy view of the same buffer: memory-mapped items are copied without a torch wrapper
    for b, a in enumerate(arrays):
        if isinstance(a, np.ndarray):
            view[:, b, : a.shape[1]] = a
        else:
            out[:, b, : a.shape[1]] = a
    return out.float(), lengths


class HeldArrays:
    """Feature arrays kept in RAM for the rest of a run, up to ``limit_bytes`` in all.

    Training reads every utterance once per epoch, and dev is scored several times, so reading each file once
    saves most of the loading time (loading was ~40% of a KS run on cached hubert_mini features). First come,
    first kept: once the limit is reached, further arrays are read from disk each time (an LRU would evict
    everything before its next use under epoch order).
    """

    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes
        self.bytes = 0
        self._arrays: dict[tuple, np.ndarray] = {}

    def get(self, key: tuple, load) -> np.ndarray:
        arr = self._arrays.get(key)
        if arr is None:
            arr = load()
            if self.bytes + arr.nbytes <= self.limit_bytes:
                arr = np.ascontiguousarray(arr)  # a memory-mapped layer is read now, once
                self._arrays[key] = arr
                self.bytes += arr.nbytes
        return arr


class CachedFeatures:
    """Reads the all-layer features of each utterance from a :class:`FeatureCache` (fp16 on disk, float32 out).

    ``held`` keeps what was read in RAM for later batches of the same run (see :class:`HeldArrays`).
    """

    def __init__(self, cache: FeatureCache, downsample_rate: int, layer: int | None = None,
                 held: HeldArrays | None = None):
        self.cache, self.downsample_rate, self.layer = cache, downsample_rate, layer
        self.held = held or HeldArrays(0)

    def batch(self, utts: Sequence[Utterance], crops: Sequence[Crop | None] | None = None) -> FeatureBatch:
        items = []
        for i, utt in enumerate(utts):
            key = (utt.id, str(utt.path), utt.start, utt.duration, utt.channel, self.layer)
            arr = self.held.get(key, lambda: self.cache.load(utt, self.layer))
            crop = crops[i] if crops else None
            if crop is not None:
                first = int(crop[0] * SAMPLE_RATE / self.downsample_rate)
                count = max(1, int(crop[1] * SAMPLE_RATE / self.downsample_rate))
                arr = arr[:, first:first + count]
            items.append(arr)
        hidden, lengths = _pad(items)
        return FeatureBatch(hidden, lengths, list(utts))


class LiveFeatures:
    """Runs the upstream on each batch (``--no-cache``, or ``--upstream-trainable`` with gradients)."""

    def __init__(self, upstream: torch.nn.Module, layer: int | None = None, trainable: bool = False):
        self.upstream, self.layer, self.trainable = upstream, layer, trainable
        self.device = module_device(upstream)

    def batch(self, utts: Sequence[Utterance], crops: Sequence[Crop | None] | None = None) -> FeatureBatch:
        wavs = []
        min_samples = upstream_min_samples(self.upstream)
        for i, utt in enumerate(utts):
            wav = require_samples(load_utterance_audio(utt), min_samples, utt.path, utt.id)
            crop = crops[i] if crops else None
            if crop is not None:
                wav = wav[int(crop[0] * SAMPLE_RATE): int((crop[0] + crop[1]) * SAMPLE_RATE)]
            wavs.append(wav.to(self.device))
        grad = self.trainable and torch.is_grad_enabled()
        with contextlib.nullcontext() if grad else torch.no_grad():
            out = self.upstream(wavs)
        states = out.hidden_states if self.layer is None else [out.hidden_states[self.layer]]
        hidden = torch.stack(states).float()  # [layer, batch, frame, feature]
        if not grad:
            hidden = hidden.clone()  # leave inference mode tensors behind
        return FeatureBatch(hidden, out.lengths.cpu().long(), list(utts))
