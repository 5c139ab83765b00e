"""Batches sized by total audio seconds (not utterance count), so memory stays flat across tasks.

Training order is a pure function of (seed, epoch): a resumed run rebuilds the epoch's batch list and skips to the
saved position, so no sampler object needs pickling.
"""
from __future__ import annotations

from typing import Sequence

import torch


def pack_by_seconds(order: Sequence[int], durations: Sequence[float], max_seconds: float) -> list[list[int]]:
    """Greedily cut ``order`` into consecutive batches whose durations sum to at most ``max_seconds``.

    An utterance longer than ``max_seconds`` forms a batch of its own (it is never dropped).
    """
    if max_seconds <= 0:
        raise ValueError(f"batch.max_seconds must be positive, got {max_seconds}")
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0.0
    for i in order:
        d = float(durations[i])
        if current and total + d > max_seconds:
            batches.append(current)
            current, total = [], 0.0
        current.append(int(i))
        total += d
    if current:
        batches.append(current)
    return batches


def epoch_batches(durations: Sequence[float], max_seconds: float, seed: int, epoch: int,
                  weights: Sequence[float] | None = None, bucket: int = 50) -> list[list[int]]:
    """The training batches of one epoch (indices into the train list).

    Without ``weights``: a random permutation; with ``weights``: as many draws with replacement as there are
    utterances (class-balanced sampling). Within windows of ``bucket`` batches' worth of utterances the order is
    sorted by length to limit padding, then the batches themselves are shuffled.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    n = len(durations)
    if n == 0:
        raise ValueError("the training split is empty")
    if weights is not None:
        order = torch.multinomial(torch.as_tensor(weights, dtype=torch.double), n, replacement=True, generator=g)
    else:
        order = torch.randperm(n, generator=g)
    order = order.tolist()
    mean_per_batch = max(1, int(max_seconds / max(sum(durations) / n, 1e-6)))
    window = mean_per_batch * bucket
    sorted_order: list[int] = []
    for s in range(0, n, window):
        sorted_order += sorted(order[s:s + window], key=lambda i: durations[i])
    batches = pack_by_seconds(sorted_order, durations, max_seconds)
    perm = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in perm]


def eval_batches(durations: Sequence[float], max_seconds: float) -> list[list[int]]:
    """Deterministic evaluation batches: longest first, packed by seconds."""
    order = sorted(range(len(durations)), key=lambda i: -durations[i])
    return pack_by_seconds(order, durations, max_seconds)
