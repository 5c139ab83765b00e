"""The Task API: what a SUPERB task supplies to the one benchmark engine.

How to write a task
===================
One file under ``tasks/`` with a class registered by ``@register_task("name")``, plus (optionally) a YAML of
defaults in ``configs/tasks/<name>.yaml``. The engine (``benchmark/engine.py``) supplies everything else: feature
extraction and the feature cache, the softmax weighted sum over layers, batching by seconds, the optimiser, eval on
dev, best-on-dev checkpoint, early stopping, resume, test, and the rows in ``results/results.csv``.

A task turns its dataset's on-disk layout into :class:`Utterance` records (``load_split``) and supplies a head, a loss,
a prediction rule and a metric. The smallest real example (a keyword classifier over mean-pooled features)::

    import torch
    import torch.nn.functional as F
    from downstream.pooled_linear import PooledLinearHead
    from tasks.base import Task, TaskConfig, Utterance, accuracy_percent
    from tasks.registry import register_task

    @register_task("toy_ks")
    class ToyKeywords(Task):
        primary_metric = "accuracy"           # what dev selection and the report use
        dataset_dirs = ("toy_words",)         # folders that must exist under --data-root
        layout_help = "toy_words/<word>/<n>.wav"
        classes = ["yes", "no"]

        def load_split(self, split):          # split in {"train", "dev", "test"}
            folder = self.data_root / "toy_words"
            return [Utterance(id=f"{w}/{p.stem}", path=p, duration=1.0, label=w)
                    for w in self.classes for p in sorted((folder / w).glob(f"{split}_*.wav"))]

        def build_head(self, input_dim):      # features [batch, frame, input_dim] -> logits [batch, classes]
            return PooledLinearHead(input_dim, [len(self.classes)])

        def loss(self, output, lengths, utts):
            target = torch.tensor([self.classes.index(u.label) for u in utts])
            return F.cross_entropy(output[0], target)

        def predict(self, output, lengths, utts):
            return [self.classes[i] for i in output[0].argmax(-1).tolist()]

        def score(self, split, utts, predictions):
            return {"accuracy": accuracy_percent([u.label for u in utts], predictions)}

Control flows one way: the engine calls these methods with data (records, head outputs, predictions) and gets
data back; a task never calls the engine. Hooks for tasks that do not fit the per-utterance mould (all optional):

* ``score(split, utts, predictions)`` sees the whole split, so a metric need not be per utterance (ASV: cosine
  scores of the split's trial list → EER; SD: segments stitched into recordings → DER).
* ``prediction_files(split, utts, predictions)`` — files the engine writes into the run folder after the final
  dev/test evaluation (default: ``predictions/<split>.jsonl``; SD: ``<split>.rttm``).
* ``tune_on_dev(utts, predictions)`` — post-selection on the dev predictions of the best checkpoint, before test
  (SD threshold / median filter); returns the choices, which the run's ``summary.json`` records under
  ``selected``. Never look at test here.
* ``run(features)`` — replace the whole train/test procedure (QbE: no training; DTW over one layer chosen on dev).
  ``features`` is a :class:`LayerFeatures` (the split's records, and feature batches of one hidden layer); the
  task returns a :class:`RunOutcome`.
* Frame-level labels: ``self.downsample_rate`` (samples per upstream frame) is set in ``setup`` before training.
* Folds: put the fold in the task's data config (ER: ``data.fold``) and return it from ``fold()`` so results rows
  and run ids carry it; ``run_benchmark.py --fold K`` sets ``data.fold``.
* Class-balanced sampling: return per-utterance weights from ``train_sampling_weights``.
* ``prediction_details(output, lengths, utts)`` — extra per-utterance detail that ``run_benchmark.py predict``
  prints next to the prediction (classification: class probabilities).
* ``row_label()`` / ``data_fingerprint()`` — the task's name in results rows and run folders, and a hash of data
  definitions outside the config that makes another run (manifest tasks: the manifest's name and content).

Metrics are reported in the units of the SUPERB leaderboard: percentages for accuracies and error rates.
"""
from __future__ import annotations

import abc
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal, Protocol, Sequence

import torch
from torch import nn

from common.utterance import Utterance

SPLITS = ("train", "dev", "test")


