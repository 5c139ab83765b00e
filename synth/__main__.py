"""``python -m synth --out DIR --size {tiny,small} [--seed N]``: build the offline mini-SUPERB corpus."""
from __future__ import annotations

import argparse
import sys

from .build import BUILDERS, build_corpus
from .sizes import available_sizes
from .voices import SynthesisError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synth", description=__doc__)
    parser.add_argument("--out", required=True, help="corpus root (pass it as --data-root to every task)")
    parser.add_argument("--size", default="small", choices=available_sizes())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    parser.add_argument("--only", nargs="*", choices=list(BUILDERS), help="build only these parts")
    args = parser.parse_args(argv)
    try:
        build_corpus(args.out, args.size, args.seed, args.workers, args.only)
    except SynthesisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
