"""One benchmark run: build the task and the frozen upstream, train the head (weighted sum + task head) on cached
features, select on dev, test, write the task's files, and append the results rows.

Control flows one way: the engine calls the task's methods with data (``tasks/base.py``) and gets data back; the
run's result is a :class:`tasks.base.RunOutcome` value. :class:`RunContext` is the engine's own per-run state;
a task that replaces the procedure (QbE) sees only :class:`SplitFeatures`.
"""
from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import yaml
from torch import nn

from common.audio import SAMPLE_RATE, AudioError, check_audio_file, require_samples
from common.config import to_dict
from common.io import atomic_write_text
from common.precision import check_precision
from common.tensors import module_device
from common.utterance import Utterance, load_utterance_audio
from downstream.weighted_sum import WeightedSum
from tasks.base import SPLITS, DatasetAudit, DatasetError, FeatureBatch, RunOutcome, Task
from tasks.registry import build_task
from upstream import build_upstream

from . import distributed, results
from .batching import eval_batches
from .cache import FeatureCache, default_cache_dir, upstream_min_samples, weights_hash
from .features import CachedFeatures, HeldArrays, LiveFeatures
from .trainer import train
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
    use_cache: bool = True
    cache_dir: Path | None = None
    skip_bad_audio: bool = False
    overrides: list[str] = field(default_factory=list)
    profile: str | None = None
    fold: int | None = None
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    feature_ram_gb: float = 2.0  # cached features kept in RAM during the run (see benchmark.features.HeldArrays)
    precision: str = "fp32"  # autocast of training steps (common/precision.py); extraction and evaluation stay fp32


class DownstreamModel(nn.Module):
    """Weighted sum over layers, then the task head: ``[layer, batch, frame, feature] -> head output``."""

    def __init__(self, num_layers: int, head: nn.Module, layer: int | None = None,
                 augment: nn.Module | None = None):
        super().__init__()
        self.weighted_sum = WeightedSum(num_layers, layer)
        self.augment = augment  # e.g. SpecAugment on the weighted sum (ASR, SF); active in training mode only
        self.head = head

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> Any:
        device = module_device(self.head)
        features = self.weighted_sum(hidden.to(device))
        if self.augment is not None:
            features = self.augment(features)
        return self.head(features, lengths.to(device))


