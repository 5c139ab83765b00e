"""One benchmark run: build the task and the frozen upstream, train the head (weighted sum + task head) on cached
features, select on dev, test, write the task's files, and append the results rows.

Control flows one way: the engine calls the task's methods with data (``tasks/base.py``) and gets data back; the
run's result is a :class:`tasks.base.RunOutcome` value. The engine's per-run state is a record of single-purpose parts
(:class:`RunParts`: the upstream's shape, feature preparation, the splits, feature sources, the evaluator,
TensorBoard scalars); a task that replaces the procedure (QbE) sees only :class:`SplitFeatures`.

Under ``torchrun --nproc_per_node N run_benchmark.py ...`` (process group: ``common/distributed.py``) every rank
builds the same task, upstream and batches; the feature cache is filled with each rank extracting its share of the
missing utterances; each global training batch (``batch.max_seconds``, the same whatever N) is split across ranks
and the per-rank losses are weighted by their share of the batch, so the averaged gradient equals the 1-process
gradient of the whole batch; rank 0 alone writes checkpoints, predictions, TensorBoard logs and results rows.
Dev/test evaluation runs whole on every rank (the same weights give the same metric), so only training and
extraction are split.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
import yaml
from torch import nn

from common import distributed
from common.config import to_dict
from common.io import atomic_write_text
from common.precision import check_precision
from common.utterance import Utterance
from tasks.base import SPLITS, DatasetAudit, DatasetError, FeatureBatch, RunOutcome, Task
from tasks.registry import build_task
from upstream import build_upstream

from . import results
from .batching import eval_batches
from .cache import default_cache_dir, weights_hash
from .evaluation import Evaluator
from .features import HeldArrays
from .model import DownstreamModel, UpstreamShape, build_downstream, probe_upstream
from .run_data import FeaturePrep, FeatureSources, RunSplits, open_cache
from .trainer import ScalarLog, TrainOutcome, train
from .upstream_stats import stats_path, write_upstream_stats

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """Everything the command line decides about one run (the task's own numbers live in its config)."""

    upstream: str
    task: str
    data_root: Path
    upstream_ckpt: Path | None = None  # weights of a pretrained name (--upstream-ckpt)
    random_init: bool = False  # a pretrained name's architecture with random weights (--random-init)
    trust_pickle: bool = False  # full unpickle of a trusted legacy checkpoint (--trust-pickle)
    results_dir: Path = Path("results")
    seed: int = 0
    max_steps: int | None = None
    resume: bool = False
    layer: int | None = None
    upstream_trainable: bool = False
    lr_sweep: bool = False
    cache: str = "auto"  # --cache auto|on|off (benchmark/cache_plan.py); --no-cache is off
    cache_dir: Path | None = None
    cache_max_gb: float | None = None  # what the run may write to the cache (default: 80% of its free space)
    skip_bad_audio: bool = False
    overrides: list[str] = field(default_factory=list)
    profile: str | None = None
    fold: int | None = None
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    feature_ram_gb: float = 2.0  # cached features kept in RAM during the run (see benchmark.features.HeldArrays)
    precision: str = "fp32"  # autocast of training steps (common/precision.py); extraction and evaluation stay fp32


@dataclass(frozen=True)
class RunParts:
    """The parts of one run, each doing one job, built by :func:`open_run` (a record: it does nothing itself)."""

    task: Task
    upstream: nn.Module
    options: RunOptions
    run_dir: Path
    shape: UpstreamShape  # the upstream's hidden states, width and --layer
    prep: FeaturePrep  # features extracted (or audio checked) before use; the skipped bad audio
    splits: RunSplits  # the task's splits as the run uses them
    sources: FeatureSources  # cache or live upstream
    evaluator: Evaluator  # predictions and metrics on a split
    scalars: ScalarLog  # TensorBoard


def open_run(task: Task, upstream: nn.Module, options: RunOptions, run_dir: Path, upstream_hash: str,
             loaded: dict[str, list[Utterance]] | None = None) -> RunParts:
    """The parts of a run of ``task`` on ``upstream`` writing to ``run_dir`` (``loaded``: the splits the dataset audit
    already read). Probes the upstream's shape with one forward; raises ValueError for an out-of-range ``--layer``."""
    shape = probe_upstream(upstream, options.layer)
    cache = open_cache("off" if options.upstream_trainable else options.cache,
                       Path(options.cache_dir or default_cache_dir()), upstream, upstream_hash, str(options.upstream),
                       shape.layer, options.cache_max_gb, task, loaded)
    held = HeldArrays(int(options.feature_ram_gb * 2**30))
    prep = FeaturePrep(upstream, cache, task.config.batch.eval_max_seconds, options.skip_bad_audio, run_dir)
    splits = RunSplits(task, prep, loaded)
    sources = FeatureSources(upstream, cache, shape, held)
    return RunParts(task, upstream, options, run_dir, shape, prep, splits, sources,
                    Evaluator(task, upstream, sources, splits), ScalarLog(run_dir))


@dataclass
class SplitFeatures:
    """The :class:`tasks.base.LayerFeatures` a task that replaces training (QbE) gets: records and one layer's
    feature batches, nothing else of the engine."""

    splits: RunSplits
    prep: FeaturePrep
    sources: FeatureSources
    max_seconds: float  # audio per evaluation batch
    layers: list[int]

    def split(self, name: str) -> list[Utterance]:
        return self.splits.load(name)

    def features(self, utts: Sequence[Utterance], layer: int) -> Iterator[FeatureBatch]:
        """Evaluation batches of hidden state ``layer``, longest first, no gradients."""
        utts = self.prep.ensure(utts)
        source = self.sources.for_layer(layer)
        for idx in eval_batches([u.duration for u in utts], self.max_seconds):
            with torch.no_grad():
                yield source.batch([utts[i] for i in idx])


# ---------------------------------------------------------------- procedures
def _train(parts: RunParts, model: nn.Module, lr: float, max_steps: int, ckpt_dir: Path) -> TrainOutcome:
    o = parts.options
    return train(parts.task, model, parts.splits, parts.sources, parts.evaluator, parts.scalars, lr, max_steps,
                 ckpt_dir, seed=o.seed, precision=o.precision, device=o.device,
                 upstream=parts.upstream if o.upstream_trainable else None, resume=o.resume)


def train_and_test(parts: RunParts, lr: float) -> tuple[RunOutcome, DownstreamModel]:
    """Default procedure: train with best-on-dev selection, the task's dev post-selection, then dev and test.

    Dev predictions of the selected model are computed once and serve both the post-selection and the dev
    metrics; the task's prediction files of the final dev and test evaluations are returned for the engine to
    write. Returns the outcome and the trained downstream model (best-on-dev weights).
    """
    task, splits, evaluator = parts.task, parts.splits, parts.evaluator
    model = build_downstream(task, parts.shape, parts.options.seed, parts.options.device)
    trained = _train(parts, model, lr, task.config.train.max_steps, parts.run_dir / "checkpoints")
    predictions = {"dev": evaluator.predict(model, splits.load("dev"))}
    selected = task.tune_on_dev(splits.load("dev"), predictions["dev"])
    predictions["test"] = evaluator.predict(model, splits.load("test"))
    metrics, files = {}, {}
    for split in ("dev", "test"):
        utts = splits.load(split)
        metrics[split] = evaluator.score(split, utts, predictions[split])
        files.update(task.prediction_files(split, utts, predictions[split]))
    return RunOutcome(metrics, selected, files, trained.steps, model.weighted_sum.layer_weights()), model


def sweep_lr(parts: RunParts) -> float:
    """``--lr-sweep``: a short training run per learning rate of ``sweep.grid``; the best on dev wins."""
    task = parts.task
    sweep = task.config.sweep
    steps = min(sweep.steps, task.config.train.max_steps)
    scores = {}
    for lr in sweep.grid:
        model = build_downstream(task, parts.shape, parts.options.seed, parts.options.device)
        outcome = _train(parts, model, lr, steps, parts.run_dir / "sweep" / f"lr{lr:g}")
        scores[lr] = outcome.best_dev
        log.info("lr %g: dev %s = %s", lr, task.primary_metric, outcome.best_dev)
    valid = {lr: s for lr, s in scores.items() if s is not None and math.isfinite(s)}
    best = max(valid, key=lambda lr: valid[lr] if task.higher_is_better else -valid[lr])
    if distributed.is_main():
        atomic_write_text(parts.run_dir / "lr_sweep.json", json.dumps(
            {"metric": task.primary_metric, "steps": steps, "dev": {f"{k:g}": v for k, v in scores.items()},
             "chosen_lr": best}, indent=2))
    return best


def audit_dataset(task: Task) -> DatasetAudit:
    """``task.audit()`` before anything else happens: every problem found is raised at once as a
    :class:`DatasetError` (one line each); the records the protocol drops on purpose are logged per split."""
    audit = task.audit()
    for line in audit.dropped_lines():
        log.info("task %s: %s", task.name, line)
    for line in audit.warnings:
        log.warning("task %s: %s", task.name, line)
    if audit.problems:
        raise DatasetError(f"task {task.name!r}: {len(audit.problems)} problem(s) in the dataset under "
                           f"{task.data_root}:\n  " + "\n  ".join(audit.problems))
    return audit


def prepare_fine_tuning(upstream: nn.Module, freeze_front_end: bool) -> None:
    """``--upstream-trainable``: gradients flow through the upstream and, for upstreams with a fine-tuning mode
    (HuBERT-family, transformers), ``train()`` enables their dropout and the CNN front end stays frozen unless
    ``upstream_optimizer.freeze_front_end=false`` (``--unfreeze-front-end``). Other upstreams with weights (plug-ins)
    train every weight. Raises ValueError for an upstream without weights."""
    if not any(True for _ in upstream.parameters()):
        raise ValueError(f"--upstream-trainable: upstream {type(upstream).__name__} has no weights to train")
    upstream.requires_grad_(True)
    if hasattr(upstream, "fine_tune"):
        upstream.fine_tune = True
    if freeze_front_end and hasattr(upstream, "freeze_front_end"):
        upstream.freeze_front_end(True)


def save_fine_tuned(task: Task, upstream: nn.Module, shape: UpstreamShape, model: nn.Module | None,
                    run_dir: Path) -> None:
    """Write the fine-tuned upstream (best-on-dev weights) in our format to ``run_dir/upstream``, and let the task
    export a self-contained transformers model when it can (ASR: ``HubertForCTC`` in ``run_dir/transformers_ctc``)."""
    from upstream.checkpoints import save_upstream
    from upstream.hf_families import TransformersUpstream
    from upstream.hubert import HubertUpstream

    if not isinstance(upstream, (HubertUpstream, TransformersUpstream)):
        log.info("fine-tuned %s not saved: our format holds HuBERT-family and transformers upstreams",
                 type(upstream).__name__)
        return
    save_upstream(upstream, run_dir / "upstream")
    log.info("fine-tuned upstream written to %s (build_upstream loads it)", run_dir / "upstream")
    export = getattr(task, "export_fine_tuned", None)
    if export is not None and model is not None:
        export(upstream, model, shape.layer, shape.num_layers, run_dir / "transformers_ctc")


def run_task(options: RunOptions) -> dict:
    """Run one (upstream, task[, fold]) and append its rows; returns a summary dict (also saved as summary.json)."""
    t0 = time.time()
    overrides = list(options.overrides)
    if options.fold is not None:
        overrides.append(f"data.fold={options.fold}")
    if options.max_steps is not None:
        if options.max_steps <= 0:
            raise ValueError(f"--max-steps must be a positive number of updates, got {options.max_steps}")
        overrides.append(f"train.max_steps={options.max_steps}")
    check_precision(options.precision, options.device)
    task = build_task(options.task, options.data_root, overrides, options.profile)
    task.skip_bad_audio = options.skip_bad_audio
    if task.config.train.max_steps <= 0:
        raise ValueError(f"task {options.task!r}: train.max_steps must be a positive number of updates, got "
                         f"{task.config.train.max_steps}")
    task.check_data()
    audit = audit_dataset(task)  # every split's records are read and checked before anything is built or trained
    upstream = build_upstream(options.upstream, checkpoint=options.upstream_ckpt, random_init=options.random_init,
                              trust_pickle=options.trust_pickle).to(options.device)
    upstream.eval()
    upstream.requires_grad_(options.upstream_trainable)
    task_config = to_dict(task.config)
    if options.upstream_trainable:
        prepare_fine_tuning(upstream, task.config.upstream_optimizer.freeze_front_end)
    else:  # unused when frozen: left out of the identity, so frozen runs keep the run folders they had
        task_config.pop("upstream_optimizer", None)
    up_hash = weights_hash(upstream)
    label = results.safe_name(options.upstream)
    identity = {"task": options.task, "task_config": task_config, "upstream_hash": up_hash,
                "layer": options.layer, "upstream_trainable": options.upstream_trainable,
                "lr_sweep": options.lr_sweep, "data_root": str(Path(options.data_root).resolve())}
    fingerprint = task.data_fingerprint()
    if fingerprint is not None:  # a manifest's content: an edited manifest is another run
        identity["data_fingerprint"] = fingerprint
    task_label = task.row_label()
    if options.precision != "fp32":  # only then, so fp32 runs keep the identity (and run folders) they had
        identity["precision"] = options.precision
    chash = results.config_hash(identity)
    fold = task.fold()
    run_id = f"{chash[:8]}-s{options.seed}" + (f"-fold{fold}" if fold is not None else "")
    if options.upstream_trainable and distributed.world() > 1:
        raise ValueError("--upstream-trainable under torchrun is not supported (DDP trains the task head only); "
                         "fine-tune in one process")
    main = distributed.is_main()
    # rank 0 picks the run folder (it depends on what exists) and tells the others
    run_dir = distributed.broadcast(results.run_dir_for(Path(options.results_dir), label, task_label, run_id,
                                                        options.resume))
    if distributed.broadcast((run_dir / "DONE").exists()):
        log.warning("run %s already finished; nothing to resume", run_dir)
        return json.loads((run_dir / "summary.json").read_text())
    if options.resume and main and not run_dir.exists():
        log.warning("--resume: %s", results.why_new_run(run_dir, identity, options.seed, fold))
    created = not run_dir.exists()
    stats = {"params": sum(p.numel() for p in upstream.parameters())}
    try:  # until training starts, a failure removes the run folder it created (no half-made run, no "-2" next)
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            opts = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
            atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(
                {"options": opts, "config_hash": chash, **identity,
                 **({"world_size": distributed.world()} if distributed.world() > 1 else {})}, sort_keys=False))
            stats = write_upstream_stats(stats_path(Path(options.results_dir), label, up_hash), upstream, up_hash)
        distributed.barrier()
        parts = open_run(task, upstream, options, run_dir, up_hash, audit.splits)
        task.setup(upstream.downsample_rate)
        parts.splits.prepare()
    except BaseException:
        if created and main:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    lr = task.config.optimizer.lr
    try:
        if options.lr_sweep:
            lr = sweep_lr(parts)
        shape = parts.shape
        layers = [shape.layer] if shape.layer is not None else list(range(shape.num_layers))
        features = SplitFeatures(parts.splits, parts.prep, parts.sources, task.config.batch.eval_max_seconds, layers)
        outcome, model = task.run(features), None
        if outcome is None:
            outcome, model = train_and_test(parts, lr)
    finally:
        parts.scalars.close()
    if options.upstream_trainable:
        save_fine_tuned(task, upstream, parts.shape, model, run_dir)
    unknown = set(outcome.metrics) - set(SPLITS)
    if unknown:
        raise ValueError(f"task {task.name!r}: run() returned unknown split(s) {sorted(unknown)}")
    wall = time.time() - t0
    if not main:  # rank 0 writes the files, rows, summary and DONE marker
        distributed.barrier()
        return {"run_dir": str(run_dir), "metrics": outcome.metrics, "selected": outcome.selected, "lr": lr,
                "steps": outcome.steps, "wall_time_s": wall, "layer_weights": outcome.layer_weights,
                "skipped_audio": len(parts.prep.bad_audio), "rank": distributed.rank()}
    for rel, text in outcome.files.items():
        atomic_write_text(run_dir / rel, text)
    info = results.RunInfo(label, stats["params"], up_hash[:16], task_label, options.seed, chash,
                           run_dir.name, fold, parts.shape.layer,
                           results.protocol_name(parts.shape.layer, options.upstream_trainable),
                           bool(getattr(upstream, "random_init", False)), len(parts.prep.bad_audio))
    text = results.format_rows(info, outcome.metrics, outcome.steps, wall, lr, outcome.layer_weights)
    csv_path = results.append_rows(Path(options.results_dir), text)
    summary = {"run_dir": str(run_dir), "metrics": outcome.metrics, "selected": outcome.selected, "lr": lr,
               "steps": outcome.steps, "wall_time_s": wall, "layer_weights": outcome.layer_weights,
               "skipped_audio": len(parts.prep.bad_audio), "results_csv": str(csv_path)}
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(run_dir / "DONE", "")
    distributed.barrier()
    return summary
