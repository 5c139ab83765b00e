"""Helper for the end-to-end task tests: one short benchmark run on a tiny dataset, returning its results rows."""
from __future__ import annotations

import csv
from pathlib import Path

from benchmark.engine import RunOptions, run_task
from tests.fixtures.upstreams import TINY_UPSTREAM


def run_and_read_rows(data_root: Path, task: str, out: Path, overrides: list[str] | None = None,
                      upstream: str = TINY_UPSTREAM, max_steps: int = 4,
                      layer: int | None = None) -> tuple[dict, list[dict]]:
    """Run ``task`` with the demo profile for ``max_steps`` updates; returns (summary, rows of results.csv)."""
    options = RunOptions(upstream=upstream, task=task, data_root=data_root, results_dir=out / "results",
                         max_steps=max_steps, profile="demo", cache_dir=out / "cache", layer=layer,
                         overrides=["train.eval_every=2", *(overrides or [])])
    summary = run_task(options)
    with open(out / "results" / "results.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["task"] == task]
    return summary, rows
