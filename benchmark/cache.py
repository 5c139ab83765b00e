"""On-disk cache of every utterance's all-layer upstream features.

Layout: ``<cache_dir>/<weights-hash[:16]>/<key[:2]>/<key>.npy``, one fp16 array ``[layer, frame, feature]`` per
utterance (with ``--layer``, read back memory-mapped, so only that layer is touched). ``key`` hashes the audio's
identity (absolute path, size, mtime, slice), so an edited file or a different slice misses, and tasks that read
the same audio share its features.
The weights hash makes a retrained or different upstream miss too. Writes are atomic: a killed extraction leaves no
half-written array behind (at most an orphan ``.tmp`` file, removed later: see :func:`clean_orphans`).
Each array has a sidecar ``<key>.sum`` with its size and xxh3-64 hash (xxhash rather than zlib's CRC-32: the check
then costs about one more plain read of the entry instead of 2.5-2.8, bench/cache_verify_cost.py). Every entry a run
uses is verified against it once per run (:meth:`FeatureCache.ensure`), and an entry that does not match
(truncated, overwritten, or written before sidecars existed) is reported once by path and extracted again.
With ``--layer K`` only that hidden state is stored, as ``<key>.L<K>.npy`` ``[1, frame, feature]`` (an all-layer
entry of the same audio serves too).
Default location: ``$DISTILSUPERB_CACHE/features``; ``DISTILSUPERB_CACHE`` defaults to ``$XDG_CACHE_HOME/distilsuperb``
(``XDG_CACHE_HOME`` to ``~/.cache``, the XDG base directory specification). ``--cache-dir`` overrides both.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import xxhash
from tqdm import tqdm

from common import tensors
from common.audio import AudioError, check_audio_file, require_samples
from common.io import atomic_write_bytes, atomic_write_text
from common.tensors import module_device
from common.utterance import Utterance, load_utterance_audio

from .batching import eval_batches

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$DISTILSUPERB_CACHE/features``, else ``$XDG_CACHE_HOME/distilsuperb/features``, else
    ``~/.cache/distilsuperb/features``."""
    env = os.environ.get("DISTILSUPERB_CACHE")
    if env:
        return Path(env) / "features"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"  # the spec: relative is invalid
    return base / "distilsuperb" / "features"


def weights_hash(upstream: torch.nn.Module) -> str:
    """sha256 identifying an upstream's computation: its own ``weights_hash()`` (every :class:`upstream.base.Upstream`
    has one), else :func:`common.tensors.weights_hash` of its class and weights."""
    own = getattr(upstream, "weights_hash", None)
    if callable(own):
        return str(own())
    return tensors.weights_hash(upstream.state_dict(),
                                {"class": f"{type(upstream).__module__}.{type(upstream).__qualname__}"})


def audio_key(utt: Utterance) -> str:
    """Cache key of one utterance: the identity of the audio slice it reads. Not its id: tasks name the same file
    differently (SID and ASV share every VoxCeleb1 file), and the features depend on the audio alone."""
    try:
        check_audio_file(utt.path)
        st = os.stat(utt.path)
    except AudioError as e:
        raise AudioError(f"utterance {utt.id}: {e}") from None
    ident = f"{Path(utt.path).resolve()}|{st.st_size}|{st.st_mtime_ns}|{utt.start:.6f}|{utt.duration:.6f}"
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


def upstream_min_samples(upstream: torch.nn.Module) -> int:
    """The shortest waveform giving one frame (``Upstream.min_samples``; 1 for upstreams that do not say)."""
    own = getattr(upstream, "min_samples", None)
    return int(own()) if callable(own) else 1


