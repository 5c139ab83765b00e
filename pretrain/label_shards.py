"""HuBERT's k-means labels at real scale, as fairseq's ``examples/hubert/simple_kmeans`` recipe runs them: every
rank dumps the features of its shard of the files to disk (``dump_mfcc_feature.py`` / ``dump_hubert_feature.py``),
rank 0 fits MiniBatchKMeans on a bounded, seeded sample of all frames (``learn_kmeans.py``: ``percent`` →
``labels.kmeans_fraction``, capped by ``labels.max_kmeans_frames``), every rank labels its shard by the nearest
centroid on its device (``dump_km_label.py``), rank 0 merges the label shards into one ``labels.pt``.

RAM never holds the pool's features: a shard is written file by file, the k-means sample is read from memory-mapped
shards and bounded by ``max_kmeans_frames`` × dim × 4 bytes, labelling reads one file's frames at a time; what stays
is the labels (int16 per frame: 960 h at 50 Hz is 0.35 GB). Disk holds the features until the labels are written
(960 h of 768-dim layer features: ≈ 531 GB, as with fairseq), then they are removed.

Layout of ``work/`` (an iteration's folder)::

    features/shard-R-of-W.f32   frames of shard R's files one after another, float32 [frame, dim], raw
    features/shard-R-of-W.json  its files, frames per file (-1: unreadable, skipped) and dim; written last (done)
    kmeans-HASH.npy             centroids [clusters, dim] (float32)
    labels-R-of-W.pt            shard R's labels, one tensor [frame] per file
    labels.pt                   every file's labels (pretrain/labels.py save_labels), the iteration's cache

A killed run resumes: finished shards (their ``.json`` names the same files) and the centroids (named by a hash of
the files and k-means settings) are reused.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from common import distributed
from common.audio import AudioError, load_audio
from common.checkpoint import load_checkpoint, save_checkpoint
from common.distributed import DistEnv
from common.io import atomic_path, atomic_write_text

from .labels import LabelConfig, assign, fit_kmeans, load_labels, sample_size, save_labels, to_host

log = logging.getLogger(__name__)


def shard_files(files: list[Path], rank: int, world: int) -> list[Path]:
    """Rank ``rank``'s contiguous share of ``files`` (so shards in rank order are the files in order)."""
    n = len(files)
    return files[rank * n // world: (rank + 1) * n // world]


def _base(work: Path, rank: int, world: int) -> Path:
    return work / "features" / f"shard-{rank}-of-{world}"


def read_meta(base: Path, files: list[Path]) -> dict | None:
    """A finished shard's ``.json`` when it holds exactly ``files``; else None."""
    meta_path = base.with_suffix(".json")
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    return meta if meta["files"] == [str(f) for f in files] else None


def dump_shard(files: list[Path], extract: Callable[[torch.Tensor], torch.Tensor], base: Path) -> dict:
    """Write ``extract(audio)`` (``[frame, dim]`` on any device) of each file to ``base.f32``, one file at a time,
    then ``base.json``. An unreadable file gets ``-1`` frames (its labels are empty; the trainer skips it)."""
    frames: list[int] = []
    dim = 0
    with atomic_path(base.with_suffix(".f32")) as tmp, open(tmp, "wb") as out:
        for path in tqdm(files, desc=f"features {base.name}", dynamic_ncols=True):
            try:
                feats = to_host(extract(load_audio(path)))
            except AudioError as e:
                log.warning("%s", e)
                frames.append(-1)
                continue
            dim = feats.shape[1]
            out.write(np.ascontiguousarray(feats).tobytes())
            frames.append(len(feats))
    meta = {"files": [str(f) for f in files], "frames": frames, "dim": dim}
    atomic_write_text(base.with_suffix(".json"), json.dumps(meta) + "\n")
    return meta


def open_shard(base: Path, meta: dict) -> np.ndarray:
    """The shard's frames ``[frame, dim]`` float32, memory-mapped (read on access)."""
    total = sum(n for n in meta["frames"] if n > 0)
    if total == 0:
        return np.zeros((0, meta["dim"]), dtype=np.float32)
    return np.memmap(base.with_suffix(".f32"), dtype=np.float32, mode="r", shape=(total, meta["dim"]))


def sample_frames(shards: list[np.ndarray], cfg: LabelConfig) -> np.ndarray:
    """A seeded sample of all frames of ``shards`` (in shard order), ``[sample_size, dim]``: the same rows as
    ``rng.choice`` over the concatenation, read from the memory maps in sorted order."""
    sizes = [len(s) for s in shards]
    total = sum(sizes)
    rng = np.random.default_rng(cfg.seed)
    chosen = rng.choice(total, size=sample_size(total, cfg), replace=False)
    order = np.argsort(chosen)
    rows = chosen[order]
    offsets = np.cumsum([0] + sizes)
    sample = np.empty((len(chosen), shards[0].shape[1] if shards else 0), dtype=np.float32)
    picked = []
    for s, shard in enumerate(shards):
        lo, hi = np.searchsorted(rows, [offsets[s], offsets[s + 1]])
        picked.append(np.asarray(shard[rows[lo:hi] - offsets[s]]))
    sample[order] = np.concatenate(picked) if picked else sample
    return sample


def label_shard(shard: np.ndarray, meta: dict, centroids: np.ndarray, device: torch.device) -> list[torch.Tensor]:
    """Nearest-centroid labels of each file of a shard (``[frame]``, int16 while clusters fit, else int32; empty
    for an unreadable file), computed on ``device`` one file at a time."""
    dtype = torch.int16 if len(centroids) <= torch.iinfo(torch.int16).max else torch.int32
    c = torch.from_numpy(centroids).to(device)
    labels, at = [], 0
    for n in meta["frames"]:
        if n < 0:
            labels.append(torch.zeros(0, dtype=dtype))
            continue
        feats = torch.from_numpy(np.array(shard[at: at + n])).to(device)  # a copy: memmaps are read-only
        labels.append(assign(feats, c).to(dtype).cpu())
        at += n
    return labels


def build_labels(work: Path, files: list[Path], extract: Callable[[torch.Tensor], torch.Tensor], rate: int,
                 cfg: LabelConfig, env: DistEnv) -> list[torch.Tensor]:
    """k-means labels of ``files`` (one ``[frame]`` tensor per file, at ``rate`` Hz), computed by all ranks as the
    module docstring says, cached in ``work/labels.pt``. Every rank must call it (it holds barriers; rank 0's
    k-means fit is the long wait, hence the process group's timeout: ``run.dist_timeout_minutes``).

    Raises ValueError when the pool has fewer frames than clusters or ``kmeans_fraction`` is out of (0, 1]."""
    path = work / "labels.pt"
    if load_labels(path, files) is None:
        started = time.time()
        base = _base(work, env.rank, env.world)
        mine = shard_files(files, env.rank, env.world)
        if read_meta(base, mine) is None:
            dump_shard(mine, extract, base)
        distributed.barrier()
        metas = [read_meta(_base(work, r, env.world), shard_files(files, r, env.world)) for r in range(env.world)]
        if any(m is None for m in metas):  # a rank's shard vanished between its write and here
            raise ValueError(f"{work / 'features'}: a feature shard is missing; is the folder shared by all ranks?")
        shards = [open_shard(_base(work, r, env.world), m) for r, m in enumerate(metas)]
        # named by what it was fitted on: a resumed run reuses it, a changed pool or setting never does
        digest = hashlib.sha256(json.dumps([[str(f) for f in files], cfg.clusters, cfg.kmeans_fraction,
                                            cfg.max_kmeans_frames, cfg.seed]).encode()).hexdigest()[:12]
        centroids_path = work / f"kmeans-{digest}.npy"
        if env.is_main and not centroids_path.is_file():
            centroids, inertia = fit_kmeans(sample_frames(shards, cfg), cfg)
            with atomic_path(centroids_path) as tmp, open(tmp, "wb") as f:
                np.save(f, centroids, allow_pickle=False)
            log.info("k-means (%d clusters) on %d of %d frames: inertia per frame %.3f", cfg.clusters,
                     sample_size(sum(len(s) for s in shards), cfg), sum(len(s) for s in shards), inertia)
        distributed.barrier()
        centroids = np.load(centroids_path, allow_pickle=False)
        own = label_shard(shards[env.rank], metas[env.rank], centroids, env.device)
        save_checkpoint({"labels": own}, work / f"labels-{env.rank}-of-{env.world}.pt")
        distributed.barrier()
        if env.is_main:
            merged = [lab for r in range(env.world)
                      for lab in load_checkpoint(work / f"labels-{r}-of-{env.world}.pt")["labels"]]
            save_labels(path, merged, files, rate)
            log.info("labels for %d files in %.1f s (%d ranks)", len(files), time.time() - started, env.world)
            shutil.rmtree(work / "features", ignore_errors=True)  # the pool's features: the disk's largest part
            for r in range(env.world):
                (work / f"labels-{r}-of-{env.world}.pt").unlink(missing_ok=True)
        distributed.barrier()
    return load_labels(path, files)[0]
