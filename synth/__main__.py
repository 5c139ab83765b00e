"""``python -m synth --out DIR --size {tiny,small} [--seed N]``: build the offline mini-SUPERB corpus."""
from __future__ import annotations

import argparse
import sys

from .build import BUILDERS, build_corpus
from .sizes import available_sizes
from .voices import SynthesisError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="python -m synth", description=__doc__)
    parser.add_argument("--out", required=True, help="corpus root (pass it as --data-root to every task)")
    parser.add_argument("--size", default="small", choices=available_sizes())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    parser.add_argument("--only", nargs="*", choices=list(BUILDERS), help="build only these parts")
    args = parser.parse_args(argv)
    if not args.out.strip():
        parser.error("--out: expected a folder, got an empty string")
    if args.seed < 0:
        parser.error(f"--seed: expected a non-negative integer, got {args.seed}")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers: expected at least 1 process, got {args.workers}")
    from common.cli import run_main

    def build() -> int:
        try:
            build_corpus(args.out, args.size, args.seed, args.workers, args.only)
        except SynthesisError as e:  # a missing speech engine: a RuntimeError, still the user's setup to fix
            raise ValueError(str(e)) from None
        return 0

    return run_main(build)


if __name__ == "__main__":
    sys.exit(main())
