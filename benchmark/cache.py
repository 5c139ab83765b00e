"""On-disk cache of every utterance's all-layer upstream features.

Layout: ``<cache_dir>/<weights-hash[:16]>/<key[:2]>/<key>.npy``, one fp16 array ``[layer, frame, feature]`` per
utterance (with ``--layer``, read back memory-mapped, so only that layer is touched). ``key`` hashes the audio's
identity (absolute path, size, mtime, slice), so an edited file or a different slice misses, and tasks that read
the same audio share its features.
The weights hash makes a retrained or different upstream miss too. Writes are atomic: a killed extraction leaves no
half-written array behind. Default location: ``$DISTILSUPERB_CACHE/features`` (``DISTILSUPERB_CACHE`` defaults to ``~/.cache/distilsuperb``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from common import tensors
from common.audio import AudioError
from common.io import atomic_path, atomic_write_text
from common.tensors import module_device
from common.utterance import Utterance, load_utterance_audio

from .batching import eval_batches

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    env = os.environ.get("DISTILSUPERB_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "distilsuperb") / "features"


def weights_hash(upstream: torch.nn.Module) -> str:
    """sha256 identifying an upstream's computation: its own ``weights_hash()`` (every :class:`upstream.base.Upstream`
    has one), else :func:`common.tensors.weights_hash` of its class and weights."""
    own = getattr(upstream, "weights_hash", None)
    if callable(own):
        return str(own())
    return tensors.weights_hash(upstream, {"class": f"{type(upstream).__module__}.{type(upstream).__qualname__}"})


def audio_key(utt: Utterance) -> str:
    """Cache key of one utterance: the identity of the audio slice it reads. Not its id: tasks name the same file
    differently (SID and ASV share every VoxCeleb1 file), and the features depend on the audio alone."""
    try:
        st = os.stat(utt.path)
    except OSError as e:
        raise AudioError(f"utterance {utt.id}: cannot stat audio file {utt.path}: {e}") from None
    ident = f"{Path(utt.path).resolve()}|{st.st_size}|{st.st_mtime_ns}|{utt.start:.6f}|{utt.duration:.6f}"
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


class FeatureCache:
    """Features of one upstream (one weights hash) under ``root``."""

    def __init__(self, root: str | Path, upstream_hash: str, source: str | None = None):
        self.dir = Path(root) / upstream_hash[:16]
        self.source = source  # what the user asked for (name or path), recorded for `run_benchmark.py cache`
        self._keys: dict[tuple, str] = {}
        self._use_recorded = False  # upstream.json is written once per run, not once per split

    def _key(self, utt: Utterance) -> str:
        k = (utt.id, str(utt.path), utt.start, utt.duration)
        if k not in self._keys:
            self._keys[k] = audio_key(utt)
        return self._keys[k]

    def path(self, utt: Utterance) -> Path:
        key = self._key(utt)
        return self.dir / key[:2] / f"{key}.npy"

    def has(self, utt: Utterance) -> bool:
        return self.path(utt).is_file()

    def load(self, utt: Utterance, layer: int | None = None) -> np.ndarray:
        """``[layer, frame, feature]`` fp16; with ``layer`` only that one, as ``[1, frame, feature]``, memory-mapped
        so the other layers are not read (a whole array is read plainly: about 2x faster than through a map)."""
        if layer is None:
            return np.load(self.path(utt))
        return np.load(self.path(utt), mmap_mode="r")[layer:layer + 1]

    def save(self, utt: Utterance, features: np.ndarray) -> None:
        path = self.path(utt)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(features, dtype=np.float16))

    def ensure(self, utts: Sequence[Utterance], upstream: torch.nn.Module, max_seconds: float,
               on_bad_audio: Callable[[Utterance, Exception], None] | None = None) -> int:
        """Extract the utterances not cached yet, batched by length under ``torch.inference_mode``.

        ``on_bad_audio`` (``--skip-bad-audio``) receives unreadable utterances instead of raising. Returns the
        number of utterances extracted.
        """
        if not self._use_recorded:
            self._record_use(upstream)
            self._use_recorded = True
        missing = [u for u in utts if not self.has(u)]
        if not missing:
            return 0
        device = module_device(upstream)
        done = 0
        batches = eval_batches([u.duration for u in missing], max_seconds)
        with tqdm(total=len(missing), desc="extracting features", unit="utt", leave=False) as bar:
            for idx in batches:
                batch, wavs = [], []
                for i in idx:
                    try:
                        wavs.append(load_utterance_audio(missing[i]).to(device))
                        batch.append(missing[i])
                    except AudioError as e:
                        if on_bad_audio is None:
                            raise
                        on_bad_audio(missing[i], e)
                if batch:
                    with torch.inference_mode():
                        out = upstream(wavs)
                    for b, utt in enumerate(batch):
                        n = int(out.lengths[b])
                        feats = torch.stack([h[b, :n] for h in out.hidden_states])  # [layer, frame, feature]
                        self.save(utt, feats.to(torch.float16).cpu().numpy())
                    done += len(batch)
                bar.update(len(idx))
        return done

    def _record_use(self, upstream: torch.nn.Module) -> None:
        """``upstream.json``: what the features are of, and when a run last used them (``run_benchmark.py cache``
        lists and prunes by it; file times cannot tell, reads do not update them)."""
        meta = self.dir / META
        self.dir.mkdir(parents=True, exist_ok=True)
        info = json.loads(meta.read_text()) if meta.is_file() else {}
        info.update({"class": type(upstream).__name__, "downsample_rate": getattr(upstream, "downsample_rate", None),
                     "last_used": time.time()})
        if self.source:
            info["upstream"] = self.source
        atomic_write_text(meta, json.dumps(info))


META = "upstream.json"


@dataclass
class CacheEntry:
    """One upstream's folder of cached features."""

    path: Path
    upstream: str      # the name or path it was run as ("?" when not recorded)
    bytes: int
    files: int
    last_used: float   # unix time (0 when not recorded)


def list_cache(root: str | Path) -> list[CacheEntry]:
    """Every upstream folder under ``root``, most recently used first."""
    if not Path(root).is_dir():
        return []
    entries = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        meta = folder / META
        info = json.loads(meta.read_text()) if meta.is_file() else {}
        arrays = list(folder.rglob("*.npy"))
        entries.append(CacheEntry(folder, info.get("upstream", info.get("class", "?")),
                                  sum(a.stat().st_size for a in arrays), len(arrays), float(info.get("last_used", 0))))
    return sorted(entries, key=lambda e: -e.last_used)


def remove_cache_entries(root: str | Path, prefixes: Sequence[str] = (), unused_days: float | None = None
                         ) -> list[CacheEntry]:
    """Delete the folders whose hash starts with one of ``prefixes`` or that no run used for ``unused_days``.
    A prefix that matches no folder, or several, is an error (nothing is deleted then)."""
    entries = list_cache(root)
    chosen: dict[Path, CacheEntry] = {}
    for prefix in prefixes:
        hits = [e for e in entries if e.path.name.startswith(prefix)]
        if len(hits) != 1:
            raise ValueError(f"cache hash prefix {prefix!r} matches {len(hits)} folders under {root} "
                             f"({', '.join(e.path.name for e in hits) or 'none'}); give one that matches exactly one")
        chosen[hits[0].path] = hits[0]
    if unused_days is not None:
        cutoff = time.time() - unused_days * 86400
        chosen.update({e.path: e for e in entries if e.last_used < cutoff})
    for entry in chosen.values():
        shutil.rmtree(entry.path)
    return list(chosen.values())
