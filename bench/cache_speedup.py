#!/usr/bin/env python
"""Per-epoch training time with cached features vs the upstream run in the loop, side by side.

    python bench/cache_speedup.py --upstream hubert_mini --task ks --data-root data/mini_superb [--epochs 2]

Both modes train the same head on the same batches (one epoch of the task's training split, the task's
``batch.max_seconds``); the cached mode reads fp16 features from the on-disk cache (filled once beforehand, timed
separately), the live mode runs the frozen upstream on every batch, as s3prl does.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.batching import epoch_batches  # noqa: E402
from benchmark.engine import RunOptions, RunParts, open_run  # noqa: E402
from benchmark.model import build_downstream  # noqa: E402
from benchmark.cache import weights_hash  # noqa: E402
from tasks.registry import build_task  # noqa: E402
from upstream import build_upstream  # noqa: E402


def epoch_seconds(parts: RunParts, task, utts, batches) -> float:
    """Wall time of one training epoch (data, forward, backward, update) with the run's feature source."""
    model = build_downstream(task, parts.shape, parts.options.seed, parts.options.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    source = parts.sources.for_run()
    t0 = time.perf_counter()
    for idx in batches:
        fb = source.batch([utts[i] for i in idx])
        loss = task.loss(model(fb.hidden, fb.lengths), fb.lengths, fb.utts)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", default="hubert_mini")
    p.add_argument("--task", default="ks")
    p.add_argument("--data-root", type=Path, default=Path("data/mini_superb"))
    p.add_argument("--epochs", type=int, default=2, help="epochs timed per mode (the best is reported)")
    p.add_argument("--profile", default="demo")
    p.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary folder")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for both modes")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    task = build_task(args.task, args.data_root, profile=args.profile)
    up = build_upstream(args.upstream).eval()
    up.requires_grad_(False)
    task.setup(up.downsample_rate)
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or Path(tmp)
        times = {}
        for mode in ("live", "cached"):
            opts = RunOptions(upstream=args.upstream, task=args.task, data_root=args.data_root,
                              cache="on" if mode == "cached" else "off", cache_dir=cache_dir, device="cpu")
            parts = open_run(task, up, opts, Path(tmp) / mode, weights_hash(up))
            t0 = time.perf_counter()
            utts = parts.splits.load("train")  # fills the cache in cached mode
            setup = time.perf_counter() - t0
            batches = epoch_batches([u.duration for u in utts], task.config.batch.max_seconds, 0, 0)
            best = min(epoch_seconds(parts, task, utts, batches) for _ in range(args.epochs))
            times[mode] = best
            audio = sum(u.duration for u in utts)
            extra = f", one-off extraction {setup:.2f} s" if mode == "cached" else ""
            print(f"{mode:>6}: {best:.3f} s per epoch ({len(utts)} utterances, {audio:.0f} s of audio, "
                  f"{len(batches)} batches{extra})")
    print(f"speed-up cached vs upstream-in-the-loop: {times['live'] / times['cached']:.1f}x "
          f"(upstream {args.upstream}, task {args.task}, torch threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
