"""What the speed scripts under ``bench/`` share: the ``--repeats``/``--threads`` options, a random batch of
variable-length utterances, the timing loop in which contenders take turns, and the machine's load average.

Contenders take turns within each round so that load from other processes on a shared machine hits them alike;
each script then reduces the per-round seconds (median, or minimum as ``timeit`` advises for short calls).
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch

from common.audio import SAMPLE_RATE


def load_average() -> str:
    """The 1/5/15-minute load average as ``"a/b/c"``: how busy the machine was around a measurement."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def add_timing_options(p: argparse.ArgumentParser, repeats: int, threads: int | None) -> None:
    """Adds ``--repeats`` (timed rounds) and ``--threads`` (torch CPU threads; None: torch's default)."""
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--threads", type=int, default=threads)


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads`` unless ``threads`` is None (torch's default)."""
    if threads is not None:
        torch.set_num_threads(threads)


def add_batch_options(p: argparse.ArgumentParser, utterances: int, max_seconds: float, quick: tuple) -> None:
    """Options of a random variable-length batch (:func:`random_batch`) plus the timing options.

    ``quick``: ``(utterances, min_seconds, max_seconds, repeats)`` that ``--quick`` sets."""
    n, lo, hi, repeats = quick
    p.add_argument("--quick", action="store_true", help=f"{n} utterances of {lo:g}-{hi:g} s, {repeats} repeats")
    p.set_defaults(quick_values=quick)
    p.add_argument("--utterances", type=int, default=utterances)
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--max-seconds", type=float, default=max_seconds)
    add_timing_options(p, repeats=3, threads=2)


def random_batch(args: argparse.Namespace) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(seconds [utterance], waveforms)``: ``args.utterances`` white-noise waveforms (amplitude 0.1, 16 kHz)
    with lengths evenly spread over ``--min-seconds``..``--max-seconds``, in a seeded random order.

    Applies ``--quick`` and ``--threads`` first, and prints one line describing the batch and the machine."""
    if args.quick:
        args.utterances, args.min_seconds, args.max_seconds, args.repeats = args.quick_values
    set_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    seconds = torch.linspace(args.min_seconds, args.max_seconds, args.utterances)
    seconds = seconds[torch.randperm(args.utterances, generator=gen)]
    wavs = [torch.randn(int(s * SAMPLE_RATE), generator=gen) * 0.1 for s in seconds]
    padded = len(wavs) * max(w.numel() for w in wavs) / SAMPLE_RATE
    print(f"batch: {len(wavs)} utterances, {args.min_seconds:g}-{args.max_seconds:g} s, {float(seconds.sum()):.1f} s "
          f"of audio ({padded:.1f} s padded); {args.threads} threads, {os.cpu_count()} CPUs; "
          f"median of {args.repeats}; torch {torch.__version__}; load average (1/5/15 min) {load_average()}")
    return seconds, wavs


def interleaved_times(runs: dict[str, Callable[[], object]], repeats: int, warm_up: bool = False,
                      before_each: Callable[[], object] | None = None) -> dict[str, list[float]]:
    """Wall seconds of each callable in each of ``repeats`` rounds, the callables taking turns within a round.

    ``warm_up``: call each once, untimed, first. ``before_each``: called untimed before every timed call (e.g. to
    reseed)."""
    if warm_up:
        for fn in runs.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            if before_each is not None:
                before_each()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times
