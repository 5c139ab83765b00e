"""HuBERT's frame targets: k-means cluster ids of MFCC+Δ+ΔΔ (iteration 1) or of a layer's features (iteration 2).

As in fairseq's ``examples/hubert/simple_kmeans``: 39-dim MFCC (Kaldi-style, 13 coefficients without energy, plus
first and second deltas) at 100 Hz, scikit-learn ``MiniBatchKMeans`` (k-means++ init), labels per file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchaudio
from tqdm import tqdm

from common.audio import SAMPLE_RATE, AudioError, load_audio
from common.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)
MFCC_RATE = 100  # frames per second (10 ms hop)


@dataclass
class LabelConfig:
    clusters: int = 100
    max_kmeans_frames: int = 200000   # frames sampled (seeded) to fit k-means; all frames are labelled
    kmeans_batch: int = 10000
    kmeans_init_runs: int = 3          # fairseq uses 20; each run costs a pass of k-means++ init
    seed: int = 0


def mfcc_features(wav: torch.Tensor) -> torch.Tensor:
    """wav ``[sample]`` (16 kHz) → ``[frame, 39]`` MFCC + Δ + ΔΔ at 100 Hz."""
    mfcc = torchaudio.compliance.kaldi.mfcc(wav[None], sample_frequency=SAMPLE_RATE, use_energy=False)  # [frame, 13]
    per_coeff = mfcc.t()  # compute_deltas works along the last axis (time)
    delta = torchaudio.functional.compute_deltas(per_coeff)
    delta2 = torchaudio.functional.compute_deltas(delta)
    return torch.cat([per_coeff, delta, delta2], dim=0).t().contiguous()


def layer_features(model, layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Iteration 2: wav ``[sample]`` → ``[frame, dim]`` hidden state ``layer`` of a :class:`HubertModel` (50 Hz)."""
    def extract(wav: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            states, _ = model.eval().encode(wav[None], torch.tensor([wav.numel()]))
        return states[layer][0]
    return extract


def compute_features(paths: list[Path], extract: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor | None]:
    """Features per file (``None`` for a file that cannot be read; the trainer skips and reports it later)."""
    feats: list[torch.Tensor | None] = []
    for path in tqdm(paths, desc="features", dynamic_ncols=True):
        try:
            feats.append(extract(load_audio(path)).float())
        except AudioError as e:
            log.warning("%s", e)
            feats.append(None)
    return feats


def fit_kmeans_labels(feats: list[torch.Tensor | None], cfg: LabelConfig) -> tuple[list[torch.Tensor], float]:
    """Fit MiniBatchKMeans on a seeded sample of frames; return int64 labels per file (empty for ``None``) and
    the k-means inertia per frame."""
    from sklearn.cluster import MiniBatchKMeans

    stacked = np.concatenate([f.numpy() for f in feats if f is not None])
    if len(stacked) < cfg.clusters:
        raise ValueError(f"only {len(stacked)} frames to fit {cfg.clusters} clusters; add audio or lower "
                         "labels.clusters")
    rng = np.random.default_rng(cfg.seed)
    sample = stacked[rng.choice(len(stacked), size=min(len(stacked), cfg.max_kmeans_frames), replace=False)]
    km = MiniBatchKMeans(n_clusters=cfg.clusters, init="k-means++", batch_size=cfg.kmeans_batch, max_iter=100,
                         n_init=cfg.kmeans_init_runs, reassignment_ratio=0.0, max_no_improvement=100,
                         random_state=cfg.seed)
    km.fit(sample)
    inertia = float(-km.score(sample) / len(sample))
    labels = [torch.from_numpy(km.predict(f.numpy()).astype(np.int64)) if f is not None
              else torch.zeros(0, dtype=torch.long) for f in feats]
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
