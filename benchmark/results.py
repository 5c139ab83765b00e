"""Run folders and the append-only results table ``results/results.csv`` (one row per metric and split).

Rows are appended under a file lock (two runs finishing at once both land intact); earlier rows are never
rewritten. Columns: see ``COLUMNS``. A row's upstream is identified by (``upstream`` label, ``checkpoint_hash``): two
checkpoints that share a folder name are two upstreams. ``protocol`` says how the features were used
(:func:`protocol_name`), ``upstream_random`` whether the upstream's weights were a random initialisation (1) or not
(0), ``skipped_audio`` how many audio files ``--skip-bad-audio`` left out of the run (listed in its
``skipped_audio.json``), ``superb_comparable`` whether the run followed SUPERB's procedure (1) or not (0), and
``not_comparable_because`` why not (``;``-separated; ``benchmark/comparability.py``). A table written before these
columns existed gets them appended to its header on the next run (its rows are
read with them empty).
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

from filelock import FileLock

from common.io import atomic_write_text, locked_append
from common.run_record import flatten

COLUMNS = ["upstream", "params", "checkpoint_hash", "task", "split", "metric", "value", "seed", "steps",
           "wall_time_s", "git_commit", "config_hash", "date", "lr", "fold", "layer", "layer_weights", "run_id",
           "protocol", "upstream_random", "skipped_audio", "superb_comparable", "not_comparable_because"]
RESULTS_FILE = "results.csv"
DEFAULT_PROTOCOL = "weighted-sum"  # SUPERB's: frozen upstream, learnt softmax-weighted sum of all hidden states


def protocol_name(layer: int | None, trainable: bool) -> str:
    """``weighted-sum`` (frozen, SUPERB's protocol), ``layer-K`` (frozen, one hidden state), and ``finetune-`` +
    either of them when the upstream is trained too. Results of different protocols are never merged."""
    base = DEFAULT_PROTOCOL if layer is None else f"layer-{layer}"
    return f"finetune-{base}" if trainable else base


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
    protocol: str = DEFAULT_PROTOCOL
    upstream_random: bool = False
    skipped_audio: int = 0  # bad audio files left out with --skip-bad-audio
    not_comparable: tuple[str, ...] = ()  # why the rows are not SUPERB's numbers (empty: they are)


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


def why_new_run(run_dir: Path, identity: dict, seed: int, fold: int | None) -> str:
    """One line for ``--resume`` that found no run of this config: which earlier run(s) it could have meant and the
    config keys that differ, and that a new run starts in ``run_dir``."""
    import yaml

    want = flatten(json.loads(json.dumps(identity, default=str)))
    candidates = []
    for cfg_file in sorted(Path(run_dir).parent.glob("*/config.yaml"), key=lambda p: p.stat().st_mtime):
        try:
            saved = yaml.safe_load(cfg_file.read_text()) or {}
        except yaml.YAMLError:
            continue
        opts = saved.get("options", {}) if isinstance(saved, dict) else {}
        if opts.get("seed") != seed or opts.get("fold") != fold:
            continue
        have = flatten(json.loads(json.dumps({k: saved.get(k) for k in identity}, default=str)))
        changed = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        done = (cfg_file.parent / "DONE").exists()
        candidates.append((cfg_file.parent.name, done, changed))
    if not candidates:
        return (f"nothing to resume: no earlier run of this upstream and task with seed {seed} under "
                f"{Path(run_dir).parent}; starting a new run in {run_dir}")
    name, done, changed = ([c for c in candidates if not c[1]] or candidates)[-1]
    shown = ", ".join(changed[:6]) + (f" (+{len(changed) - 6} more)" if len(changed) > 6 else "")
    return (f"the config changed since run {name}{' (finished)' if done else ''}: {shown or 'its identity'} "
            f"differ; a changed config is a different run, so a new run starts in {run_dir}")


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
                             "" if info.layer is None else info.layer, weights, info.run_id, info.protocol,
                             int(info.upstream_random), info.skipped_audio, int(not info.not_comparable),
                             "; ".join(info.not_comparable)])
    return buf.getvalue()


def append_rows(results_dir: Path, text: str) -> Path:
    path = Path(results_dir) / RESULTS_FILE
    header = ",".join(COLUMNS)
    _upgrade_header(path, header)
    locked_append(path, text, header=header + "\n")
    return path


def _upgrade_header(path: Path, header: str) -> None:
    """A table from before the newest columns: append them to its header (rows stay as written; readers fill the
    missing trailing fields with nothing). Any other header is not ours: refuse rather than mix columns."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with FileLock(str(path) + ".lock", timeout=60):
        text = path.read_text(encoding="utf-8-sig")  # a BOM left by an editor is not part of the header
        first, _, rest = text.partition("\n")
        first = first.rstrip("\r")
        if first == header:
            return
        if not header.startswith(first + ","):
            raise ValueError(f"{path}: its header is not this toolkit's results columns ({first[:80]}...); move it "
                             "away or pass another --results-dir")
        atomic_write_text(path, header + "\n" + rest)
