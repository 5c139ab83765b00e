"""Using a finished run: ``run_benchmark.py predict`` (a trained head on new audio) and ``run_benchmark.py evaluate``
(re-score the saved best checkpoint on a split without training; s3prl's ``-m evaluate``).

Both rebuild the run exactly from its folder: the task from the config saved in ``config.yaml`` (not from today's
YAML), the upstream by name/path with its weights hash checked against the run's, the downstream model from
``checkpoints/best.pt`` (``weights_only=True``), and dev post-selection (SD threshold / median filter) redone on dev
as in the run. Features come from the run's feature cache (the same fp16 features the run scored), so ``predict`` on
a test file reproduces the run's ``predictions/test.jsonl`` entry.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from common.checkpoint import load_checkpoint
from common.config import load_config
from common.io import atomic_write_text
from common.utterance import Utterance
from tasks.base import Task
from tasks.registry import get_task_class
from upstream import build_upstream

from . import results
from .batching import eval_batches
from .cache import weights_hash
from .engine import RunOptions, RunParts, open_run
from .model import DownstreamModel, build_downstream

log = logging.getLogger(__name__)


class RunFolderError(ValueError):
    """A run folder cannot be used (missing files, another upstream, a task without a trained head)."""


@dataclass
class LoadedRun:
    run_dir: Path
    task: Task
    parts: RunParts
    model: DownstreamModel
    saved: dict  # config.yaml
    summary: dict  # summary.json ({} when the run has none)
    selected: dict  # the dev post-selection redone here (SD threshold / median filter), as the run chose


def load_run(run_dir: str | Path, device: str | None = None, work_dir: Path | None = None) -> LoadedRun:
    """Rebuild a finished run (task, upstream, best downstream weights); raises :class:`RunFolderError`.

    ``work_dir``: where the run's parts write (skipped audio, TensorBoard; default: the run folder itself).
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise RunFolderError(f"{run_dir}: not a run folder (no config.yaml); pass results/<upstream>/<task>/<run-id>")
    saved = yaml.safe_load(cfg_path.read_text()) or {}
    missing = [k for k in ("options", "task", "task_config", "upstream_hash") if k not in saved]
    if missing:
        raise RunFolderError(f"{cfg_path}: missing {', '.join(missing)} (written by another version?)")
    best = run_dir / "checkpoints" / "best.pt"
    if not best.is_file():
        raise RunFolderError(f"{run_dir}: no trained head (checkpoints/best.pt missing; task {saved['task']!r} "
                             "either trains no head, like qbe, or the run has not reached its first dev evaluation)")
    known = {f.name for f in dataclasses.fields(RunOptions)}
    opts = {k: v for k, v in saved["options"].items() if k in known}
    for key in ("data_root", "results_dir", "cache_dir", "upstream_ckpt"):
        if opts.get(key) is not None:
            opts[key] = Path(opts[key])
    opts.update(resume=False, lr_sweep=False)
    if device:
        opts["device"] = device
    elif not torch.cuda.is_available():
        opts["device"] = "cpu"
    options = RunOptions(**opts)
    task_cls = get_task_class(saved["task"])
    task = task_cls(load_config(task_cls.config_class, base=saved["task_config"]), options.data_root)
    task.skip_bad_audio = options.skip_bad_audio
    task.check_data()
    upstream = build_upstream(options.upstream, checkpoint=getattr(options, "upstream_ckpt", None),
                              random_init=getattr(options, "random_init", False),
                              trust_pickle=getattr(options, "trust_pickle", False)).to(options.device)
    upstream.eval()
    up_hash = weights_hash(upstream)
    if up_hash != saved["upstream_hash"]:
        raise RunFolderError(f"{run_dir}: trained on upstream {options.upstream!r} with weights hash "
                             f"{saved['upstream_hash'][:16]}, but {options.upstream!r} now has {up_hash[:16]} "
                             "(retrained or replaced); its head does not fit these features")
    upstream.requires_grad_(False)
    parts = open_run(task, upstream, options, work_dir or run_dir, up_hash)
    task.setup(upstream.downsample_rate)
    task.load_split("train")  # some tasks learn their class list from the train records (SID, SF, ASV, custom)
    model = build_downstream(task, parts.shape, options.seed, options.device)
    weights = load_checkpoint(best)
    model.load_state_dict(weights["model"])
    if "upstream" in weights:  # a fine-tuned upstream (--upstream-trainable) is part of the best checkpoint
        upstream.load_state_dict(weights["upstream"])
    model.eval()
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    dev = parts.splits.load("dev")
    # dev-only post-selection on the best checkpoint's dev predictions, as the run did before scoring (SD)
    selected = task.tune_on_dev(dev, parts.evaluator.predict(model, dev))
    return LoadedRun(run_dir, task, parts, model, saved, summary, selected)


