"""The data side of one benchmark run, one job per class:

* :class:`FeaturePrep` makes utterances usable before they are trained on or scored: their features extracted into
  the cache (without a cache: their audio checked), bad audio raised or, with ``--skip-bad-audio``, recorded and
  left out;
* :class:`RunSplits` holds the task's splits as the run uses them (loaded once, the train subset);
* :class:`FeatureSources` says where feature batches come from (the cache, or the upstream in the loop).
"""
from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from common import distributed
from common.audio import SAMPLE_RATE, AudioError, check_audio_file, require_samples
from common.io import atomic_write_text
from common.utterance import Utterance, load_utterance_audio
from tasks.base import SPLITS, Task

from . import cache_plan
from .cache import FeatureCache, upstream_min_samples
from .features import CachedFeatures, HeldArrays, LiveFeatures
from .model import UpstreamShape

log = logging.getLogger(__name__)


class FeaturePrep:
    """Makes utterances usable: :meth:`ensure` extracts their missing features into ``cache`` (under torchrun each
    rank extracts its share) in batches of ``max_seconds`` of audio, or without a cache checks their audio.

    Bad audio raises :class:`common.audio.AudioError`; with ``skip_bad_audio`` it is recorded instead in
    ``bad_audio`` (``{utterance id: error}``, also written to ``run_dir/skipped_audio.json`` by rank 0) and left out.
    """

    def __init__(self, upstream: nn.Module, cache: FeatureCache | None, max_seconds: float, skip_bad_audio: bool,
                 run_dir: Path):
        self.upstream, self.cache, self.max_seconds = upstream, cache, max_seconds
        self.skip_bad_audio, self.run_dir = skip_bad_audio, run_dir
        self.is_main = distributed.is_main()  # under torchrun, rank 0 alone writes files
        self.bad_audio: dict[str, str] = {}

    def ensure(self, utts: Sequence[Utterance]) -> list[Utterance]:
        """Extract missing features into the cache (or check the audio); returns ``utts`` minus skipped bad audio."""
        on_bad = self._record_bad if self.skip_bad_audio else None
        if self.cache is not None and distributed.world() > 1:
            # each rank extracts its share of the missing utterances; then every rank knows every skipped file
            missing = self.cache.missing(utts, on_bad)
            distributed.barrier()  # every rank lists the same missing utterances before any rank extracts
            done = self.cache.ensure(distributed.shard(missing), self.upstream, self.max_seconds, on_bad)
            log.info("rank %d of %d: extracted %d features", distributed.rank(), distributed.world(), done)
            for bad in distributed.all_gather(dict(self.bad_audio)):
                self.bad_audio.update(bad)
        elif self.cache is not None:
            self.cache.ensure(utts, self.upstream, self.max_seconds, on_bad)
        elif on_bad is not None:
            min_samples = upstream_min_samples(self.upstream)
            for u in utts:
                if u.id not in self.bad_audio:
                    try:
                        require_samples(load_utterance_audio(u), min_samples, u.path, u.id)
                    except AudioError as e:
                        on_bad(u, e)
        else:  # no cache, nothing skipped: at least the cheap checks (file type, header length) before training
            min_samples = upstream_min_samples(self.upstream)
            for u in utts:
                check_audio_file(u.path)
                if 0 < u.duration * SAMPLE_RATE < min_samples:
                    require_samples(torch.zeros(int(u.duration * SAMPLE_RATE)), min_samples, u.path, u.id)
        return [u for u in utts if u.id not in self.bad_audio]

    def _record_bad(self, utt: Utterance, error: Exception) -> None:
        self.bad_audio[utt.id] = str(error)
        log.warning("skipping %s: %s", utt.id, error)
        if self.is_main:
            atomic_write_text(self.run_dir / "skipped_audio.json", json.dumps(self.bad_audio, indent=2))


def train_subset(utts: list[Utterance], limit: int) -> list[Utterance]:
    """The train utterances a run uses: all, or ``limit`` of them (``train.max_utterances`` > 0) drawn with a fixed
    seed, so every upstream trains on the same subset (kept in the split's order)."""
    if 0 < limit < len(utts):
        return [utts[i] for i in sorted(random.Random(0).sample(range(len(utts)), limit))]
    return utts


