#!/usr/bin/env python
"""Benchmark an upstream on a SUPERB task, or render the comparison report.

    python run_benchmark.py --upstream fbank --task ks [--profile demo] [-o optimizer.lr=1e-3] ...
    python run_benchmark.py --upstream fbank --task ks ic sid     # several tasks (or `all`) in one process
    python run_benchmark.py report [--results-dir results]
    python run_benchmark.py cache [--cache-dir DIR] [--remove HASH ...] [--unused-days N]

The command line lives in ``benchmark/cli.py`` (the demo's workers call it in-process).
"""
import sys

from benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
