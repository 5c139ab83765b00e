"""Speaker-verification metrics from trial scores: EER and minimum detection cost, both from scikit-learn's ROC."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve


def _roc(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"expected 1-D labels and scores of equal length, got {labels.shape} and {scores.shape}")
    if not set(np.unique(labels)) <= {0, 1}:
        raise ValueError("trial labels must be 0 (different speakers) or 1 (same speaker)")
    if labels.min() == labels.max():
        raise ValueError("EER needs both target (1) and non-target (0) trials")
    if not np.isfinite(scores).all():
        raise ValueError("trial scores contain NaN or inf")
    fpr, tpr, thresholds = roc_curve(labels, scores, pos_label=1, drop_intermediate=False)
    return fpr, 1.0 - tpr, thresholds


def equal_error_rate(labels, scores) -> tuple[float, float]:
    """EER (fraction) and its threshold: the ROC point where false-alarm rate equals miss rate.

    Between the two ROC points that bracket the crossing, the rates are interpolated linearly. Reference
    implementation matched (to 1e-9, at any trial count, ties included; tests/test_tasks_asv.py): the root of the
    linearly interpolated ROC, ``brentq(lambda x: 1 - x - interp1d(fpr, tpr)(x), 0, 1)`` on scikit-learn's
    ``roc_curve``: s3prl's own ``EER`` (s3prl/downstream/sv_voxceleb1/utils.py, SUPERB's ASV numbers), which the
    test calls.
    Not ``pyannote.metrics``' ``det_curve`` EER: it averages the four rates of the two bracketing points of the
    thinned ROC, which agrees at 1k+ trials but not on small lists (1.2 points apart on average at 40 trials, up to
    6) and gives 25% to a perfectly separating system at any trial count.
    Raises ValueError for mismatched shapes, labels other than 0/1, a single class, or non-finite scores.
    """
    fpr, fnr, thr = _roc(labels, scores)
    diff = fnr - fpr                      # decreasing along the ROC (from miss-everything to accept-everything)
    i = int(np.argmax(diff <= 0))         # first point where false alarms catch up with misses
    if i == 0 or diff[i] == 0:
        return float((fpr[i] + fnr[i]) / 2), float(thr[i])
    # linear interpolation between point i-1 (diff > 0) and point i (diff < 0)
    t = diff[i - 1] / (diff[i - 1] - diff[i])
    eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    finite_prev = thr[i - 1] if np.isfinite(thr[i - 1]) else thr[i]
    return float(eer), float(finite_prev + t * (thr[i] - finite_prev))


def min_dcf(labels, scores, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Minimum normalised detection cost: min over thresholds of C_miss·P_tar·P_miss + C_fa·(1−P_tar)·P_fa,
    divided by the cost of the best trivial system, min(C_miss·P_tar, C_fa·(1−P_tar))."""
    fpr, fnr, _ = _roc(labels, scores)
    cost = c_miss * p_target * fnr + c_fa * (1.0 - p_target) * fpr
    return float(cost.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))