class RunContext:
    """The engine's own state during one run (tasks never see it): the task's splits with bad-audio handling, the
    feature sources (cache or live upstream), building the downstream model, prediction, scoring and TensorBoard."""

    def __init__(self, task: Task, upstream: nn.Module, options: RunOptions, run_dir: Path, upstream_hash: str,
                 loaded: dict[str, list[Utterance]] | None = None):
        self.task, self.upstream, self.options, self.run_dir = task, upstream, options, run_dir
        self._loaded = dict(loaded or {})  # splits the dataset audit already read
        self.is_main = distributed.is_main()  # under torchrun, rank 0 alone writes files (benchmark/distributed.py)
        self.bad_audio: dict[str, str] = {}
        self._splits: dict[str, list[Utterance]] = {}
        self._writer = None
        use_cache = options.use_cache and not options.upstream_trainable
        self.cache = (FeatureCache(options.cache_dir or default_cache_dir(), upstream_hash, str(options.upstream))
                      if use_cache else None)
        self.held = HeldArrays(int(options.feature_ram_gb * 2**30))
        with torch.inference_mode():
            probe = upstream([torch.zeros(SAMPLE_RATE, device=module_device(upstream))])
        self.num_layers = len(probe.hidden_states)
        self.feature_dim = int(probe.hidden_states[0].shape[-1])
        self.layer = None if options.layer is None else WeightedSum(self.num_layers, options.layer).layer

    # ------------------------------------------------------------ data
    def load_split(self, split: str) -> list[Utterance]:
        """The split's utterances (cached per run); unreadable audio raises, or is skipped with --skip-bad-audio."""
        task = self.task
        if split not in self._splits:
            utts = self._loaded.pop(split) if split in self._loaded else task.load_split(split)
            if not utts:
                raise ValueError(f"task {task.name!r}: split {split!r} is empty under {task.data_root}")
            limit = task.config.train.max_utterances
            if split == "train" and 0 < limit < len(utts):
                # a fixed seed, so every upstream trains on the same subset (kept in the split's order)
                utts = [utts[i] for i in sorted(random.Random(0).sample(range(len(utts)), limit))]
            self._splits[split] = self.ensure_cached(utts)
        return self._splits[split]

    def prepare(self) -> None:
        """Before training: extract every split's features into the cache (without a cache: the cheap audio checks
        of :meth:`ensure_cached`), so unreadable audio in dev or test stops the run now, not hours later."""
        for split in SPLITS:
            if self._loaded.get(split):
                self.load_split(split)

    def ensure_cached(self, utts: Sequence[Utterance]) -> list[Utterance]:
        """Extract missing features into the cache; returns ``utts`` minus skipped bad audio."""
        on_bad = self._record_bad if self.options.skip_bad_audio else None
        if self.cache is not None and distributed.world() > 1:
            # each rank extracts its share of the missing utterances; then every rank knows every skipped file
            missing = self.cache.missing(utts, on_bad)
            distributed.barrier()  # every rank lists the same missing utterances before any rank extracts
            done = self.cache.ensure(distributed.shard(missing), self.upstream,
                                     self.task.config.batch.eval_max_seconds, on_bad)
            log.info("rank %d of %d: extracted %d features", distributed.rank(), distributed.world(), done)
            for bad in distributed.all_gather(dict(self.bad_audio)):
                self.bad_audio.update(bad)
        elif self.cache is not None:
            self.cache.ensure(utts, self.upstream, self.task.config.batch.eval_max_seconds, on_bad)
        elif on_bad is not None:
            min_samples = upstream_min_samples(self.upstream)
            for u in utts:
                if u.id not in self.bad_audio:
                    try:
                        require_samples(load_utterance_audio(u), min_samples, u.path, u.id)
                    except AudioError as e:
                        on_bad(u, e)
        else:  # no cache, nothing skipped: at least the cheap checks (file type, header length) before training
            min_samples = upstream_min_samples(self.upstream)
            for u in utts:
                check_audio_file(u.path)
                if 0 < u.duration * SAMPLE_RATE < min_samples:
                    require_samples(torch.zeros(int(u.duration * SAMPLE_RATE)), min_samples, u.path, u.id)
        return [u for u in utts if u.id not in self.bad_audio]

    def _record_bad(self, utt: Utterance, error: Exception) -> None:
        self.bad_audio[utt.id] = str(error)
        log.warning("skipping %s: %s", utt.id, error)
        if self.is_main:
            atomic_write_text(self.run_dir / "skipped_audio.json", json.dumps(self.bad_audio, indent=2))

    def _source(self, trainable: bool = False) -> CachedFeatures | LiveFeatures:
        if self.cache is not None:
            return CachedFeatures(self.cache, self.upstream.downsample_rate, self.layer, self.held)
        return LiveFeatures(self.upstream, self.layer, trainable)

    def train_source(self) -> CachedFeatures | LiveFeatures:
        return self._source(trainable=self.options.upstream_trainable)

    def features(self, utts: Sequence[Utterance], layer: int | None = None,
                 max_seconds: float | None = None) -> Iterator[FeatureBatch]:
        """Evaluation batches of hidden states (all layers, or ``layer``), longest first, no gradients."""
        utts = self.ensure_cached(utts)
        if self.cache is not None:
            source = CachedFeatures(self.cache, self.upstream.downsample_rate,
                                    None if layer is None else layer % self.num_layers, self.held)
        else:
            source = LiveFeatures(self.upstream, None if layer is None else layer % self.num_layers)
        for idx in eval_batches([u.duration for u in utts], max_seconds or self.task.config.batch.eval_max_seconds):
            with torch.no_grad():
                yield source.batch([utts[i] for i in idx])

    # ------------------------------------------------------------ model
    def build_model(self) -> DownstreamModel:
        torch.manual_seed(self.options.seed)
        model = DownstreamModel(self.num_layers, self.task.build_head(self.feature_dim), self.layer,
                                self.task.build_augment())
        return model.to(self.options.device)

    def predict(self, model: nn.Module, utts: Sequence[Utterance]) -> list[Any]:
        """``task.predict`` output per utterance, in the order of ``utts``."""
        model.eval()
        self.upstream.eval()
        source = self._source()
        out: list[Any] = [None] * len(utts)
        with torch.no_grad():
            for idx in eval_batches([u.duration for u in utts], self.task.config.batch.eval_max_seconds):
                fb = source.batch([utts[i] for i in idx])
                preds = self.task.predict(model(fb.hidden, fb.lengths), fb.lengths, fb.utts)
                for i, p in zip(idx, preds):
                    out[i] = p
        return out

    def score(self, split: str, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, float]:
        """``task.score``, checked to hold the task's primary metric."""
        with torch.no_grad():
            metrics = self.task.score(split, utts, predictions)
        if self.task.primary_metric not in metrics:
            raise KeyError(f"task {self.task.name!r}: score() returned {sorted(metrics)}, "
                           f"missing its primary metric {self.task.primary_metric!r}")
        return metrics

    def evaluate_split(self, model: nn.Module, split: str) -> dict[str, float]:
        """Metrics of ``model`` on ``split`` (dev evaluations during training)."""
        utts = self.load_split(split)
        return self.score(split, utts, self.predict(model, utts))

    def log_scalar(self, name: str, value: float, step: int) -> None:
        if not self.is_main:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        self._writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


