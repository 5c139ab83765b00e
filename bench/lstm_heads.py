#!/usr/bin/env python
"""Training step time of the LSTM heads: packed ``nn.LSTM`` (as s3prl runs them) vs our padded-input versions.

    python bench/lstm_heads.py [--threads 1] [--repeats 10]

Same weights, same zero-padded batch, forward + backward; the outputs on valid frames are checked equal before
timing. Sizes: the demo profiles' heads (ASR/SF 2 x 64 BiLSTM, SD 1 x 64 LSTM) on 100 Hz FBANK-rate and 50 Hz
HuBERT-rate frames, and SUPERB's full ASR head (2 x 1024 BiLSTM).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.timing import add_timing_options, set_threads  # noqa: E402
from downstream.rnn import MaskedBiLSTM  # noqa: E402


def step_seconds(fn, x: torch.Tensor, repeats: int) -> float:
    """Best-of-``repeats`` time of ``fn(x).sum().backward()``."""
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up
        t0 = time.perf_counter()
        fn(x).sum().backward()
        best = min(best, time.perf_counter() - t0)
    return best


def packed_lstm(lstm: nn.LSTM, lengths: torch.Tensor):
    def run(x: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return nn.utils.rnn.pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=x.shape[1])[0]
    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    add_timing_options(p, repeats=10, threads=1)
    args = p.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)
    cases = [  # name, input dim, hidden, layers, bidirectional, batch, frames
        ("ASR/SF demo head, FBANK 100 Hz, 10 s batch", 64, 64, 2, True, 3, 340),
        ("ASR/SF demo head, HuBERT 50 Hz, 10 s batch", 64, 64, 2, True, 3, 170),
        ("SD demo head, 4 s chunks, 16 s batch", 256, 64, 1, False, 4, 200),
        ("SUPERB ASR head (2 x 1024), 20 s batch", 1024, 1024, 2, True, 4, 250),
    ]
    print(f"threads: {args.threads}; best of {args.repeats} forward+backward steps")
    print(f"{'head':46s} {'packed ms':>10s} {'ours ms':>9s} {'speed-up':>9s}")
    for name, dim, hidden, layers, bidir, batch, frames in cases:
        lengths = torch.linspace(frames, frames * 0.6, batch).long()
        x = torch.randn(batch, frames, dim)
        ref = nn.LSTM(dim, hidden, num_layers=layers, bidirectional=bidir, batch_first=True)
        if bidir:
            ours_module = MaskedBiLSTM(dim, hidden, layers).load_from_lstm(ref)
            ours = lambda t: ours_module(t, lengths)  # noqa: E731
        else:
            ours = lambda t: ref(t)[0]  # noqa: E731  (unidirectional: padding comes after the valid frames)
        packed = packed_lstm(ref, lengths)
        valid = torch.arange(frames)[None] < lengths[:, None]
        with torch.no_grad():
            if not torch.allclose(packed(x)[valid], ours(x)[valid], atol=1e-5):
                print(f"{name}: outputs differ on valid frames", file=sys.stderr)
                return 1
        t_packed, t_ours = step_seconds(packed, x, args.repeats), step_seconds(ours, x, args.repeats)
        print(f"{name:46s} {t_packed * 1e3:10.1f} {t_ours * 1e3:9.1f} {t_packed / t_ours:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
