"""HuBERT's frame targets: k-means cluster ids of MFCC+Δ+ΔΔ (iteration 1) or of a layer's features (iteration 2).

As in fairseq's ``examples/hubert/simple_kmeans``: 39-dim MFCC (Kaldi-style, 13 coefficients without energy, plus
first and second deltas) at 100 Hz, scikit-learn ``MiniBatchKMeans`` (k-means++ init) on a bounded sample of the
frames, labels per file by the nearest centroid. ``pretrain/label_shards.py`` runs it at scale (features on disk).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchaudio

from common.audio import SAMPLE_RATE
from common.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)
MFCC_RATE = 100  # frames per second (10 ms hop)


@dataclass
class LabelConfig:
    clusters: int = 100
    # the k-means sample, as fairseq's learn_kmeans.py ``percent``: this fraction of all frames (seeded), at most
    # max_kmeans_frames of them (its RAM: frames x dim x 4 bytes, whatever the pool's hours); every frame is labelled
    kmeans_fraction: float = 1.0
    max_kmeans_frames: int = 200000
    kmeans_batch: int = 10000
    kmeans_init_runs: int = 3          # fairseq uses 20; each run costs a pass of k-means++ init
    seed: int = 0


def mfcc_features(wav: torch.Tensor) -> torch.Tensor:
    """wav ``[sample]`` (16 kHz) → ``[frame, 39]`` MFCC + Δ + ΔΔ at 100 Hz, on the CPU (torchaudio's Kaldi code)."""
    mfcc = torchaudio.compliance.kaldi.mfcc(wav.cpu()[None], sample_frequency=SAMPLE_RATE,
                                            use_energy=False)  # [frame, 13]
    per_coeff = mfcc.t()  # compute_deltas works along the last axis (time)
    delta = torchaudio.functional.compute_deltas(per_coeff)
    delta2 = torchaudio.functional.compute_deltas(delta)
    return torch.cat([per_coeff, delta, delta2], dim=0).t().contiguous()


def layer_features(model, layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Iteration 2: wav ``[sample]`` (any device) → ``[frame, dim]`` hidden state ``layer`` of a
    :class:`HubertModel` (50 Hz), computed on the device the model's parameters are on (the iteration-1 model
    stays where it trained, e.g. ``cuda:N``) and returned there; :func:`to_host` brings it to the CPU."""
    def extract(wav: torch.Tensor) -> torch.Tensor:
        device = next(model.parameters()).device
        with torch.no_grad():
            states, _ = model.eval().encode(wav.to(device)[None], torch.tensor([wav.numel()]))  # lengths: host
        return states[layer][0]
    return extract


def to_host(feats: torch.Tensor) -> np.ndarray:
    """``[frame, dim]`` features from any device → a float32 numpy array (the one place a device tensor becomes
    numpy: ``.numpy()`` refuses CUDA tensors)."""
    return feats.detach().to("cpu", torch.float32).numpy()


def fit_kmeans(sample: np.ndarray, cfg: LabelConfig) -> tuple[np.ndarray, float]:
    """scikit-learn MiniBatchKMeans (k-means++ init, fairseq's settings but ``n_init``) on ``sample [frame, dim]``;
    returns the centroids ``[clusters, dim]`` (float32) and the inertia per frame. Raises ValueError when the
    sample has fewer frames than clusters."""
    from sklearn.cluster import MiniBatchKMeans

    if len(sample) < cfg.clusters:
        raise ValueError(f"only {len(sample)} frames to fit {cfg.clusters} clusters; add audio or lower "
                         "labels.clusters")
    km = MiniBatchKMeans(n_clusters=cfg.clusters, init="k-means++", batch_size=cfg.kmeans_batch, max_iter=100,
                         n_init=cfg.kmeans_init_runs, reassignment_ratio=0.0, max_no_improvement=100,
                         random_state=cfg.seed)
    km.fit(sample)
    return km.cluster_centers_.astype(np.float32), float(-km.score(sample) / len(sample))


def assign(feats: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest centroid of each frame: ``[frame, dim]``, ``[clusters, dim]`` (same device) → ``[frame]`` int64
    (as fairseq's ``dump_km_label.ApplyKmeans``: ‖x‖² − 2x·c + ‖c‖², in torch on the features' device)."""
    feats = feats.float()
    dist = (feats.pow(2).sum(1, keepdim=True) - 2 * feats @ centroids.t() + centroids.pow(2).sum(1)[None])
    return dist.argmin(1)


def sample_size(total: int, cfg: LabelConfig) -> int:
    """How many of ``total`` frames the k-means sample takes (``kmeans_fraction``, at most ``max_kmeans_frames``)."""
    if not 0.0 < cfg.kmeans_fraction <= 1.0:
        raise ValueError(f"labels.kmeans_fraction: expected a fraction in (0, 1], got {cfg.kmeans_fraction}")
    return min(total, int(round(total * cfg.kmeans_fraction)), cfg.max_kmeans_frames)


def fit_kmeans_labels(feats: list[torch.Tensor | None], cfg: LabelConfig) -> tuple[list[torch.Tensor], float]:
    """In-memory form (small pools, tests): fit on a seeded sample of all frames of ``feats`` (``[frame, dim]``
    each, ``None`` for an unreadable file); return int64 labels per file (empty for ``None``) and the inertia per
    frame. ``pretrain/label_shards.py`` does the same from features on disk."""
    stacked = np.concatenate([to_host(f) for f in feats if f is not None])
    rng = np.random.default_rng(cfg.seed)
    sample = stacked[rng.choice(len(stacked), size=sample_size(len(stacked), cfg), replace=False)]
    centroids, inertia = fit_kmeans(sample, cfg)
    c = torch.from_numpy(centroids)
    labels = [assign(f.cpu(), c) if f is not None else torch.zeros(0, dtype=torch.long) for f in feats]
    return labels, inertia


def save_labels(path: Path, labels: list[torch.Tensor], files: list[Path], label_rate: int) -> None:
    # through memory, then one atomic write: a full disk is an OSError naming the path (torch.save straight into
    # the file fails with a C++ "enforce fail" instead)
    save_checkpoint({"labels": labels, "files": [str(f) for f in files], "label_rate": label_rate}, path)


def load_labels(path: Path, files: list[Path]) -> tuple[list[torch.Tensor], int] | None:
    """Cached labels when they were computed for exactly ``files``; else None."""
    if not path.is_file():
        return None
    data = load_checkpoint(path)  # weights_only=True
    if data["files"] != [str(f) for f in files]:
        return None
    return data["labels"], int(data["label_rate"])