def open_cache(policy: str, root: Path, upstream: nn.Module, upstream_hash: str, source: str, layer: int | None,
               max_gb: float | None, task: Task, loaded: dict[str, list[Utterance]] | None) -> FeatureCache | None:
    """The run's feature cache, or None for live features: ``policy`` (``--cache auto|on|off``) applied to the size
    estimate of the entries the run still has to write (the audited splits ``loaded``, train cut to its subset) and
    the free space under ``root`` (see :mod:`benchmark.cache_plan`). ``layer`` (``--layer``, non-negative): store
    that hidden state only. Under torchrun every rank takes the same decision (the cache is used when it fits on
    every rank's disk). Raises :class:`benchmark.cache_plan.CacheSpaceError` for ``on`` when it does not fit."""
    if policy not in cache_plan.POLICIES:
        raise ValueError(f"--cache must be one of {', '.join(cache_plan.POLICIES)}, got {policy!r}")
    if max_gb is not None and not max_gb > 0:
        raise ValueError(f"--cache-max-gb must be a positive number of GB, got {max_gb}")
    if policy == "off":
        return None
    cache = FeatureCache(root, upstream_hash, source, layer)
    utts = [u for split, us in (loaded or {}).items()
            for u in (train_subset(us, task.config.train.max_utterances) if split == "train" else us)]
    unique = list({cache.path(u): u for u in cache.todo(utts)}.values())  # tasks/splits sharing audio share entries
    est = cache_plan.estimate(Path(root), cache_plan.probe_entry_shape(upstream, layer), unique, max_gb)
    log.info("%s", est.line())
    mine = None if est.fits else est.refusal()
    problems = [p for p in distributed.all_gather(mine) if p]  # [mine] in one process
    if not problems:
        return cache
    if policy == "on":
        raise cache_plan.CacheSpaceError(mine or f"on another rank: {problems[0]}")
    log.warning("--cache auto: running on live features (no cache): %s", mine or f"on another rank: {problems[0]}")
    return None


class RunSplits:
    """The task's splits as this run uses them: each loaded once (``loaded``: the records the dataset audit already
    read), the train split cut to ``train.max_utterances`` (the same seeded subset for every upstream), and made
    usable by ``prep``. Raises ValueError for an empty split."""

    def __init__(self, task: Task, prep: FeaturePrep, loaded: dict[str, list[Utterance]] | None = None):
        self.task, self.prep = task, prep
        self._loaded = dict(loaded or {})
        self._splits: dict[str, list[Utterance]] = {}

    def load(self, split: str) -> list[Utterance]:
        """The split's usable utterances (read, checked and cached on the first call)."""
        task = self.task
        if split not in self._splits:
            utts = self._loaded.pop(split) if split in self._loaded else task.load_split(split)
            if not utts:
                raise ValueError(f"task {task.name!r}: split {split!r} is empty under {task.data_root}")
            if split == "train":
                utts = train_subset(utts, task.config.train.max_utterances)
            self._splits[split] = self.prep.ensure(utts)
        return self._splits[split]

    def prepare(self) -> None:
        """Before training: every audited split made usable now (features extracted into the cache, or without a
        cache the cheap audio checks), so unreadable audio in dev or test stops the run now, not hours later."""
        for split in SPLITS:
            if self._loaded.get(split):
                self.load(split)


class FeatureSources:
    """Where this run's feature batches come from: the cache (features extracted once by :class:`FeaturePrep`, kept
    in RAM up to ``held``'s limit) when there is one, else the upstream run in the loop."""

    def __init__(self, upstream: nn.Module, cache: FeatureCache | None, shape: UpstreamShape, held: HeldArrays):
        self.upstream, self.cache, self.shape, self.held = upstream, cache, shape, held

    def for_run(self, trainable: bool = False) -> CachedFeatures | LiveFeatures:
        """Batches as the downstream model takes them (every hidden state, or the run's ``--layer``);
        ``trainable``: gradients flow into the live upstream (``--upstream-trainable``)."""
        if self.cache is not None:
            return CachedFeatures(self.cache, self.upstream.downsample_rate, self.shape.layer, self.held)
        return LiveFeatures(self.upstream, self.shape.layer, trainable)

    def for_layer(self, layer: int | None) -> CachedFeatures | LiveFeatures:
        """Batches of one hidden state ``layer`` (negative counts from the end), or all of them when None."""
        layer = None if layer is None else layer % self.shape.num_layers
        if self.cache is not None:
            return CachedFeatures(self.cache, self.upstream.downsample_rate, layer, self.held)
        return LiveFeatures(self.upstream, layer)
