"""Subsequence DTW between spoken queries and documents, vectorised over documents (SUPERB's QbE matcher).

Matches s3prl ``quesst14_dtw`` with its shipped config: frame distances from cosine distance (``cosine_exp`` =
exp(d) − 1 by default, or plain ``cosine``), each query row min-max normalised over the document frames, then DTW
with dtw-python's ``asymmetric`` step pattern (every step advances one query frame and 0, 1 or 2 document frames)
with open begin and open end; the match cost is the accumulated cost divided by the query length and the detection
score is its negative. Instead of dtw-python's per-pair loop, the recursion runs one query frame at a time over a
``[document, frame]`` matrix holding every document at once.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Distance = Literal["cosine", "cosine_exp"]


def frame_distances(query: torch.Tensor, docs: torch.Tensor, distance: Distance = "cosine_exp",
                    minmax_norm: bool = True, doc_lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Distance matrices ``[document, query_frame, doc_frame]`` for ``query`` ``[query_frame, feature]`` and
    padded ``docs`` ``[document, doc_frame, feature]``; padded document frames get ``+inf``."""
    q = F.normalize(query.double(), dim=-1)
    d = F.normalize(docs.double(), dim=-1)
    dist = (1.0 - torch.einsum("qf,ntf->nqt", q, d)).clamp(min=0.0)
    if distance == "cosine_exp":
        dist = torch.expm1(dist)
    elif distance != "cosine":
        raise ValueError(f"unknown DTW distance {distance!r}; expected 'cosine' or 'cosine_exp'")
    valid = None
    if doc_lengths is not None:
        valid = (torch.arange(docs.shape[1], device=docs.device)[None, :] < doc_lengths[:, None])[:, None, :]
    if minmax_norm:
        lo = dist.masked_fill(~valid, float("inf")) if valid is not None else dist
        hi = dist.masked_fill(~valid, float("-inf")) if valid is not None else dist
        lo = lo.amin(dim=2, keepdim=True)
        hi = hi.amax(dim=2, keepdim=True)
        dist = (dist - lo) / (hi - lo).clamp(min=1e-9)
    if valid is not None:
        dist = dist.masked_fill(~valid, float("inf"))
    return dist


def subsequence_dtw_cost(dist: torch.Tensor) -> torch.Tensor:
    """Best normalised subsequence-DTW cost per document, ``[document]``, from ``dist`` ``[document, q, t]``.

    Recursion (asymmetric step pattern, open begin/end): ``g[0, t] = d[0, t]``;
    ``g[i, t] = d[i, t] + min(g[i-1, t], g[i-1, t-1], g[i-1, t-2])``; cost = ``min_t g[Q-1, t] / Q``.
    """
    if dist.dim() != 3:
        raise ValueError(f"expected distances [document, query_frame, doc_frame], got {tuple(dist.shape)}")
    inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
    g = dist[:, 0, :]
    for i in range(1, dist.shape[1]):
        stay = g
        one = F.pad(g[:, :-1], (1, 0), value=float("inf"))
        two = F.pad(g[:, :-2], (2, 0), value=float("inf")) if g.shape[1] > 1 else torch.full_like(g, inf)
        g = dist[:, i, :] + torch.minimum(torch.minimum(stay, one), two)
    return g.amin(dim=1) / dist.shape[1]


def match_scores(queries: list[torch.Tensor], docs: list[torch.Tensor], distance: Distance = "cosine_exp",
                 minmax_norm: bool = True, min_query_frames: int = 5, doc_batch: int = 256) -> torch.Tensor:
    """Detection scores ``[query, document]`` (higher = more likely the query occurs in the document).

    queries/docs: lists of ``[frame, feature]`` feature matrices (already normalised as the caller wants).
    Queries shorter than ``min_query_frames`` get score 0 against every document, as in s3prl.
    """
    scores = torch.zeros(len(queries), len(docs), dtype=torch.float64)
    lengths = torch.tensor([len(d) for d in docs])
    if (lengths == 0).any():
        raise ValueError(f"document {int((lengths == 0).nonzero()[0])} has no frames")
    for start in range(0, len(docs), doc_batch):
        chunk = docs[start:start + doc_batch]
        padded = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True)
        chunk_lengths = lengths[start:start + doc_batch]
        for qi, query in enumerate(queries):
            if len(query) < min_query_frames:
                continue
            dist = frame_distances(query, padded, distance, minmax_norm, chunk_lengths)
            scores[qi, start:start + len(chunk)] = -subsequence_dtw_cost(dist)
    return scores


def znorm_per_query(scores: torch.Tensor) -> torch.Tensor:
    """Standardise each query's row of scores ``[query, document]`` (mean 0, std 1), as s3prl does."""
    mean = scores.mean(dim=1, keepdim=True)
    std = scores.std(dim=1, unbiased=False, keepdim=True).clamp(min=1e-9)
    return (scores - mean) / std
