"""On-disk cache of every utterance's all-layer upstream features.

Layout: ``<cache_dir>/<weights-hash[:16]>/<key[:2]>/<key>.npy``, one fp16 array ``[layer, frame, feature]`` per
utterance, written by ``np.save`` and followed by a 24-byte trailer (magic, array bytes, xxh3-64 of those bytes),
so one file is one entry: it appears whole, by one atomic rename, or not at all (no sidecar that can lag behind).
With ``--layer K`` only that hidden state is stored, as ``<key>.L<K>.npy`` ``[1, frame, feature]`` (an all-layer
entry of the same audio serves too).

``key`` hashes the audio's content (xxh3-128 of the file's bytes) and the slice (start, duration): the same audio
has the same key on every node and under every mount point, a copy without its mtimes still hits, an edited file
misses, and tasks reading the same audio share its features. Digests are computed once per file and remembered in
``<cache_dir>/audio_digests.json`` by path, size, mtime and inode (:class:`AudioDigests`), so a warm run stats each
file and reads none. The weights hash makes a retrained or different upstream miss too.

Integrity is checked when an entry is read (the whole array: its size and hash; one layer of an all-layer entry,
read through a memory map: its size and trailer), not by re-reading the cache up front; a corrupt entry raises
:class:`CorruptEntry`, and the feature source extracts it again (``benchmark/features.py``).

Concurrent runs (two tasks, two nodes on a shared folder) are safe: an entry is written under an exclusive
``flock`` on ``<entry>.lock``, taken without waiting, so a run skips the entries another run is extracting and, once
its own are done, waits for those (extracting any whose writer died); an entry is checked for existence after its
lock is taken, so nothing is extracted twice, and nothing ever deletes an entry (a corrupt one is replaced by an
atomic rename; a reader holding the old file keeps reading it). On a file system whose ``flock`` does not reach
other machines, two nodes may extract the same entry twice; each write stays atomic, so nothing is lost.

Default location: ``$DISTILSUPERB_CACHE/features``; ``DISTILSUPERB_CACHE`` defaults to ``$XDG_CACHE_HOME/distilsuperb``
(``XDG_CACHE_HOME`` to ``~/.cache``, the XDG base directory specification). ``--cache-dir`` overrides both.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import xxhash
from filelock import FileLock
from tqdm import tqdm

from common import tensors
from common.audio import AudioError, check_audio_file, require_samples
from common.effects import effects_key, sox_available
from common.io import atomic_write_bytes, atomic_write_text
from common.tensors import module_device
from common.utterance import Utterance, load_utterance_audio

from .batching import eval_batches

log = logging.getLogger(__name__)

TRAILER = struct.Struct("<8sQQ")  # magic, bytes of the .npy part, xxh3-64 of them
MAGIC = b"DSUPERB1"
META = "upstream.json"
DIGESTS = "audio_digests.json"
ORPHAN_AGE_S = 3600.0  # a .tmp/.lock file this old is no write in progress (an entry is written in well under a second)


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


def upstream_min_samples(upstream: torch.nn.Module) -> int:
    """The shortest waveform giving one frame (``Upstream.min_samples``; 1 for upstreams that do not say)."""
    own = getattr(upstream, "min_samples", None)
    return int(own()) if callable(own) else 1


class CorruptEntry(ValueError):
    """A cache entry that cannot be used (truncated, changed, unreadable); ``path`` names it, ``reason`` says why."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"feature cache entry {path} is corrupt ({reason})")
        self.path, self.reason = path, reason


def encode_entry(features: np.ndarray) -> bytes:
    """The bytes of one entry: ``features`` as fp16 ``.npy``, then the trailer."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(features, dtype=np.float16))
    data = buf.getvalue()
    return data + TRAILER.pack(MAGIC, len(data), xxhash.xxh3_64_intdigest(data))


def decode_entry(data: bytes, path: Path) -> np.ndarray:
    """The array of an entry's bytes, after checking its size and hash; raises :class:`CorruptEntry`."""
    if len(data) < TRAILER.size:
        raise CorruptEntry(path, f"{len(data)} bytes, shorter than its trailer")
    magic, size, digest = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    if magic != MAGIC:
        raise CorruptEntry(path, "no checksum trailer (truncated, or written by another version)")
    if size != len(data) - TRAILER.size:
        raise CorruptEntry(path, f"{len(data) - TRAILER.size} bytes, expected {size}")
    body = memoryview(data)[:size]
    if xxhash.xxh3_64_intdigest(body) != digest:
        raise CorruptEntry(path, "checksum mismatch (the file was changed after it was written)")
    try:  # the array as a view of the bytes read (np.load would copy it once more)
        f = io.BytesIO(body)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if f.tell() + math.prod(shape) * dtype.itemsize != size:
            raise CorruptEntry(path, f"{size} bytes, its header says {f.tell() + math.prod(shape) * dtype.itemsize}")
        arr = np.frombuffer(data, dtype, count=math.prod(shape), offset=f.tell())
        return arr.reshape(shape, order="F" if fortran else "C")
    except (ValueError, EOFError, OSError) as e:
        raise CorruptEntry(path, f"not an array: {e}") from None