@dataclass
class SplitFeatures:
    """The :class:`tasks.base.LayerFeatures` a task that replaces training (QbE) gets: records and one layer's
    feature batches, nothing else of the engine."""

    ctx: RunContext
    layers: list[int]

    def split(self, name: str) -> list[Utterance]:
        return self.ctx.load_split(name)

    def features(self, utts: Sequence[Utterance], layer: int) -> Iterator[FeatureBatch]:
        return self.ctx.features(utts, layer=layer)


# ---------------------------------------------------------------- procedures
def train_and_test(ctx: RunContext, lr: float) -> tuple[RunOutcome, DownstreamModel]:
    """Default procedure: train with best-on-dev selection, the task's dev post-selection, then dev and test.

    Dev predictions of the selected model are computed once and serve both the post-selection and the dev
    metrics; the task's prediction files of the final dev and test evaluations are returned for the engine to
    write. Returns the outcome and the trained downstream model (best-on-dev weights).
    """
    task = ctx.task
    model = ctx.build_model()
    trained = train(ctx, task, model, lr, task.config.train.max_steps, ctx.run_dir / "checkpoints",
                    resume=ctx.options.resume)
    predictions = {"dev": ctx.predict(model, ctx.load_split("dev"))}
    selected = task.tune_on_dev(ctx.load_split("dev"), predictions["dev"])
    predictions["test"] = ctx.predict(model, ctx.load_split("test"))
    metrics, files = {}, {}
    for split in ("dev", "test"):
        utts = ctx.load_split(split)
        metrics[split] = ctx.score(split, utts, predictions[split])
        files.update(task.prediction_files(split, utts, predictions[split]))
    return RunOutcome(metrics, selected, files, trained.steps, model.weighted_sum.layer_weights()), model


