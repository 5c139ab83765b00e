"""Term Weighted Value for query-by-example detection at the document level, as the QUESST 2014 scorer counts it.

Every (query, document) pair is a trial with a detection score; a trial is a target when the query occurs in the
document. For a query q with ``n_true(q)`` targets among the ``T`` documents, at threshold θ:

    P_miss(q, θ) = 1 − hits(q, θ) / n_true(q)
    P_fa(q, θ)   = false_alarms(q, θ) / (T − n_true(q))
    TWV(θ)       = 1 − mean over queries with n_true(q) ≥ 1 of [P_miss(q, θ) + β · P_fa(q, θ)]
    β            = (C_fa / C_miss) · (1 / P_target − 1)

MTWV is the maximum of TWV over one global threshold; ATWV is TWV at the system's own YES/NO decisions.
Default costs: the MediaEval SWS 2013 / QUESST 2014 settings P_target = 0.0008, C_miss = 100, C_fa = 1 (β ≈ 12.49).

Which trials count (the official scorer's definition, :func:`scorer_trials`): the scorer (``score-TWV-Cnxe.sh``
calling ``MediaEvalQUESST201x.jar`` with the ground truth's RTTM, ECF and TLIST) scores *every TLIST query × every
ECF document*. Its README's example run prints it: ``Removing unseen models metadata ... (removed: 2)`` (queries
without any occurrence leave the average, as in the NIST STD scorer) and ``Scores: 5327190 (495 model x 10762
test) given: 5327190 default(null): 0`` (the trials are queries × documents; pairs the system did not score get the
default score, the third argument: ``-10`` in SUPERB's command, ``s3prl/downstream/docs/superb.md:310-318``).
s3prl writes scores for English queries × English documents only (``quesst14_dtw/expert.py:161-179``), so for
SUPERB every other-language query counts as all-miss (TWV contribution 0, but it is in the mean) and an English
query's false alarms are normalised by *all* documents. ``T`` above is therefore the ECF's document count and the
mean runs over every query with an occurrence, whatever its language.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def twv_beta(p_target: float = 0.0008, c_miss: float = 100.0, c_fa: float = 1.0) -> float:
    """β of the TWV formula: the weight of a false-alarm probability relative to a miss probability."""
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    return (c_fa / c_miss) * (1.0 / p_target - 1.0)


@dataclass
class TWVResult:
    mtwv: float          # maximum TWV over a global threshold
    threshold: float     # a score threshold reaching it (trials with score >= threshold are YES); inf = none
    num_queries: int     # queries with at least one target (the ones averaged over)


def _check(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=bool)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"expected scores and targets of the same shape [query, document], "
                         f"got {scores.shape} and {targets.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("detection scores contain NaN or inf")
    return scores, targets


def _trial_weights(targets: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-trial TWV change when the trial turns YES: +1/(Q·n_true) for a target, −β/(Q·n_non) otherwise.

    Returns (weights ``[query, document]``, mask of the queries that count).
    """
    n_docs = targets.shape[1]
    n_true = targets.sum(axis=1)
    counted = n_true > 0
    if not counted.any():
        raise ValueError("no query has any target document: TWV is undefined")
    n_queries = int(counted.sum())
    n_non = n_docs - n_true
    hit_gain = np.where(counted, 1.0 / np.maximum(n_true, 1), 0.0) / n_queries
    fa_cost = np.where(counted & (n_non > 0), beta / np.maximum(n_non, 1), 0.0) / n_queries
    weights = np.where(targets, hit_gain[:, None], -fa_cost[:, None])
    return weights, counted


def maximum_twv(scores: np.ndarray, targets: np.ndarray, beta: float | None = None) -> TWVResult:
    """MTWV of ``scores`` ``[query, document]`` against boolean ``targets`` of the same shape.

    With every trial NO the TWV is 0; lowering the threshold past a trial adds that trial's weight, so the TWV at
    each candidate threshold is a cumulative sum over the trials sorted by decreasing score (ties enter together).
    """
    beta = twv_beta() if beta is None else beta
    scores, targets = _check(scores, targets)
    weights, counted = _trial_weights(targets, beta)
    s = scores[counted].ravel()
    w = weights[counted].ravel()
    order = np.argsort(-s, kind="stable")
    s, w = s[order], w[order]
    cum = np.cumsum(w)
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # a threshold can only sit between distinct scores
    cand_twv = np.r_[0.0, cum[last_of_tie]]
    cand_thr = np.r_[np.inf, s[last_of_tie]]
    best = int(np.argmax(cand_twv))
    return TWVResult(mtwv=float(cand_twv[best]), threshold=float(cand_thr[best]), num_queries=int(counted.sum()))


def twv_at(scores: np.ndarray, targets: np.ndarray, threshold: float, beta: float | None = None) -> float:
    """TWV when trials with ``score >= threshold`` are YES (ATWV when the threshold is the system's own)."""
    beta = twv_beta() if beta is None else beta
    scores, targets = _check(scores, targets)
    weights, counted = _trial_weights(targets, beta)
    return float((weights * (scores >= threshold))[counted].sum())


def scorer_trials(scores: np.ndarray, query_ids: list[str], document_ids: list[str], all_queries: list[str],
                  all_documents: list[str], occurrences: set[tuple[str, str]],
                  default_score: float = -10.0) -> tuple[np.ndarray, np.ndarray]:
    """The official scorer's trial matrix: ``(scores, targets)`` ``[len(all_queries), len(all_documents)]``.

    ``scores`` ``[query, document]`` holds the system's scores for ``query_ids`` × ``document_ids`` (the searched
    subset); every other trial gets ``default_score``, as the scorer does for pairs missing from the system output.
    Searched queries or documents outside ``all_queries`` / ``all_documents`` are not trials of the scorer (it reads
    only the TLIST's and ECF's) and are left out. ``targets[q, d]``: ``(query, document)`` is in ``occurrences``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(query_ids), len(document_ids)):
        raise ValueError(f"scores {scores.shape} do not match {len(query_ids)} queries x {len(document_ids)} documents")
    q_pos = {q: i for i, q in enumerate(all_queries)}
    d_pos = {d: j for j, d in enumerate(all_documents)}
    full = np.full((len(all_queries), len(all_documents)), float(default_score))
    rows = [(i, q_pos[q]) for i, q in enumerate(query_ids) if q in q_pos]
    cols = [(j, d_pos[d]) for j, d in enumerate(document_ids) if d in d_pos]
    if rows and cols:
        src_r, dst_r = map(list, zip(*rows))
        src_c, dst_c = map(list, zip(*cols))
        full[np.ix_(dst_r, dst_c)] = scores[np.ix_(src_r, src_c)]
    targets = np.zeros(full.shape, dtype=bool)
    for q, d in occurrences:
        if q in q_pos and d in d_pos:
            targets[q_pos[q], d_pos[d]] = True
    return full, targets
