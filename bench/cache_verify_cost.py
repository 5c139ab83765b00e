#!/usr/bin/env python
"""What the feature cache's integrity check costs, side by side with what a run does with each entry anyway.

    python bench/cache_verify_cost.py [--entries 400] [--frames 250] [--layers 13] [--dim 192]

Writes ``entries`` fp16 arrays ``[layers, frames, dim]`` (defaults: 5 s of hubert_mini features) through
``FeatureCache.save`` and times, on the same files in one run: the check (size + xxh3-64 hash against the sidecar, once
per entry and run, ``FeatureCache.has``) and one plain ``np.load`` of every entry (a run reads each entry at least
once). Prints both and their ratio. Timings on a shared machine are noisy: compare the ratio, not the seconds.
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
        audio.write_bytes(b"RIFF")  # keys hash the audio's identity; the file only has to exist
        utts = [Utterance(id=f"u{i}", path=audio, duration=1.0, start=float(i)) for i in range(args.entries)]
        cache = FeatureCache(Path(tmp) / "cache", "0" * 16)
        rng = np.random.default_rng(0)
        for u in utts:
            cache.save(u, rng.standard_normal((args.layers, args.frames, args.dim)).astype(np.float16))
        fresh = FeatureCache(Path(tmp) / "cache", "0" * 16)
        for u in utts:  # warm the page cache and the key memo for both measurements alike
            fresh.path(u).read_bytes()
        t0 = time.perf_counter()
        assert all(fresh.has(u) for u in utts)
        verify = time.perf_counter() - t0
        t0 = time.perf_counter()
        for u in utts:
            fresh.load(u)
        load = time.perf_counter() - t0
    mb = args.entries * args.layers * args.frames * args.dim * 2 / 1e6
    print(f"{args.entries} entries, {mb:.0f} MB: verify {verify:.3f} s, load {load:.3f} s, "
          f"verify/load = {verify / load:.2f}")


if __name__ == "__main__":
    main()