def read_layer(path: Path, layer: int) -> np.ndarray:
    """``[1, frame, feature]``: hidden state ``layer`` of an all-layer entry through a memory map, so the other
    layers are not read; checked by size and trailer (the hash would need the whole file)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            total = f.tell()
            if total < TRAILER.size:
                raise CorruptEntry(path, f"{total} bytes, shorter than its trailer")
            f.seek(total - TRAILER.size)
            magic, size, _ = TRAILER.unpack(f.read(TRAILER.size))
        if magic != MAGIC or size != total - TRAILER.size:
            raise CorruptEntry(path, "no checksum trailer (truncated, or written by another version)")
        arr = np.load(path, mmap_mode="r")
        expected = arr.offset + arr.nbytes if isinstance(arr, np.memmap) else size
        if expected != size:
            raise CorruptEntry(path, f"{size} bytes of array data, its header says {expected}")
        return arr[layer:layer + 1]
    except (OSError, ValueError, EOFError) as e:
        if isinstance(e, CorruptEntry):
            raise
        raise CorruptEntry(path, f"unreadable: {e}") from None


class AudioDigests:
    """xxh3-128 digests of audio files' contents, remembered in ``index`` (JSON) by resolved path, size, mtime and
    inode: a file whose stat is unchanged is not read again; a touched, replaced or new file is."""

    def __init__(self, index: Path | None):
        self.index = index
        self._known: dict[str, list] = {}
        self._new: dict[str, list] = {}
        self.reads = 0  # files read (digested) by this object
        if index is not None and index.is_file():
            try:
                self._known = json.loads(index.read_text())
            except (OSError, ValueError) as e:
                log.warning("%s is unreadable (%s): digesting the audio again", index, e)

    def digest(self, path: str | Path) -> str:
        real = os.path.realpath(path)
        st = os.stat(real)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        hit = self._new.get(real) or self._known.get(real)
        if hit is not None and hit[:3] == stamp:
            return hit[3]
        h = xxhash.xxh3_128()
        with open(real, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        self.reads += 1
        self._new[real] = [*stamp, h.hexdigest()]
        return self._new[real][3]

    def save(self) -> None:
        """Merge what was digested into the index (under a file lock: runs sharing the cache add to it)."""
        if self.index is None or not self._new:
            return
        try:
            self.index.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.index) + ".lock", timeout=60):
                on_disk = {}
                if self.index.is_file():
                    with contextlib.suppress(ValueError):
                        on_disk = json.loads(self.index.read_text())
                on_disk.update(self._new)
                atomic_write_text(self.index, json.dumps(on_disk, separators=(",", ":")))
            self._known.update(self._new)
            self._new = {}
        except OSError as e:  # a read-only shared cache: the digests are computed again next time
            log.warning("audio digests not saved to %s (%s)", self.index, e)


def audio_key(utt: Utterance, digests: AudioDigests | None = None) -> str:
    """Cache key of one utterance: its audio's content digest and the slice it reads. Not its id or path: tasks name
    the same file differently (SID and ASV share every VoxCeleb1 file), nodes mount it under different paths, and the
    features depend on the audio alone. Raises :class:`AudioError` naming the utterance for a missing or non-file."""
    try:
        check_audio_file(utt.path)
        digest = (digests or AudioDigests(None)).digest(utt.path)
    except AudioError as e:
        raise AudioError(f"utterance {utt.id}: {e}") from None
    except OSError as e:
        raise AudioError(f"utterance {utt.id}: {utt.path}: unreadable ({e.strerror or e})") from None
    ident = f"{digest}|{utt.start:.6f}|{utt.duration:.6f}"
    if utt.channel is not None:  # one channel of a multi-channel file (keys of whole-file records are unchanged)
        ident += f"|ch{utt.channel}"
    if utt.effects:  # the audio the upstream sees differs (keys of records without effects stay as they were)
        ident += f"|{effects_key(utt.effects)}"
        if any(e[0] != "gain" for e in utt.effects):  # trimmed by sox, or (sox missing) not trimmed
            ident += f"|sox={sox_available()}"
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


@contextlib.contextmanager
def claim(path: Path, wait: bool) -> Iterator[bool]:
    """Hold the exclusive lock of entry ``path`` (``<path>.lock``, ``flock``: released when the process dies).
    Yields False at once when another process holds it and ``wait`` is False."""
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # a process waiting on this inode re-checks the entry once it has the lock
    finally:
        os.close(fd)


class FeatureCache:
    """Features of one upstream (one weights hash) under ``root``; with ``layer`` (``--layer K``, non-negative) new
    entries hold that hidden state alone."""

    def __init__(self, root: str | Path, upstream_hash: str, source: str | None = None, layer: int | None = None):
        self.root = Path(root)
        self.dir = self.root / upstream_hash[:16]
        self.source = source  # what the user asked for (name or path), recorded for `run_benchmark.py cache`
        self.layer = layer
        self.digests = AudioDigests(self.root / DIGESTS)
        self._keys: dict[tuple, str] = {}
        self._use_recorded = False  # upstream.json is written once per run, not once per split
        self.corrupt = 0  # entries found corrupt (and extracted again) through this object

    def _key(self, utt: Utterance) -> str:
        k = (utt.id, str(utt.path), utt.start, utt.duration, utt.channel, utt.effects)
        if k not in self._keys:
            self._keys[k] = audio_key(utt, self.digests)
        return self._keys[k]

    def all_layers_path(self, utt: Utterance) -> Path:
        key = self._key(utt)
        return self.dir / key[:2] / f"{key}.npy"

    def path(self, utt: Utterance) -> Path:
        """The entry this cache writes for ``utt``: all layers, or ``<key>.L<K>.npy`` with ``layer``."""
        path = self.all_layers_path(utt)
        return path if self.layer is None else path.with_name(f"{path.stem}.L{self.layer}.npy")

    def has(self, utt: Utterance) -> bool:
        """Whether an entry file exists (a stat; its content is checked when it is read)."""
        return self.path(utt).exists() or (self.layer is not None and self.all_layers_path(utt).exists())

    def todo(self, utts: Sequence[Utterance],
             on_bad_audio: Callable[[Utterance, Exception], None] | None = None) -> list[Utterance]:
        """The utterances without an entry: what an extraction would write. Finding a key stats the audio (and reads
        it once, for its digest): a missing file, broken link or loop raises :class:`AudioError`, or goes to
        ``on_bad_audio`` (``--skip-bad-audio``) and is left out."""
        out = []
        try:
            for u in utts:
                try:
                    if not self.has(u):
                        out.append(u)
                except AudioError as e:
                    if on_bad_audio is None:
                        raise
                    on_bad_audio(u, e)
        finally:
            self.digests.save()
        return out

    def load(self, utt: Utterance, layer: int | None = None) -> np.ndarray:
        """``[layer, frame, feature]`` fp16; with ``layer`` only that one, as ``[1, frame, feature]`` (from an
        all-layer entry through a memory map, so the other layers are not read).

        Raises :class:`CorruptEntry` (a ValueError naming the file) when the entry is missing, truncated or changed."""
        if self.layer is not None and layer != self.layer:
            raise ValueError(f"feature cache {self.dir} stores layer {self.layer} only; layer {layer} was asked for")
        path = self.path(utt)
        if self.layer is not None and not path.exists() and self.all_layers_path(utt).exists():
            path = self.all_layers_path(utt)
        if layer is not None and path == self.all_layers_path(utt):
            return read_layer(path, layer)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise CorruptEntry(path, f"unreadable: {e.strerror or e}") from None
        return decode_entry(data, path)

    def save(self, utt: Utterance, features: np.ndarray) -> None:
        """Write one entry (``[layer, frame, feature]``, stored fp16) atomically: readers see the old file or the
        whole new one."""
        atomic_write_bytes(self.path(utt), encode_entry(features))

    def ensure(self, utts: Sequence[Utterance], upstream: torch.nn.Module, max_seconds: float,
               on_bad_audio: Callable[[Utterance, Exception], None] | None = None,
               share: tuple[int, int] = (0, 1)) -> int:
        """Extract the utterances without an entry, batched by length under ``torch.inference_mode``; returns how
        many this process extracted. Every entry exists when it returns (or its audio went to ``on_bad_audio``).

        ``share`` = (rank, world): this process starts with every ``world``-th batch from ``rank``, then takes the
        batches no one has claimed yet, then waits for the entries other processes are writing (extracting those
        whose writer died). ``on_bad_audio`` (``--skip-bad-audio``) receives the bad utterances (missing, not a
        regular file, unreadable, shorter than one frame) instead of raising.
        """
        if not self._use_recorded:
            self._record_use(upstream)
            self._use_recorded = True
        todo = self.todo(utts, on_bad_audio)
        if not todo:
            return 0
        rank, world = share
        first = todo[rank::world]
        rest = [u for i, u in enumerate(todo) if i % world != rank]
        order = [[part[i] for i in idx] for part in (first, rest)
                 for idx in eval_batches([u.duration for u in part], max_seconds)]
        done, waiting = 0, []
        with tqdm(total=len(todo), desc="extracting features", unit="utt", leave=False) as bar:
            for batch in order:
                with contextlib.ExitStack() as held:
                    mine, claimed = [], set()
                    for utt in batch:
                        path = self.path(utt)
                        if path in claimed:  # the same audio twice in this batch: extracted along, as before
                            mine.append(utt)
                        elif not held.enter_context(claim(path, wait=False)):
                            waiting.append(utt)
                        elif not self.has(utt):  # not written meanwhile by another process
                            mine.append(utt)
                            claimed.add(path)
                    done += self._extract(mine, upstream, on_bad_audio)
                bar.update(len(batch))
        for utt in waiting:  # claimed by another process: wait for it; extract the entry if it never came
            with claim(self.path(utt), wait=True):
                if not self.has(utt):
                    done += self._extract([utt], upstream, on_bad_audio)
        return done

    def repair(self, utts: Sequence[Utterance], upstream: torch.nn.Module) -> None:
        """Extract ``utts`` again and replace their entries (found corrupt on read), one at a time under its lock."""
        for utt in utts:
            with claim(self.path(utt), wait=True):
                self._extract([utt], upstream, None)
            self.corrupt += 1

    def _extract(self, utts: Sequence[Utterance], upstream: torch.nn.Module,
                 on_bad_audio: Callable[[Utterance, Exception], None] | None) -> int:
        """Run ``upstream`` on ``utts`` (one batch) and write their entries; returns how many were written."""
        if not utts:
            return 0
        min_samples = upstream_min_samples(upstream)
        device = module_device(upstream)
        batch, wavs = [], []
        for utt in utts:
            try:
                wav = require_samples(load_utterance_audio(utt), min_samples, utt.path, utt.id)
                wavs.append(wav.to(device))
                batch.append(utt)
            except AudioError as e:
                if on_bad_audio is None:
                    raise
                on_bad_audio(utt, e)
        if not batch:
            return 0
        with torch.inference_mode():
            out = upstream(wavs)
        states = out.hidden_states if self.layer is None else [out.hidden_states[self.layer]]
        for b, utt in enumerate(batch):
            n = int(out.lengths[b])
            feats = torch.stack([h[b, :n] for h in states])  # [layer, frame, feature]
            self.save(utt, feats.to(torch.float16).cpu().numpy())
        return len(batch)

    def _record_use(self, upstream: torch.nn.Module) -> None:
        """``upstream.json``: what the features are of, and when a run last used them (``run_benchmark.py cache``
        lists and prunes by it; file times cannot tell, reads do not update them)."""
        meta = self.dir / META
        self.dir.mkdir(parents=True, exist_ok=True)
        removed = clean_orphans(self.dir)
        if removed:
            log.info("feature cache %s: removed %d orphan .tmp/.lock files left by killed runs", self.dir, removed)
        try:
            info = json.loads(meta.read_text()) if meta.is_file() else {}
        except ValueError:
            info = {}
        info.update({"class": type(upstream).__name__, "downsample_rate": getattr(upstream, "downsample_rate", None),
                     "last_used": time.time()})
        if self.source:
            info["upstream"] = self.source
        atomic_write_text(meta, json.dumps(info))


def _orphans(folder: str | Path) -> Iterator[Path]:
    for pattern in ("*.tmp", "*.lock"):
        yield from Path(folder).rglob(pattern)


def clean_orphans(folder: str | Path, min_age_s: float = ORPHAN_AGE_S) -> int:
    """Delete the ``.tmp`` files (left by killed writes) and entry ``.lock`` files (left by killed extractions; a
    lock held by a live process is never that old) under ``folder`` older than ``min_age_s``; returns how many.
    Younger ones may be a write in progress by another run, and are left alone (see :func:`young_tmp_files`)."""
    now, removed = time.time(), 0
    for tmp in _orphans(folder):
        try:
            if now - tmp.stat().st_mtime >= min_age_s:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:  # renamed or removed meanwhile by its writer
            continue
    return removed


def young_tmp_files(folder: str | Path) -> int:
    """How many ``.tmp``/``.lock`` files under ``folder`` are too young for :func:`clean_orphans` to remove."""
    return sum(1 for _ in _orphans(folder))


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