def sweep_lr(ctx: RunContext) -> float:
    """``--lr-sweep``: a short training run per learning rate of ``sweep.grid``; the best on dev wins."""
    task = ctx.task
    sweep = task.config.sweep
    steps = min(sweep.steps, task.config.train.max_steps)
    scores = {}
    for lr in sweep.grid:
        model = ctx.build_model()
        outcome = train(ctx, task, model, lr, steps, ctx.run_dir / "sweep" / f"lr{lr:g}", resume=ctx.options.resume)
        scores[lr] = outcome.best_dev
        log.info("lr %g: dev %s = %s", lr, task.primary_metric, outcome.best_dev)
    valid = {lr: s for lr, s in scores.items() if s is not None and math.isfinite(s)}
    best = max(valid, key=lambda lr: valid[lr] if task.higher_is_better else -valid[lr])
    if ctx.is_main:
        atomic_write_text(ctx.run_dir / "lr_sweep.json", json.dumps(
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


def save_fine_tuned(task: Task, ctx: RunContext, model: nn.Module | None, run_dir: Path) -> None:
    """Write the fine-tuned upstream (best-on-dev weights) in our format to ``run_dir/upstream``, and let the task
    export a self-contained transformers model when it can (ASR: ``HubertForCTC`` in ``run_dir/transformers_ctc``)."""
    from upstream.checkpoints import save_upstream
    from upstream.hf_families import TransformersUpstream
    from upstream.hubert import HubertUpstream

    if not isinstance(ctx.upstream, (HubertUpstream, TransformersUpstream)):
        log.info("fine-tuned %s not saved: our format holds HuBERT-family and transformers upstreams",
                 type(ctx.upstream).__name__)
        return
    save_upstream(ctx.upstream, run_dir / "upstream")
    log.info("fine-tuned upstream written to %s (build_upstream loads it)", run_dir / "upstream")
    export = getattr(task, "export_fine_tuned", None)
    if export is not None and model is not None:
        export(ctx.upstream, model, ctx.layer, ctx.num_layers, run_dir / "transformers_ctc")


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
        ctx = RunContext(task, upstream, options, run_dir, up_hash, audit.splits)
        task.setup(upstream.downsample_rate)
        ctx.prepare()
    except BaseException:
        if created and main:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    lr = task.config.optimizer.lr
    try:
        if options.lr_sweep:
            lr = sweep_lr(ctx)
        layers = [ctx.layer] if ctx.layer is not None else list(range(ctx.num_layers))
        outcome, model = task.run(SplitFeatures(ctx, layers)), None
        if outcome is None:
            outcome, model = train_and_test(ctx, lr)
    finally:
        ctx.close()
    if options.upstream_trainable:
        save_fine_tuned(task, ctx, model, run_dir)
    unknown = set(outcome.metrics) - set(SPLITS)
    if unknown:
        raise ValueError(f"task {task.name!r}: run() returned unknown split(s) {sorted(unknown)}")
    wall = time.time() - t0
    if not main:  # rank 0 writes the files, rows, summary and DONE marker
        distributed.barrier()
        return {"run_dir": str(run_dir), "metrics": outcome.metrics, "selected": outcome.selected, "lr": lr,
                "steps": outcome.steps, "wall_time_s": wall, "layer_weights": outcome.layer_weights,
                "skipped_audio": len(ctx.bad_audio), "rank": distributed.rank()}
    for rel, text in outcome.files.items():
        atomic_write_text(run_dir / rel, text)
    info = results.RunInfo(label, stats["params"], up_hash[:16], task_label, options.seed, chash,
                           run_dir.name, fold, ctx.layer, results.protocol_name(ctx.layer, options.upstream_trainable),
                           bool(getattr(upstream, "random_init", False)), len(ctx.bad_audio))
    text = results.format_rows(info, outcome.metrics, outcome.steps, wall, lr, outcome.layer_weights)
    csv_path = results.append_rows(Path(options.results_dir), text)
    summary = {"run_dir": str(run_dir), "metrics": outcome.metrics, "selected": outcome.selected, "lr": lr,
               "steps": outcome.steps, "wall_time_s": wall, "layer_weights": outcome.layer_weights,
               "skipped_audio": len(ctx.bad_audio), "results_csv": str(csv_path)}
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(run_dir / "DONE", "")
    distributed.barrier()
    return summary
