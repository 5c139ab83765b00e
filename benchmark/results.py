"""Run folders and the append-only results table ``results/results.csv`` (one row per metric and split).

Rows are appended under a file lock (two runs finishing at once both land intact); earlier rows are never
rewritten. Columns: see ``COLUMNS``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from common.io import locked_append

COLUMNS = ["upstream", "params", "checkpoint_hash", "task", "split", "metric", "value", "seed", "steps",
           "wall_time_s", "git_commit", "config_hash", "date", "lr", "fold", "layer", "layer_weights", "run_id"]
RESULTS_FILE = "results.csv"


@dataclass
class RunInfo:
    """What every row of one run shares."""

    upstream: str
    params: int
    checkpoint_hash: str
    task: str
    seed: int
    config_hash: str
    run_id: str
    fold: int | None = None
    layer: int | None = None


def safe_name(name: str) -> str:
    """A folder-safe label for an upstream given as a name or a path (``ckpts/student.pt`` -> ``student``).
    ONNX files keep their suffix (``students/cnn.int8.onnx`` -> ``cnn.int8.onnx``): the exported model gets its own
    report row instead of merging with the PyTorch checkpoint it came from."""
    path = Path(name)
    stem = path.stem if ("/" in name or "\\" in name or path.suffix) else name
    if path.suffix == ".onnx":
        stem = path.name
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", stem) or "upstream"


def config_hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=cwd or Path(__file__).resolve().parent.parent)
        commit = out.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, cwd=cwd or Path(__file__).resolve().parent.parent).stdout
        return (commit + ("-dirty" if dirty.strip() else "")) if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_dir_for(results_dir: Path, upstream: str, task: str, run_id: str, resume: bool) -> Path:
    """``results/<upstream>/<task>/<run_id>[-N]``. With ``resume`` the latest unfinished attempt is reused (or the
    latest finished one, which the engine then reports without rerunning); without, an existing folder gets a fresh
    ``-N`` suffix so earlier runs are never overwritten."""
    base = results_dir / upstream / task
    attempts = sorted([p for p in base.glob(f"{run_id}*") if p.name == run_id or
                       re.fullmatch(re.escape(run_id) + r"-\d+", p.name)],
                      key=lambda p: int(p.name.rsplit("-", 1)[1]) if p.name != run_id else 0)
    if resume and attempts:
        unfinished = [p for p in attempts if not (p / "DONE").exists()]
        return unfinished[-1] if unfinished else attempts[-1]  # a finished attempt is reported, not redone
    if not attempts:
        return base / run_id
    return base / f"{run_id}-{len(attempts) + 1}"


def format_rows(info: RunInfo, metrics: dict[str, dict[str, float]], steps: int, wall_time_s: float, lr: float | None,
                layer_weights: list[float] | None) -> str:
    """CSV text (no header) of one row per (split, metric)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    commit = git_commit()
    weights = " ".join(f"{w:.4f}" for w in layer_weights) if layer_weights else ""
    for split, values in metrics.items():
        for metric, value in values.items():
            writer.writerow([info.upstream, info.params, info.checkpoint_hash, info.task, split, metric,
                             f"{float(value):.6g}", info.seed, steps, f"{wall_time_s:.1f}", commit, info.config_hash,
                             now, "" if lr is None else f"{lr:.3g}", "" if info.fold is None else info.fold,
                             "" if info.layer is None else info.layer, weights, info.run_id])
    return buf.getvalue()


def append_rows(results_dir: Path, text: str) -> Path:
    path = Path(results_dir) / RESULTS_FILE
    locked_append(path, text, header=",".join(COLUMNS) + "\n")
    return path