@dataclass
class FeatureBatch:
    """Hidden states of a batch of utterances, as the engine hands them to heads and to :meth:`Task.run`.

    hidden: ``[layer, batch, frame, feature]`` float32 (one layer when a layer is fixed); lengths: ``[batch]`` valid
    frames; utts: the records, in batch order.
    """

    hidden: torch.Tensor
    lengths: torch.Tensor
    utts: list[Utterance]


class LayerFeatures(Protocol):
    """What a task that replaces the training procedure (:meth:`Task.run`, QbE) gets from the engine."""

    layers: list[int]  # the hidden states to consider: every one, or the one ``--layer`` fixes

    def split(self, name: str) -> list[Utterance]:
        """The split's records (as ``load_split``), minus audio skipped with ``--skip-bad-audio``."""

    def features(self, utts: Sequence[Utterance], layer: int) -> Iterator[FeatureBatch]:
        """Batches (no gradients) of hidden state ``layer`` of ``utts``: ``hidden`` is ``[1, batch, frame, dim]``."""


@dataclass
class RunOutcome:
    """What one run produced, returned as a value (by the engine's default procedure or by :meth:`Task.run`).

    metrics: ``{split: {metric: value}}`` (each becomes a results row); selected: the choices made on dev
    (``summary.json["selected"]``, e.g. SD threshold, QbE layer); files: run-folder-relative path -> text, written
    by the engine; steps: optimiser updates; layer_weights: the softmax weights of the layer sum (None untrained).
    """

    metrics: dict[str, dict[str, float]]
    selected: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    steps: int = 0
    layer_weights: list[float] | None = None


class DatasetNotFoundError(FileNotFoundError):
    """A task's dataset folder (or a file inside it) is missing; the message says which layout is expected."""


class DatasetError(ValueError):
    """The dataset has problems; the message lists every one found (with file and line where known)."""


@dataclass
class DatasetAudit:
    """What :meth:`Task.audit` found: the loaded splits, the problems (each one line naming the file), and the
    records each split drops on purpose by the task's protocol (split -> reason -> count)."""

    splits: dict[str, list[Utterance]]
    problems: list[str]
    dropped: dict[str, dict[str, int]]
    warnings: list[str] = field(default_factory=list)  # worth saying, not wrong (e.g. a class without train data)

    def dropped_lines(self) -> list[str]:
        return [f"{split}: dropped {n} {reason}" for split, reasons in self.dropped.items()
                for reason, n in sorted(reasons.items())]


# ---------------------------------------------------------------- configs shared by every task (YAML sections)
@dataclass
class OptimizerConfig:
    name: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_steps: int = 0  # linear warm-up, then constant (SUPERB uses a constant lr for most tasks)


@dataclass
class BatchConfig:
    max_seconds: float = 100.0  # total audio seconds per training batch (not an utterance count)
    grad_accum: int = 1
    eval_max_seconds: float = 200.0
    train_crop_seconds: float = 0.0  # > 0: random crop of each training utterance (SID: 8 s)


@dataclass
class TrainConfig:
    max_steps: int = 200000  # optimiser updates
    eval_every: int = 1000  # updates between dev evaluations (and checkpoints)
    log_every: int = 100
    patience: int = 0  # dev evaluations without improvement before stopping; 0 = train to max_steps
    max_utterances: int = 0  # > 0: train on this many utterances (a seeded subset, the same for every upstream)


@dataclass
class SweepConfig:
    """``--lr-sweep``: a short run per learning rate, chosen on dev."""

    grid: list[float] = field(default_factory=lambda: [1e-5, 1e-4, 1e-3, 1e-2])
    steps: int = 1000


@dataclass
class UpstreamOptimizerConfig:
    """The upstream's own optimizer settings with ``--upstream-trainable`` (fine-tuning); unused otherwise.

    Defaults follow transformers' wav2vec2/HuBERT CTC fine-tuning examples: a smaller lr than the head's, a linear
    warm-up, the CNN front end frozen (``freeze_feature_encoder``; ``--unfreeze-front-end`` trains it too).
    """

    lr: float = 5e-5
    warmup_steps: int = 500  # linear warm-up of the upstream's lr, then constant
    weight_decay: float = 0.0
    freeze_front_end: bool = True


