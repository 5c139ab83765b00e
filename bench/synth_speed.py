"""How long the offline corpus takes to build: wall time, CPU time, machine load and audio hours per task.

    python bench/synth_speed.py --size small [--out DIR] [--workers N]

Builds from scratch into a fresh folder (a temporary one unless --out is given and empty). The target is
``small`` in at most 5 minutes on a 2-core machine; the load average is printed because other work on the machine
slows the build.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.build import build_corpus  # noqa: E402


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="build here (must be empty or absent); default a temp dir")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary corpus")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix=f"synth-bench-{args.size}-"))
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} is not empty; the benchmark needs a from-scratch build")
    load_before, cpu_before, t0 = os.getloadavg(), _cpu_seconds(), time.time()
    stats = build_corpus(out, args.size, args.seed, args.workers, verbose=True)
    wall, cpu, load_after = time.time() - t0, _cpu_seconds() - cpu_before, os.getloadavg()
    hours = {part: sum(st.get("hours", 0) or 0 for st in splits.values()) for part, splits in stats.items()}
    print(f"\nsize {args.size}, seed {args.seed}, workers {args.workers or os.cpu_count()}, cores {os.cpu_count()}")
    for part, h in hours.items():
        print(f"  {part:16s} {h:7.3f} h")
    total = sum(hours.values())
    print(f"audio total        {total:7.3f} h")
    print(f"wall time          {wall:7.1f} s   (target for small: <= 300 s on 2 cores)")
    print(f"CPU time           {cpu:7.1f} s   (this build's processes)")
    print(f"speed              {total * 3600 / wall:7.1f} x real time")
    print(f"load average       before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          "(1-minute; other work on the machine slows the build)")
    if not args.out and not args.keep:
        shutil.rmtree(out)
    else:
        print(f"corpus in {out}")


if __name__ == "__main__":
    main()
