#!/usr/bin/env python
"""What the feature cache's integrity check costs, side by side with what a run does with each entry anyway.

    python bench/cache_verify_cost.py [--entries 400] [--frames 250] [--layers 13] [--dim 192]

Writes ``entries`` fp16 arrays ``[layers, frames, dim]`` (defaults: 5 s of hubert_mini features) through
``FeatureCache.save`` and times, on the same files in one run: ``FeatureCache.load`` (reads the entry and checks its
size and xxh3-64 hash against its trailer, as every run does when it reads an entry) and one plain ``np.load`` of
every entry (no check). Prints both and their ratio: what checking on read costs. Nothing is re-read up front: a warm
run only stats its entries. Timings on a shared machine are noisy: compare the ratio, not the seconds.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.cache import FeatureCache  # noqa: E402
from tasks.base import Utterance  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--entries", type=int, default=400)
    p.add_argument("--frames", type=int, default=250)
    p.add_argument("--layers", type=int, default=13)
    p.add_argument("--dim", type=int, default=192)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        audio = Path(tmp) / "a.wav"
        audio.write_bytes(b"RIFF")  # keys hash the audio's content and slice; the file only has to exist
        utts = [Utterance(id=f"u{i}", path=audio, duration=1.0, start=float(i)) for i in range(args.entries)]
        cache = FeatureCache(Path(tmp) / "cache", "0" * 16)
        rng = np.random.default_rng(0)
        for u in utts:
            cache.save(u, rng.standard_normal((args.layers, args.frames, args.dim)).astype(np.float16))
        fresh = FeatureCache(Path(tmp) / "cache", "0" * 16)
        for u in utts:  # warm the page cache and the key memo for both measurements alike
            fresh.path(u).read_bytes()
        t0 = time.perf_counter()
        for u in utts:
            fresh.load(u)
        verify = time.perf_counter() - t0
        t0 = time.perf_counter()
        for u in utts:
            np.load(fresh.path(u))  # the trailer after the array is not read by np.load
        load = time.perf_counter() - t0
    mb = args.entries * args.layers * args.frames * args.dim * 2 / 1e6
    print(f"{args.entries} entries, {mb:.0f} MB: checked load {verify:.3f} s, plain np.load {load:.3f} s, "
          f"checked/plain = {verify / load:.2f}")


if __name__ == "__main__":
    main()
