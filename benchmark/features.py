"""Where a batch's hidden states come from: the feature cache, or the upstream run in the loop.

Both sources return the same :class:`tasks.base.FeatureBatch`, so the training loop does not know which one it uses.
A crop ``(start_s, duration_s)`` per utterance (relative to the utterance) supports random training crops (SID):
the cached source cuts frames, the live source cuts samples.

:meth:`CachedFeatures.stream` / :meth:`LiveFeatures.stream` turn a lazy sequence of batch requests into batches
through a ``torch.utils.data.DataLoader`` when ``workers`` > 0: worker processes read and check the cache entries
(or decode the audio), crop and pad them, the batch is pinned when it goes to a GPU, and the next batches are
prepared while the current one trains (``prefetch`` per worker). Cached features stay fp16 until they are on the
device, where they become fp32 (half the bytes to copy, and no conversion on the CPU). With ``workers`` = 0 the same
work runs in the main process, batch by batch (what a CPU-only run wants: its cores compute the step).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from common.audio import SAMPLE_RATE, require_samples
from common.tensors import module_device
from common.utterance import Utterance, load_utterance_audio
from tasks.base import FeatureBatch

from .cache import CorruptEntry, FeatureCache, upstream_min_samples

log = logging.getLogger(__name__)

Crop = tuple[float, float]


@dataclass
class BatchRequest:
    """One batch to prepare: its utterances and their crops (None: whole); ``tag`` travels with it unread (the
    trainer's bookkeeping: batch position, random state)."""

    utts: list[Utterance]
    crops: list[Crop | None] | None = None
    tag: Any = None


@dataclass
class _Prepared:
    """What a loader worker hands back: a padded batch (cached: fp16 ``[layer, batch, frame, feature]``; live: the
    waveforms) or the utterances whose cache entries are corrupt (repaired in the main process)."""

    request: BatchRequest
    hidden: torch.Tensor | None = None
    lengths: torch.Tensor | None = None
    wavs: list[torch.Tensor] | None = None
    corrupt: list[Utterance] | None = None

    def pin_memory(self) -> "_Prepared":  # called by the DataLoader's pinning thread
        if self.hidden is not None:
            self.hidden = self.hidden.pin_memory()
        if self.wavs is not None:
            self.wavs = [w.pin_memory() for w in self.wavs]
        return self


def _pad(arrays: Sequence[torch.Tensor | np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[layer, frame_i, feature]`` items into ``[layer, batch, frame, feature]``, zero-padded, in the items'
    dtype (fp16 from the cache: converted to fp32 later, on the device)."""
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
    return out, lengths


class HeldArrays:
    """Feature arrays kept in RAM for the rest of a run, up to ``limit_bytes`` in all.

    Training reads every utterance once per epoch, and dev is scored several times, so reading each file once
    saves most of the loading time (loading was ~40% of a KS run on cached hubert_mini features). First come,
    first kept: once the limit is reached, further arrays are read from disk each time (an LRU would evict
    everything before its next use under epoch order). Used in the main process only (``workers`` = 0): loader
    workers rely on the page cache instead of one copy per worker.
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


def _identity(x):
    return x


class _Loader:
    """A DataLoader over batch requests (``prepare`` runs in the workers); in order, ``prefetch`` batches ahead per
    worker, pinned when ``pin``."""

    def __init__(self, prepare: Callable[[BatchRequest], _Prepared], workers: int, prefetch: int, pin: bool):
        self.prepare, self.workers, self.prefetch, self.pin = prepare, workers, prefetch, pin

    def __getitem__(self, request: BatchRequest) -> _Prepared:
        return self.prepare(request)

    def run(self, requests: Iterable[BatchRequest]) -> Iterator[_Prepared]:
        if self.workers <= 0:
            yield from (self.prepare(r) for r in requests)
            return
        loader = torch.utils.data.DataLoader(self, sampler=requests, batch_size=None, collate_fn=_identity,
                                             num_workers=self.workers, prefetch_factor=self.prefetch,
                                             pin_memory=self.pin, persistent_workers=False)
        yield from loader


class CachedFeatures:
    """Reads the features of each utterance from a :class:`FeatureCache` (fp16 on disk, fp32 on ``device``).

    ``held`` keeps what was read in RAM for later batches of the same run (see :class:`HeldArrays`); ``repair``
    extracts corrupt entries again (found when read: :class:`benchmark.cache.CorruptEntry`); ``workers``,
    ``prefetch``: the :meth:`stream` loader.
    """

    def __init__(self, cache: FeatureCache, downsample_rate: int, layer: int | None = None,
                 held: HeldArrays | None = None, repair: Callable[[list[Utterance]], None] | None = None,
                 device: str | torch.device = "cpu", workers: int = 0, prefetch: int = 2):
        self.cache, self.downsample_rate, self.layer = cache, downsample_rate, layer
        self.held = held or HeldArrays(0)
        self.repair, self.device = repair, torch.device(device)
        self.loader = _Loader(self._prepare, workers, prefetch, self.device.type == "cuda")

    def _prepare(self, request: BatchRequest) -> _Prepared:
        """Read, check, crop and pad one batch (in a loader worker, or in the main process)."""
        items, corrupt = [], []
        for i, utt in enumerate(request.utts):
            key = (utt.id, str(utt.path), utt.start, utt.duration, utt.channel, self.layer)
            try:
                arr = self.held.get(key, lambda: self.cache.load(utt, self.layer))
            except CorruptEntry as e:
                if self.repair is None:
                    raise
                log.warning("%s: extracting it again", e)
                corrupt.append(utt)
                continue
            crop = request.crops[i] if request.crops else None
            if crop is not None:
                first = int(crop[0] * SAMPLE_RATE / self.downsample_rate)
                count = max(1, int(crop[1] * SAMPLE_RATE / self.downsample_rate))
                arr = arr[:, first:first + count]
            items.append(arr)
        if corrupt:
            return _Prepared(request, corrupt=corrupt)
        hidden, lengths = _pad(items)
        return _Prepared(request, hidden, lengths)

    def _finish(self, prepared: _Prepared) -> FeatureBatch:
        if prepared.corrupt:  # repaired here, where the upstream lives; then read again
            self.repair(prepared.corrupt)
            prepared = self._prepare(prepared.request)
        hidden = prepared.hidden.to(self.device, non_blocking=True).float()  # fp16 -> fp32 on the device
        return FeatureBatch(hidden, prepared.lengths, list(prepared.request.utts))

    def batch(self, utts: Sequence[Utterance], crops: Sequence[Crop | None] | None = None) -> FeatureBatch:
        return self._finish(self._prepare(BatchRequest(list(utts), list(crops) if crops else None)))

    def stream(self, requests: Iterable[BatchRequest]) -> Iterator[tuple[BatchRequest, FeatureBatch]]:
        """The batches of ``requests``, in order, each with its request (see the module docstring)."""
        for prepared in self.loader.run(requests):
            yield prepared.request, self._finish(prepared)


class LiveFeatures:
    """Runs the upstream on each batch (``--cache off``, or ``--upstream-trainable`` with gradients); with
    ``workers`` the audio is decoded and cropped in loader workers."""

    def __init__(self, upstream: torch.nn.Module, layer: int | None = None, trainable: bool = False,
                 workers: int = 0, prefetch: int = 2):
        self.upstream, self.layer, self.trainable = upstream, layer, trainable
        self.device = module_device(upstream)
        self.min_samples = upstream_min_samples(upstream)
        self.loader = _Loader(self._prepare, workers, prefetch, self.device.type == "cuda")

    def _prepare(self, request: BatchRequest) -> _Prepared:
        wavs = []
        for i, utt in enumerate(request.utts):
            wav = require_samples(load_utterance_audio(utt), self.min_samples, utt.path, utt.id)
            crop = request.crops[i] if request.crops else None
            if crop is not None:
                wav = wav[int(crop[0] * SAMPLE_RATE): int((crop[0] + crop[1]) * SAMPLE_RATE)]
            wavs.append(wav)
        return _Prepared(request, wavs=wavs)

    def _finish(self, prepared: _Prepared) -> FeatureBatch:
        wavs = [w.to(self.device, non_blocking=True) for w in prepared.wavs]
        grad = self.trainable and torch.is_grad_enabled()
        with contextlib.nullcontext() if grad else torch.no_grad():
            out = self.upstream(wavs)
        states = out.hidden_states if self.layer is None else [out.hidden_states[self.layer]]
        hidden = torch.stack(states).float()  # [layer, batch, frame, feature]
        if not grad:
            hidden = hidden.clone()  # leave inference mode tensors behind
        return FeatureBatch(hidden, out.lengths.cpu().long(), list(prepared.request.utts))

    def batch(self, utts: Sequence[Utterance], crops: Sequence[Crop | None] | None = None) -> FeatureBatch:
        return self._finish(self._prepare(BatchRequest(list(utts), list(crops) if crops else None)))

    def stream(self, requests: Iterable[BatchRequest]) -> Iterator[tuple[BatchRequest, FeatureBatch]]:
        """The batches of ``requests``, in order, each with its request."""
        for prepared in self.loader.run(requests):
            yield prepared.request, self._finish(prepared)
