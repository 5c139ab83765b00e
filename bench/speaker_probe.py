#!/usr/bin/env python
"""How much frame-level speaker information each hidden state of an upstream carries: the diagnosis behind the
demo's SD plateau (docs/results/task_sd.md).

    python bench/speaker_probe.py --upstream fbank mfcc results/demo/hubert_mini [--recordings 40]

Uses each two-speaker training mixture of Libri2Mix (Kaldi dir) and the frames where exactly one speaker talks.
Those frames are normalised per recording (mean and variance per dimension, as FBANK's CMVN). A logistic
regression fitted on the first half of them predicts which of the two speakers talks in the second half. The
script prints the mean held-out accuracy per hidden state, side by side for the upstreams given. 50% means no
information: on the demo corpus FBANK and MFCC frames reach ~70%.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.audio import SAMPLE_RATE, load_audio  # noqa: E402
from tasks.sd.data import KALDI_DIR, Recording, load_kaldi_dir  # noqa: E402
from upstream import build_upstream  # noqa: E402


def speaker_of_frames(rec: Recording, num_frames: int, shift_s: float) -> np.ndarray:
    """Per frame: 0 or 1 (which of the two speakers talks alone), -1 for silence or overlap."""
    active = np.zeros((num_frames, 2), dtype=bool)
    index = {s: i for i, s in enumerate(rec.speakers)}
    for speaker, t0, t1 in rec.turns:
        active[int(t0 / shift_s):int(t1 / shift_s), index[speaker]] = True
    return np.where(active.sum(1) == 1, active[:, 1].astype(int), -1)


def probe_accuracy(features: np.ndarray, speaker: np.ndarray) -> float | None:
    """Held-out accuracy of a linear probe trained on the first half of the single-speaker frames."""
    x, y = features[speaker >= 0], speaker[speaker >= 0]
    x = (x - x.mean(0)) / (x.std(0) + 1e-5)
    half = len(y) // 2
    if len(set(y[:half])) < 2 or len(set(y[half:])) < 2:
        return None  # one speaker only in a half: nothing to tell apart
    return float(LogisticRegression(C=0.1, max_iter=300).fit(x[:half], y[:half]).score(x[half:], y[half:]))


def probe(name: str, recordings: list[Recording]) -> list[float]:
    upstream = build_upstream(name).eval()
    shift_s = upstream.downsample_rate / SAMPLE_RATE
    scores: list[list[float]] = []
    for rec in recordings:
        with torch.no_grad():
            out = upstream.extract([load_audio(rec.path)])
        n = int(out.lengths[0])
        speaker = speaker_of_frames(rec, n, shift_s)
        row = [probe_accuracy(h[0, :n].float().numpy(), speaker) for h in out.hidden_states]
        if all(a is not None for a in row):
            scores.append(row)
    if not scores:
        raise SystemExit("no mixture has both speakers talking alone in each half; is this a two-speaker corpus?")
    return np.mean(scores, axis=0).tolist()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", nargs="+", required=True, help="registered names or checkpoint paths")
    p.add_argument("--data-root", default="data/mini_superb", help="holds Libri2Mix/kaldi/train")
    p.add_argument("--recordings", type=int, default=40, help="training mixtures to probe")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    recordings = load_kaldi_dir(Path(args.data_root) / KALDI_DIR / "train")[:args.recordings]
    print(f"speaker A vs B, linear probe on single-speaker frames of {len(recordings)} mixtures "
          f"(held-out accuracy per hidden state; 0.5 = no information)")
    for name in args.upstream:
        acc = probe(name, recordings)
        print(f"{Path(name).name:28s} " + " ".join(f"{a:.3f}" for a in acc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
