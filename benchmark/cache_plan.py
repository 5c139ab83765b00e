"""Know before you spend: the feature cache's size for a run, estimated before any extraction, and the cache policy.

``--cache auto|on|off`` (``--no-cache`` is ``off``) and ``--cache-max-gb`` decide whether a run writes features:

* the estimate is the bytes of the entries the run still has to write: per utterance, the frames the upstream gives
  for its samples (``frames_for``, calibrated on a one-utterance probe) x the stored layers x width x 2 bytes (fp16),
  plus the ``.npy`` header and the entry's checksum trailer (``benchmark/cache.py``);
* the budget is ``--cache-max-gb`` when given, else 80% of the cache folder's free space (a fifth is left for
  checkpoints, results and the disk's other users), and never more than the free space;
* ``on`` refuses up front (one line, exit 2) when the estimate exceeds the budget; ``auto`` then runs on live
  features (the upstream in the loop, as s3prl does) with one line saying why; ``off`` never writes the cache
  (``benchmark/run_data.py`` ``open_cache`` applies the policy, on every rank alike).

Measured sizes: HuBERT Base 0.996 MB and Large 2.55 MB per audio second (all layers), i.e. 3.6 / 9.2 GB per hour
(docs/SCALE.md); ``--layer K`` stores one layer (1/13 and 1/25 of that).
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from common.audio import SAMPLE_RATE
from common.tensors import module_device
from common.utterance import Utterance

log = logging.getLogger(__name__)

POLICIES = ("auto", "on", "off")
DEFAULT_FREE_SHARE = 0.8  # of the free space, when no --cache-max-gb is given
NPY_HEADER_BYTES = 128  # np.save's header for a 3-d fp16 array (padded to a multiple of 64)
ENTRY_OVERHEAD_BYTES = NPY_HEADER_BYTES + 24  # + the checksum trailer (benchmark/cache.py TRAILER)


class CacheSpaceError(ValueError):
    """``--cache on`` and the run's features do not fit: raised before any extraction (one line, exit 2)."""


@dataclass(frozen=True)
class EntryShape:
    """What one cached entry holds per frame, from a one-utterance probe of the upstream."""

    layers: int  # stored hidden states (1 with --layer)
    dim: int  # width of each
    downsample_rate: int  # samples per frame
    frame_offset: int  # frames of the probe minus samples // downsample_rate (e.g. -1 for HuBERT's CNN)

    def frames(self, seconds: float) -> int:
        return max(1, int(round(seconds * SAMPLE_RATE)) // self.downsample_rate + self.frame_offset)

    def entry_bytes(self, seconds: float) -> int:
        """Bytes of one entry file for ``seconds`` of audio."""
        return self.frames(seconds) * self.layers * self.dim * 2 + ENTRY_OVERHEAD_BYTES

    @property
    def bytes_per_second(self) -> float:
        return SAMPLE_RATE / self.downsample_rate * self.layers * self.dim * 2


def probe_entry_shape(upstream: nn.Module, layer: int | None, seconds: float = 2.0) -> EntryShape:
    """Run ``seconds`` of silence through ``upstream`` once: how many hidden states (or 1 with ``layer``), their
    width, and how its frame count relates to the sample count."""
    samples = int(seconds * SAMPLE_RATE)
    with torch.inference_mode():
        out = upstream([torch.zeros(samples, device=module_device(upstream))])
    rate = int(getattr(upstream, "downsample_rate", 320))
    frames = int(out.lengths[0])
    return EntryShape(1 if layer is not None else len(out.hidden_states), int(out.hidden_states[0].shape[-1]), rate,
                      frames - samples // rate)


def free_bytes(folder: str | Path) -> int:
    """Free bytes on the file system holding ``folder`` (or its nearest existing parent, before it is made)."""
    path = Path(folder).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return shutil.disk_usage(path).free


@dataclass(frozen=True)
class CacheEstimate:
    """The bytes a run's cache needs, against what it may use."""

    folder: Path
    entries: int  # entries still to write
    audio_seconds: float  # their audio
    bytes: int  # their estimated size
    bytes_per_second: float  # of audio, for this upstream (and --layer)
    free: int  # free bytes where the cache lives
    budget: int  # what the run may write: --cache-max-gb, else DEFAULT_FREE_SHARE of free; never above free
    capped: bool  # the budget is --cache-max-gb

    @property
    def fits(self) -> bool:
        return self.bytes <= self.budget

    def line(self) -> str:
        """The estimate as printed before extraction."""
        return (f"feature cache {self.folder}: {self.entries} entries to extract, {self.audio_seconds / 3600:.2f} h "
                f"of audio x {self.bytes_per_second / 1e6:.3f} MB/s = {_gb(self.bytes)} GB estimated; "
                f"{_gb(self.free)} GB free, budget {_gb(self.budget)} GB "
                f"({'--cache-max-gb' if self.capped else f'{DEFAULT_FREE_SHARE:.0%} of free'})")

    def refusal(self) -> str:
        """Why the features do not fit, and what to do instead (one line)."""
        return (f"feature cache {self.folder}: this run needs about {_gb(self.bytes)} GB ({self.entries} entries, "
                f"{self.audio_seconds / 3600:.2f} h of audio x {self.bytes_per_second / 1e6:.3f} MB/s) but may use "
                f"{_gb(self.budget)} GB ({_gb(self.free)} GB free"
                f"{', --cache-max-gb' if self.capped else ''}); options: --cache-dir on a larger disk, --layer K "
                f"(stores one layer), a larger --cache-max-gb, or --cache off / auto (live features, no cache)")


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g}"


def estimate(folder: Path, shape: EntryShape, todo: Sequence[Utterance], max_gb: float | None,
             free: int | None = None) -> CacheEstimate:
    """The estimate for the entries ``todo`` (the ones not cached yet) in ``folder``; ``free`` defaults to
    :func:`free_bytes`. Raises ValueError for a ``max_gb`` that is not a positive number."""
    if max_gb is not None and not max_gb > 0:
        raise ValueError(f"--cache-max-gb must be a positive number of GB, got {max_gb}")
    free = free_bytes(folder) if free is None else free
    budget = min(free, int(max_gb * 1e9)) if max_gb is not None else int(free * DEFAULT_FREE_SHARE)
    return CacheEstimate(folder, len(todo), sum(u.duration for u in todo),
                         sum(shape.entry_bytes(u.duration) for u in todo), shape.bytes_per_second, free, budget,
                         max_gb is not None)