@dataclass
class TaskConfig:
    """Every task config has these sections; a task subclasses it to add ``head`` and ``data`` sections."""

    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    upstream_optimizer: UpstreamOptimizerConfig = field(default_factory=UpstreamOptimizerConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


# ---------------------------------------------------------------- the Task API
class Task(abc.ABC):
    """Base class of every benchmark task (see the module docstring for how to write one)."""

    name: ClassVar[str] = ""  # set by @register_task
    config_class: ClassVar[type[TaskConfig]] = TaskConfig
    primary_metric: ClassVar[str] = ""  # dev selection, early stopping and the report use this metric
    higher_is_better: ClassVar[bool] = True
    dataset_dirs: ClassVar[tuple[str, ...]] = ()  # folders expected under the data root
    layout_help: ClassVar[str] = ""  # one line: the expected layout (full spec: docs/DATA_LAYOUTS.md)
    in_suite: ClassVar[bool] = True  # run by `--task all` and the demo (False: needs user data, as `custom`)
    # the dev metric that picks the checkpoint (and --lr-sweep's lr); "" = primary_metric. SD: s3prl keeps the
    # checkpoint of the best dev frame accuracy and reports DER.
    selection_metric: ClassVar[str] = ""
    selection_higher_is_better: ClassVar[bool] = True  # the direction of selection_metric (when it is set)
    # splits whose records depend on the upstream's frame rate (SD: chunks of 2000 label frames): the engine loads
    # them again after setup() instead of reusing the records of the dataset audit
    frame_rate_splits: ClassVar[tuple[str, ...]] = ()
    folds: ClassVar[tuple[int, ...]] = ()  # cross-validation folds `--task all` runs with the full profile (ER)

    def __init__(self, config: TaskConfig, data_root: str | Path):
        if not isinstance(config, self.config_class):
            raise TypeError(f"task {self.name!r} expects a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.data_root = Path(data_root)
        self.downsample_rate: int | None = None
        self.skip_bad_audio = False  # set by the engine from --skip-bad-audio before check_data()

    # -- data
    # splits that must hold records (QbE trains nothing: no train split)
    required_splits: ClassVar[tuple[str, ...]] = SPLITS
    # split pairs that share audio by the protocol (QbE's dev and test search the same documents); any other
    # audio slice found in two splits is train/test leakage and an error
    shared_audio_splits: ClassVar[tuple[tuple[str, str], ...]] = ()
    # split pairs the protocol keeps speaker-disjoint (``Utterance.speaker``): a speaker in both is an error naming
    # the speaker and the files; ``speaker_protocol`` says where the rule comes from
    speaker_disjoint_splits: ClassVar[tuple[tuple[str, str], ...]] = ()
    speaker_protocol: ClassVar[str] = ""

    def count_dropped(self, split: str, reason: str, n: int = 1) -> None:
        """Loaders call this for records the protocol leaves out on purpose (IEMOCAP's ``fru``, ...); the audit
        prints the counts per split."""
        dropped = self.__dict__.setdefault("_dropped", {})
        dropped.setdefault(split, {}).setdefault(reason, 0)
        dropped[split][reason] += n

    def audit(self) -> DatasetAudit:
        """Load every split and check the whole dataset before any training; returns what was found.

        Checks: each split loads (a loader's error — a malformed line, a missing listed file, a 0-byte CSV, text
        that is not UTF-8 — is recorded with its file and line, and the other splits are still checked); required
        splits are not empty; ids are unique within a split; no audio slice is in two splits (leakage), except
        ``shared_audio_splits`` (by content, so a copy under another name is caught: :mod:`tasks.audit`); no speaker
        is on both sides of a ``speaker_disjoint_splits`` pair; plus the task's own :meth:`audit_splits`. Nothing
        raises: the caller decides.
        """
        self.__dict__["_dropped"] = {}
        splits: dict[str, list[Utterance]] = {}
        problems: list[str] = []
        for split in SPLITS:
            try:
                splits[split] = self.load_split(split)
            except (ValueError, FileNotFoundError) as e:  # loaders' errors name the file (and line)
                problems.append(f"{split}: {e}")
                continue
            if not splits[split] and split in self.required_splits:
                problems.append(f"{split}: the split is empty (no records found under {self.data_root})")
            seen: dict[str, int] = {}
            for u in splits[split]:
                seen[u.id] = seen.get(u.id, 0) + 1
            dups = [k for k, n in seen.items() if n > 1]
            if dups:
                problems.append(f"{split}: {len(dups)} id(s) listed more than once (e.g. {', '.join(dups[:3])})")
        from .audit import audio_leaks, speaker_leaks, speakers_of

        problems += audio_leaks(splits, self.shared_audio_splits)  # by content: a copy under another name too
        if self.speaker_disjoint_splits:
            problems += speaker_leaks({s: speakers_of(u) for s, u in splits.items()}, self.speaker_disjoint_splits,
                                      self.speaker_protocol)
        warnings: list[str] = []
        problems += self.audit_splits(splits, warnings)  # the splits that loaded
        return DatasetAudit(splits, problems, dict(self.__dict__.get("_dropped", {})), warnings)

    def superb_comparability(self, dropped: dict[str, dict[str, int]]) -> list[str]:
        """Why this task's run is not SUPERB's procedure although its config is (a file SUPERB used that was not
        given, a fold instead of the 5-fold mean, ...): one short reason each, empty when comparable. ``dropped``:
        the audit's left-out record counts per split and reason. Default: none (docs/PROTOCOL.md)."""
        return []

    def audit_splits(self, splits: dict[str, list[Utterance]], warnings: list[str]) -> list[str]:
        """The task's own checks of its loaded splits (unknown labels, ...; a split that failed to load is absent
        from ``splits``): returns one line per problem and may append lines to ``warnings`` (said, not fatal).
        Default: none."""
        return []

    def check_data(self) -> None:
        """Raise :class:`DatasetNotFoundError` naming the missing folder and the expected layout."""
        for d in self.dataset_dirs:
            if not (self.data_root / d).is_dir():
                raise DatasetNotFoundError(
                    f"task {self.name!r}: dataset folder {self.data_root / d} not found. Expected layout: "
                    f"{self.layout_help or d} (see docs/DATA_LAYOUTS.md). Set --data-root to the folder holding "
                    f"{', '.join(self.dataset_dirs)}, or build the offline corpus: "
                    f"python -m synth --out data/mini_superb --size tiny")

    @abc.abstractmethod
    def load_split(self, split: str) -> list[Utterance]:
        """Records of ``split`` (one of ``SPLITS``) in a deterministic order."""

    def audio_effects(self) -> tuple[tuple[str, ...], ...]:
        """The sox chain this task's audio goes through before the upstream (``Utterance.effects``; KS, QbE: s3prl's
        ``gain -3.0``; ASV: gain and silence trimming). Default: none."""
        return ()

    def file_records(self, path: Path) -> list[Utterance]:
        """The records an audio file given to ``run_benchmark.py predict`` becomes, as the task's loaders would
        make them (default: the whole file with :meth:`audio_effects`; SD: its chunks)."""
        from common.audio import audio_duration

        return [Utterance(id=str(path), path=Path(path), duration=audio_duration(path), effects=self.audio_effects())]

    def join_file_predictions(self, records: Sequence[Utterance], predictions: Sequence[Any]) -> Any:
        """One prediction for a file from those of its :meth:`file_records` (default: the only one)."""
        return predictions[0]

    def row_label(self) -> str:
        """The task's name in results rows and run folders (a manifest task: the manifest's name)."""
        return self.name

    def data_fingerprint(self) -> str | None:
        """A hash of data definitions that live outside the config (a manifest's content), or None."""
        return None

    def fold(self) -> int | None:
        """The cross-validation fold this instance runs (None for tasks without folds)."""
        return None

    def setup(self, downsample_rate: int) -> None:
        """Called once before training with the upstream's samples-per-frame (for frame-level labels)."""
        self.downsample_rate = downsample_rate

    def train_sampling_weights(self, utts: Sequence[Utterance]) -> list[float] | None:
        """Per-utterance sampling weights for training (None = plain shuffling)."""
        return None

    # -- model
    def build_augment(self) -> nn.Module | None:
        """Feature augmentation between the weighted sum and the head in training (default none; ASR and SF:
        SpecAugment when ``specaug.enabled``)."""
        spec = getattr(self.config, "specaug", None)
        if spec is None or not spec.enabled:
            return None
        from downstream.specaug import FeatureSpecAugment

        return FeatureSpecAugment(spec)

    @abc.abstractmethod
    def build_head(self, input_dim: int) -> nn.Module:
        """Head: ``forward(features [batch, frame, input_dim], lengths [batch]) -> output``; each task's override
        says what its ``output`` is (shapes, units), and ``loss``/``predict`` receive exactly that."""

    @abc.abstractmethod
    def loss(self, output: Any, lengths: torch.Tensor, utts: Sequence[Utterance]) -> torch.Tensor:
        """Scalar training loss of a batch; ``output``: the head's (see ``build_head``); targets come from ``utts``;
        ``lengths``: ``[batch]`` valid frames per item."""

    @abc.abstractmethod
    def predict(self, output: Any, lengths: torch.Tensor, utts: Sequence[Utterance]) -> list[Any]:
        """One JSON-serialisable prediction per utterance, from the head's ``output`` (see ``build_head``)."""

    def prediction_details(self, output: Any, lengths: torch.Tensor, utts: Sequence[Utterance]) -> list[dict]:
        """Extra JSON-serialisable detail per utterance for ``run_benchmark.py predict`` (class probabilities, ...);
        default: nothing."""
        return [{} for _ in utts]

    @abc.abstractmethod
    def score(self, split: str, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, float]:
        """Metrics (name -> value, SUPERB units) of ``split`` (dev or test) from ``predictions`` aligned with
        ``utts`` (the whole split); includes ``primary_metric``."""

    # -- hooks for tasks that do not fit the per-utterance mould
    def prediction_files(self, split: str, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, str]:
        """Files (run-folder-relative path -> text) describing the final predictions on ``split``; the default is
        ``predictions/<split>.jsonl``, one ``{"id", "prediction", "reference"}`` object per line."""
        lines = [json.dumps({"id": u.id, "prediction": p, "reference": u.label if u.label is not None else
                             u.transcript}, default=str) for u, p in zip(utts, predictions)]
        return {f"predictions/{split}.jsonl": "\n".join(lines) + "\n"}

    def tune_on_dev(self, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, Any]:
        """Post-selection (thresholds, filters) on the dev ``predictions`` of the best checkpoint, before test;
        returns the choices (recorded in ``summary.json`` under ``selected``). Default: nothing to choose."""
        return {}

    def run(self, features: LayerFeatures) -> RunOutcome | None:
        """A procedure that replaces training (QbE); None (the default) = the engine's train, dev and test."""
        return None

    def selection(self) -> tuple[str, bool]:
        """(the dev metric that picks checkpoints, whether higher is better)."""
        if self.selection_metric:
            return self.selection_metric, self.selection_higher_is_better
        return self.primary_metric, self.higher_is_better

    def better(self, new: float, best: float | None) -> bool:
        """Whether the selection metric's ``new`` value beats ``best`` (strictly; None: nothing yet)."""
        if best is None:
            return True
        return new > best if self.selection()[1] else new < best


# ---------------------------------------------------------------- helpers shared by loaders and tasks
def require_file(path: Path, task: str, what: str) -> Path:
    """``path`` if it exists, else a :class:`DatasetNotFoundError` saying what the file should hold."""
    if not path.exists():
        raise DatasetNotFoundError(f"task {task!r}: missing {path} ({what}; see docs/DATA_LAYOUTS.md)")
    return path


# ---------------------------------------------------------------- small metric helpers shared by tasks
def accuracy_percent(references: Sequence[Any], predictions: Sequence[Any]) -> float:
    """Percentage of exact matches; ``[] -> nan`` is avoided by raising (an empty split is a loader bug)."""
    if len(references) != len(predictions):
        raise ValueError(f"accuracy: {len(references)} references but {len(predictions)} predictions")
    if not references:
        raise ValueError("accuracy: no utterances to score")
    return 100.0 * sum(r == p for r, p in zip(references, predictions)) / len(references)


def error_rate_percent(references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]) -> float:
    """Token error rate in percent: total edit distance / total reference tokens (PER, WER, CER)."""
    import editdistance

    if len(references) != len(hypotheses):
        raise ValueError(f"error rate: {len(references)} references but {len(hypotheses)} hypotheses")
    errors = sum(editdistance.eval(list(r), list(h)) for r, h in zip(references, hypotheses))
    total = sum(len(r) for r in references)
    if total == 0:
        raise ValueError("error rate: the references hold no tokens")
    return 100.0 * errors / total
