#!/usr/bin/env python
"""Benchmark an upstream on SUPERB tasks, render the report, or manage the feature cache: ``--help``, and the
usage in ``benchmark/cli.py`` (where the command line lives; the demo's workers call it in-process)."""
import sys

from benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