# ---------------------------------------------------------------- predict
def predict_files(run: LoadedRun, paths: Sequence[str | Path]) -> list[dict]:
    """One record per audio file: ``{"path", "prediction", ...details}`` in the order of ``paths``.

    ``prediction`` is exactly what the task writes into ``predictions/<split>.jsonl`` (class, transcript, slots,
    ASV embedding, SD posteriors ``[frame, speaker]``); details add class probabilities where the task has them.
    Unreadable files raise :class:`common.audio.AudioError` (or are skipped with the run's --skip-bad-audio).
    """
    task, model = run.task, run.model
    for p in paths:
        if not Path(p).is_file():
            raise RunFolderError(f"audio file {p} not found")
    # each file as the task's loaders would make it (its sox chain; SD: its chunks), predicted, joined per file
    per_file = [task.file_records(Path(p)) for p in paths]
    utts = run.parts.prep.ensure([u for recs in per_file for u in recs])
    kept = {u.id for u in utts}
    source = run.parts.sources.for_run()  # the run's own feature source (cache or live upstream, its --layer)
    by_id: dict[str, tuple[Any, dict]] = {}
    with torch.no_grad():
        for idx in eval_batches([u.duration for u in utts], task.config.batch.eval_max_seconds):
            fb = source.batch([utts[i] for i in idx])
            output = model(fb.hidden, fb.lengths)
            preds = task.predict(output, fb.lengths, fb.utts)
            details = task.prediction_details(output, fb.lengths, fb.utts)
            for i, p, d in zip(idx, preds, details):
                by_id[utts[i].id] = (p, d)
    out: list[dict[str, Any]] = []
    for path, recs in zip(paths, per_file):
        recs = [u for u in recs if u.id in kept]  # --skip-bad-audio leaves unreadable files out
        if not recs:
            continue
        preds = [by_id[u.id][0] for u in recs]
        out.append({"path": str(path), "prediction": task.join_file_predictions(recs, preds),
                    **(by_id[recs[0].id][1] if len(recs) == 1 else {})})
    if hasattr(task, "rttm"):  # SD: diarization as RTTM, recordings named by file stem
        for rec in out:
            whole = Utterance(id=_uri(Path(rec["path"])), path=Path(rec["path"]), duration=0.0)
            rec["rttm"] = task.rttm([whole], [rec["prediction"]])
    return out


def _uri(path: Path) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in path.stem) or "recording"


def format_prediction(rec: dict) -> str:
    """One human-readable line per file for the terminal."""
    p = rec["prediction"]
    if "rttm" in rec:
        return f"{rec['path']}\t{len(rec['rttm'])} speaker turns (RTTM)"
    if "probabilities" in rec and isinstance(p, str):
        return f"{rec['path']}\t{p}\t(p={rec['probabilities'].get(p, float('nan')):.3f})"
    if isinstance(p, list) and p and isinstance(p[0], float):
        return f"{rec['path']}\tembedding [{len(p)}]"
    return f"{rec['path']}\t{json.dumps(p, default=str)}"


# ---------------------------------------------------------------- evaluate
def evaluate_run(run_dir: str | Path, splits: Sequence[str], device: str | None = None) -> dict:
    """Re-score the run's best checkpoint on ``splits`` and append rows marked as re-evaluations.

    Rows go to the results table the run wrote to (``<results>/<upstream>/<task>/<run-id>`` -> ``<results>``) with
    ``run_id`` = ``<run-id>:reeval-<UTC time>``; predictions (and SD's RTTM) go to
    ``<run>/reevaluations/<UTC time>/``, so the run's own files are kept.
    """
    t0 = time.time()
    run_dir = Path(run_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = run_dir / "reevaluations" / stamp
    run = load_run(run_dir, device, work_dir=work)
    metrics, files = {}, {}
    try:
        for split in splits:
            utts = run.parts.splits.load(split)
            predictions = run.parts.evaluator.predict(run.model, utts)
            metrics[split] = run.parts.evaluator.score(split, utts, predictions)
            files.update(run.task.prediction_files(split, utts, predictions))
    finally:
        run.parts.scalars.close()
    for rel, text in files.items():  # the task's prediction files (predictions/<split>.jsonl, SD's RTTM)
        atomic_write_text(work / rel, text)
    saved, summary = run.saved, run.summary
    results_dir = run_dir.parents[2]
    label = run_dir.parents[1].name
    stats_path = results_dir / label / "upstream_stats.json"
    params = json.loads(stats_path.read_text()).get("params", 0) if stats_path.is_file() else 0
    options = saved["options"]
    info = results.RunInfo(label, params, saved["upstream_hash"][:16], run_dir.parent.name, options.get("seed", 0),
                           saved.get("config_hash", ""), f"{run_dir.name}:reeval-{stamp}", run.task.fold(),
                           run.parts.shape.layer,
                           results.protocol_name(run.parts.shape.layer, bool(options.get("upstream_trainable"))),
                           bool(getattr(run.parts.upstream, "random_init", False)), len(run.parts.prep.bad_audio))
    text = results.format_rows(info, metrics, int(summary.get("steps", 0)), time.time() - t0, summary.get("lr"),
                               run.model.weighted_sum.layer_weights())
    csv_path = results.append_rows(results_dir, text)
    out = {"run_dir": str(run_dir), "metrics": metrics, "selected": run.selected, "results_csv": str(csv_path),
           "folder": str(work)}
    atomic_write_text(work / "summary.json", json.dumps(out, indent=2))
    return out
