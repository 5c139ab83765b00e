"""QbE matching speed: the batched subsequence DTW (all documents of a chunk at once) against the same recursion
run one (query, document) pair at a time, as s3prl does with dtw-python. Same inputs, scores checked equal.

    .venv/bin/python bench/bench_dtw.py [--queries 8] [--docs 200] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from downstream.dtw import match_scores  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=8)
    p.add_argument("--docs", type=int, default=200)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    # 50 Hz frames: queries 0.6-1.2 s, documents 3-8 s (QUESST-like lengths)
    queries = [torch.randn(int(torch.randint(30, 60, (1,), generator=g)), args.dim, generator=g)
               for _ in range(args.queries)]
    docs = [torch.randn(int(torch.randint(150, 400, (1,), generator=g)), args.dim, generator=g)
            for _ in range(args.docs)]

    t0 = time.perf_counter()
    batched = match_scores(queries, docs, doc_batch=256)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    pairwise = match_scores(queries, docs, doc_batch=1)
    t_pairwise = time.perf_counter() - t0
    assert torch.allclose(batched, pairwise, atol=1e-5), "batched and per-pair scores differ"
    pairs = args.queries * args.docs
    print(f"{pairs} query-document pairs, feature dim {args.dim}, {args.threads} threads")
    print(f"per pair : {t_pairwise:8.3f} s  ({1000 * t_pairwise / pairs:.2f} ms/pair)")
    print(f"batched  : {t_batched:8.3f} s  ({1000 * t_batched / pairs:.2f} ms/pair)")
    print(f"speed-up : {t_pairwise / t_batched:.1f}x")


if __name__ == "__main__":
    main()