class FeatureCache:
    """Features of one upstream (one weights hash) under ``root``; with ``layer`` (``--layer K``, non-negative) new
    entries hold that hidden state alone."""

    def __init__(self, root: str | Path, upstream_hash: str, source: str | None = None, layer: int | None = None):
        self.dir = Path(root) / upstream_hash[:16]
        self.source = source  # what the user asked for (name or path), recorded for `run_benchmark.py cache`
        self.layer = layer
        self._keys: dict[tuple, str] = {}
        self._use_recorded = False  # upstream.json is written once per run, not once per split
        self.corrupt = 0  # entries found corrupt (and extracted again) by this object
        self.unchecked = 0  # entries without a checksum (older version, or killed between array and sidecar)
        self._verified: set[Path] = set()  # entries checked against their sidecar by this object

    def _key(self, utt: Utterance) -> str:
        k = (utt.id, str(utt.path), utt.start, utt.duration)
        if k not in self._keys:
            self._keys[k] = audio_key(utt)
        return self._keys[k]

    def all_layers_path(self, utt: Utterance) -> Path:
        key = self._key(utt)
        return self.dir / key[:2] / f"{key}.npy"

    def path(self, utt: Utterance) -> Path:
        """The entry this cache writes for ``utt``: all layers, or ``<key>.L<K>.npy`` with ``layer``."""
        path = self.all_layers_path(utt)
        return path if self.layer is None else path.with_name(f"{path.stem}.L{self.layer}.npy")

    def _read_path(self, utt: Utterance) -> Path:
        """The entry to read: with ``layer``, an all-layer entry of the same audio when there is one."""
        if self.layer is not None and self.all_layers_path(utt) in self._verified:
            return self.all_layers_path(utt)
        return self.path(utt)

    def todo(self, utts: Sequence[Utterance]) -> list[Utterance]:
        """The utterances with no entry file yet (a stat each; nothing read): what an extraction would write."""
        out = []
        for u in utts:
            try:
                if not self.path(u).exists() and not (self.layer is not None and self.all_layers_path(u).exists()):
                    out.append(u)
            except AudioError:  # bad audio: raised or skipped by the extraction that follows, not estimated
                continue
        return out

    def has(self, utt: Utterance) -> bool:
        """Whether a verified entry exists: the array matches its sidecar's size and xxh3 hash (checked once per
        object; a mismatch is logged with the path, and the entry is deleted so that it is extracted again)."""
        if self.layer is not None and self.all_layers_path(utt) in self._verified:
            return True
        path = self.path(utt)
        if path in self._verified:
            return True
        if self.layer is not None and self.all_layers_path(utt).exists() and _verify(self.all_layers_path(utt)) is None:
            self._verified.add(self.all_layers_path(utt))
            return True
        problem = _verify(path)
        if problem is None:
            self._verified.add(path)
            return True
        if problem == NO_SIDECAR:  # many at once after an upgrade: said once per ensure(), not per entry
            self.unchecked += 1
        elif problem != "missing":
            log.warning("feature cache entry %s is corrupt (%s): extracting it again", path, problem)
            self.corrupt += 1
        if problem != "missing":
            for p in (path, _sum_path(path)):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        return False

    def load(self, utt: Utterance, layer: int | None = None) -> np.ndarray:
        """``[layer, frame, feature]`` fp16; with ``layer`` only that one, as ``[1, frame, feature]``, memory-mapped
        so the other layers are not read (a whole array is read plainly: about 2x faster than through a map).

        Raises ``ValueError`` naming the file when it cannot be read (damaged after :meth:`has` verified it)."""
        path = self._read_path(utt)
        if self.layer is not None and layer != self.layer:
            raise ValueError(f"feature cache {self.dir} stores layer {self.layer} only; layer {layer} was asked for")
        try:
            if path != self.all_layers_path(utt):  # a one-layer entry
                return np.load(path)
            if layer is None:
                return np.load(path)
            return np.load(path, mmap_mode="r")[layer:layer + 1]
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"feature cache entry {path} (utterance {utt.id}) is unreadable ({e}); run again to "
                             f"extract it again") from None

    def save(self, utt: Utterance, features: np.ndarray) -> None:
        """Write the array, then its sidecar (size + xxh3-64 hash); both atomically, so a kill between the two leaves an
        entry without a sidecar, which counts as missing."""
        path = self.path(utt)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(features, dtype=np.float16))
        data = buf.getvalue()
        atomic_write_bytes(path, data)
        atomic_write_text(_sum_path(path), json.dumps({"bytes": len(data), "xxh3_64": xxhash.xxh3_64_intdigest(data)}))
        self._verified.add(path)

    def missing(self, utts: Sequence[Utterance],
                on_bad_audio: Callable[[Utterance, Exception], None] | None = None) -> list[Utterance]:
        """The utterances not cached yet. Finding the key stats the audio file: a missing file, broken link or loop
        raises :class:`AudioError`, or goes to ``on_bad_audio`` (``--skip-bad-audio``) and is left out."""
        out = []
        for u in utts:
            try:
                if not self.has(u):
                    out.append(u)
            except AudioError as e:
                if on_bad_audio is None:
                    raise
                on_bad_audio(u, e)
        return out

    def ensure(self, utts: Sequence[Utterance], upstream: torch.nn.Module, max_seconds: float,
               on_bad_audio: Callable[[Utterance, Exception], None] | None = None) -> int:
        """Extract the utterances not cached yet, batched by length under ``torch.inference_mode``.

        ``on_bad_audio`` (``--skip-bad-audio``) receives the bad utterances (missing, not a regular file, unreadable,
        shorter than one frame) instead of raising. Returns the number of utterances extracted.
        """
        if not self._use_recorded:
            self._record_use(upstream)
            self._use_recorded = True
        unchecked_before = self.unchecked
        missing = self.missing(utts, on_bad_audio)
        if self.unchecked > unchecked_before:
            log.warning("feature cache %s: %d entries have no checksum (written by an older version, or a run was "
                        "killed between an array and its checksum): extracting them again", self.dir,
                        self.unchecked - unchecked_before)
        if not missing:
            return 0
        min_samples = upstream_min_samples(upstream)
        device = module_device(upstream)
        done = 0
        batches = eval_batches([u.duration for u in missing], max_seconds)
        with tqdm(total=len(missing), desc="extracting features", unit="utt", leave=False) as bar:
            for idx in batches:
                batch, wavs = [], []
                for i in idx:
                    try:
                        wav = require_samples(load_utterance_audio(missing[i]), min_samples, missing[i].path,
                                              missing[i].id)
                        wavs.append(wav.to(device))
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
                        states = out.hidden_states if self.layer is None else [out.hidden_states[self.layer]]
                        feats = torch.stack([h[b, :n] for h in states])  # [layer, frame, feature]
                        self.save(utt, feats.to(torch.float16).cpu().numpy())
                    done += len(batch)
                bar.update(len(idx))
        return done

    def _record_use(self, upstream: torch.nn.Module) -> None:
        """``upstream.json``: what the features are of, and when a run last used them (``run_benchmark.py cache``
        lists and prunes by it; file times cannot tell, reads do not update them)."""
        meta = self.dir / META
        self.dir.mkdir(parents=True, exist_ok=True)
        removed = clean_orphans(self.dir)
        if removed:
            log.info("feature cache %s: removed %d orphan .tmp files left by killed runs", self.dir, removed)
        info = json.loads(meta.read_text()) if meta.is_file() else {}
        info.update({"class": type(upstream).__name__, "downsample_rate": getattr(upstream, "downsample_rate", None),
                     "last_used": time.time()})
        if self.source:
            info["upstream"] = self.source
        atomic_write_text(meta, json.dumps(info))


