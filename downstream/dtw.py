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

import numpy as np
import torch
import torch.nn.functional as F

Distance = Literal["cosine", "cosine_exp"]


def frame_distances(query: torch.Tensor, docs: torch.Tensor, distance: Distance = "cosine_exp",
                    minmax_norm: bool = True, doc_lengths: torch.Tensor | None = None,
                    docs_normalised: bool = False) -> torch.Tensor:
    """Distance matrices ``[query_frame, document, doc_frame]`` (float32) for ``query`` ``[query_frame, feature]``
    and padded ``docs`` ``[document, doc_frame, feature]``; padded document frames get ``+inf``. Query frames come
    first so that the DTW recursion reads one contiguous ``[document, doc_frame]`` slab per step.
    ``docs_normalised`` says the document frames already have unit L2 norm (saves redoing it per query)."""
    q = F.normalize(query.float(), dim=-1)
    d = docs.float() if docs_normalised else F.normalize(docs.float(), dim=-1)
    dist = torch.einsum("qf,ntf->qnt", q, d).neg_().add_(1.0).clamp_(min=0.0)  # in place: these are large
    if distance == "cosine_exp":
        dist = dist.expm1_()
    elif distance != "cosine":
        raise ValueError(f"unknown DTW distance {distance!r}; expected 'cosine' or 'cosine_exp'")
    padding = None
    if doc_lengths is not None:
        lengths = doc_lengths.to(docs.device)
        padding = (torch.arange(docs.shape[1], device=docs.device)[None, :] >= lengths[:, None])[None, :, :]
    if minmax_norm:
        if padding is not None:  # distances are >= 0, so zeros on padding leave each row's maximum unchanged
            dist.masked_fill_(padding, 0.0)
        hi = dist.amax(dim=2, keepdim=True)
    if padding is not None:
        dist.masked_fill_(padding, float("inf"))
    if minmax_norm:
        lo = dist.amin(dim=2, keepdim=True)
        dist.sub_(lo).div_((hi - lo).clamp_(min=1e-9))  # padding stays +inf
    return dist


def subsequence_dtw_cost(dist: torch.Tensor) -> torch.Tensor:
    """Best normalised subsequence-DTW cost per document, ``[document]``, from ``dist`` ``[q, document, t]``.

    Recursion (asymmetric step pattern, open begin/end): ``g[0, t] = d[0, t]``;
    ``g[i, t] = d[i, t] + min(g[i-1, t], g[i-1, t-1], g[i-1, t-2])``; cost = ``min_t g[Q-1, t] / Q``.
    The loop runs in NumPy: its many small element-wise steps are faster single-threaded than through torch's
    thread pool on a busy machine.
    """
    if dist.dim() != 3:
        raise ValueError(f"expected distances [query_frame, document, doc_frame], got {tuple(dist.shape)}")
    d = np.ascontiguousarray(dist.detach().cpu().numpy())
    g = d[0].copy()
    best = np.empty_like(g)
    for i in range(1, d.shape[0]):
        best[:] = g  # predecessor cost: min over staying at t, or coming from t-1 or t-2
        np.minimum(best[:, 1:], g[:, :-1], out=best[:, 1:])
        np.minimum(best[:, 2:], g[:, :-2], out=best[:, 2:])
        np.add(best, d[i], out=g)
    return torch.from_numpy(g.min(axis=1) / d.shape[0])


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
        padded = F.normalize(torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True).float(), dim=-1)
        chunk_lengths = lengths[start:start + doc_batch]
        for qi, query in enumerate(queries):
            if len(query) < min_query_frames:
                continue
            dist = frame_distances(query, padded, distance, minmax_norm, chunk_lengths, docs_normalised=True)
            scores[qi, start:start + len(chunk)] = -subsequence_dtw_cost(dist).double()
    return scores


def znorm_per_query(scores: torch.Tensor) -> torch.Tensor:
    """Standardise each query's row of scores ``[query, document]`` (mean 0, std 1), as s3prl does."""
    mean = scores.mean(dim=1, keepdim=True)
    std = scores.std(dim=1, unbiased=False, keepdim=True).clamp(min=1e-9)
    return (scores - mean) / std
