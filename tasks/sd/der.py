"""Diarization scoring: frame posteriors → median-filtered decisions → segments → DER (pyannote.metrics).

Scoring follows SUPERB (dscore's defaults): no forgiveness collar and overlapped speech scored. The threshold and
median-filter width are chosen on dev (s3prl picks them on test, `score.sh`).
"""
from __future__ import annotations

import numpy as np
from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate
from scipy.signal import medfilt


def decide(posteriors: np.ndarray, threshold: float, median: int) -> np.ndarray:
    """Binary speaker activity ``[frame, speaker]`` from posteriors ``[frame, speaker]``.

    ``median`` is the median-filter width in frames (odd; 1 disables it), applied per speaker after thresholding.
    """
    if median < 1 or median % 2 == 0:
        raise ValueError(f"median filter width must be a positive odd number of frames, got {median}")
    active = (np.asarray(posteriors) > threshold).astype(np.float64)
    width = min(median, len(active) - (1 - len(active) % 2))  # never wider than the recording (kept odd)
    if width > 1:
        active = np.stack([medfilt(active[:, s], kernel_size=width) for s in range(active.shape[1])], axis=1)
    return active > 0.5


def activity_to_segments(active: np.ndarray, frame_shift: float) -> list[tuple[int, float, float]]:
    """``[(speaker_index, start_s, end_s)]`` of every run of active frames in ``active`` ``[frame, speaker]``."""
    segments = []
    for spk in range(active.shape[1]):
        padded = np.r_[False, active[:, spk], False].astype(np.int8)
        edges = np.flatnonzero(np.diff(padded))
        for start, end in zip(edges[::2], edges[1::2]):
            segments.append((spk, start * frame_shift, end * frame_shift))
    return sorted(segments, key=lambda s: (s[1], s[0]))


def to_annotation(segments: list[tuple[object, float, float]], uri: str) -> Annotation:
    ann = Annotation(uri=uri)
    for i, (speaker, start, end) in enumerate(segments):
        if end > start:
            ann[Segment(start, end), i] = str(speaker)
    return ann


def diarization_error_rate(references: dict[str, Annotation], hypotheses: dict[str, Annotation],
                           durations: dict[str, float]) -> float:
    """DER over all recordings (total errors / total reference speech), collar 0, overlap scored.

    Each recording is scored over ``[0, duration)``; a recording missing from ``hypotheses`` counts as all missed.
    """
    metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    for uri, ref in references.items():
        hyp = hypotheses.get(uri, Annotation(uri=uri))
        metric(ref, hyp, uem=Timeline([Segment(0.0, durations[uri])], uri=uri))
    return float(abs(metric))


def rttm_lines(segments: list[tuple[object, float, float]], uri: str) -> list[str]:
    """RTTM ``SPEAKER`` lines (NIST format) for ``segments`` of recording ``uri``."""
    return [f"SPEAKER {uri} 1 {start:.3f} {end - start:.3f} <NA> <NA> {speaker} <NA> <NA>"
            for speaker, start, end in segments if end > start]