META = "upstream.json"
NO_SIDECAR = "no checksum sidecar"
ORPHAN_AGE_S = 3600.0  # a .tmp file this old is no write in progress (an array is written in well under a second)


def _sum_path(path: Path) -> Path:
    return path.with_suffix(".sum")


def _verify(path: Path) -> str | None:
    """None when ``path`` matches its sidecar, "missing" when there is no entry, else what is wrong."""
    try:
        expected = json.loads(_sum_path(path).read_text())
    except FileNotFoundError:
        return "missing" if not path.exists() else NO_SIDECAR
    except (OSError, ValueError) as e:
        return f"unreadable checksum sidecar: {e}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable: {e}"
    if not isinstance(expected, dict) or len(data) != expected.get("bytes"):
        return f"{len(data)} bytes, expected {expected.get('bytes') if isinstance(expected, dict) else '?'}"
    if xxhash.xxh3_64_intdigest(data) != expected.get("xxh3_64"):
        return "checksum mismatch (the file was changed after it was written)"
    return None


def clean_orphans(folder: str | Path, min_age_s: float = ORPHAN_AGE_S) -> int:
    """Delete the ``.tmp`` files (left by killed writes) under ``folder`` older than ``min_age_s``; returns how
    many. Younger ones may be a write in progress by another run, and are left alone (see :func:`young_tmp_files`)."""
    now, removed = time.time(), 0
    for tmp in Path(folder).rglob("*.tmp"):
        try:
            if now - tmp.stat().st_mtime >= min_age_s:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:  # renamed or removed meanwhile by its writer
            continue
    return removed


def young_tmp_files(folder: str | Path) -> int:
    """How many ``.tmp`` files under ``folder`` are too young for :func:`clean_orphans` to remove."""
    return sum(1 for _ in Path(folder).rglob("*.tmp"))


@dataclass
class CacheEntry:
    """One upstream's folder of cached features."""

    path: Path
    upstream: str      # the name or path it was run as ("?" when not recorded)
    bytes: int
    files: int
    last_used: float   # unix time (0 when not recorded)
    orphans_removed: int = 0  # .tmp files left by killed runs, removed while listing
    tmp_kept: int = 0  # younger .tmp files, left alone (a write in progress, or a kill less than an hour ago)


def list_cache(root: str | Path) -> list[CacheEntry]:
    """Every upstream folder under ``root``, most recently used first (orphan ``.tmp`` files are removed and
    counted on the way)."""
    if not Path(root).is_dir():
        return []
    entries = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        meta = folder / META
        try:
            info = json.loads(meta.read_text()) if meta.is_file() else {}
        except ValueError:
            log.warning("%s is not valid JSON: listing the folder without it", meta)
            info = {}
        orphans, kept = clean_orphans(folder), young_tmp_files(folder)
        arrays = list(folder.rglob("*.npy"))
        entries.append(CacheEntry(folder, info.get("upstream", info.get("class", "?")),
                                  sum(a.stat().st_size for a in arrays), len(arrays), float(info.get("last_used", 0)),
                                  orphans, kept))
    return sorted(entries, key=lambda e: -e.last_used)


def remove_cache_entries(root: str | Path, prefixes: Sequence[str] = (), unused_days: float | None = None
                         ) -> list[CacheEntry]:
    """Delete the folders whose hash starts with one of ``prefixes`` or that no run used for ``unused_days``.
    A prefix that matches no folder, or several, is an error (nothing is deleted then)."""
    if unused_days is not None and (not math.isfinite(unused_days) or unused_days < 0):
        raise ValueError(f"--unused-days must be a number of days >= 0, got {unused_days}")
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
