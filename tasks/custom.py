"""``--task custom --manifest FILE``: the SUPERB protocol on a user's labelled manifest (docs/MANIFEST.md).

The target column decides the task type (or ``-o task_type=...``):

* ``label`` -> utterance classification: mean-pooled linear head as KS (Linear(D -> ``head.proj_dim``), mean pool,
  linear), cross-entropy; classes = the labels seen in train; metrics accuracy % (primary) and macro-F1 %
  (scikit-learn ``f1_score(average="macro")``).
* ``labels`` (``;``-separated) -> multi-label classification: the same pooled head, one sigmoid per class, binary
  cross-entropy; a class is predicted when its probability is >= 0.5; metrics mAP % (primary; scikit-learn
  ``average_precision_score`` per class that has a positive in the split, averaged) and micro-F1 %.
* ``text`` -> CTC transcription: the ASR head (Linear projector + BiLSTM, ``head.ctc``), CTC over the characters
  seen in train (space included), greedy decoding; metrics CER % (primary; characters, spaces included) and WER %.
* ``value`` (a number) -> utterance regression: the pooled head with one output, MSE on targets standardised with
  the train mean and standard deviation (predictions are mapped back); metrics MAE (primary, target units),
  Pearson r and Spearman rho (scipy.stats).

Results rows carry the manifest's file name (without suffix) as the task label, e.g. ``results/<upstream>/
<label>/...`` and ``task = <label>`` in results.csv; a name that collides with a built-in task gets a ``custom_``
prefix.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F

from downstream.ctc_heads import BiLSTMCTCHead, BiLSTMCTCHeadConfig, ctc_greedy_decode, ctc_loss
from downstream.pooled_linear import PooledLinearHead

from .base import Task, TaskConfig, Utterance, accuracy_percent, error_rate_percent
from .manifest import TASK_TYPES, Manifest, ManifestError, load_manifest
from .registry import register_task

BLANK = "<blank>"
PRIMARY = {"classification": ("accuracy", True), "multilabel": ("mAP", True), "transcription": ("cer", False),
           "regression": ("mae", False)}


@dataclass
class CustomHeadConfig:
    proj_dim: int = 256  # pooled heads (classification, multi-label, regression): KS's projector width
    ctc: BiLSTMCTCHeadConfig = field(default_factory=BiLSTMCTCHeadConfig)  # transcription: SUPERB's ASR head


@dataclass
class CustomDataConfig:
    manifest: str = ""  # the manifest file (or lhotse manifest folder); --manifest sets it
    label_separator: str = ";"  # between the classes of a `labels` cell


@dataclass
class CustomConfig(TaskConfig):
    task_type: Literal["auto", "classification", "multilabel", "transcription", "regression"] = "auto"
    head: CustomHeadConfig = field(default_factory=CustomHeadConfig)
    data: CustomDataConfig = field(default_factory=CustomDataConfig)


@register_task("custom")
class ManifestTask(Task):
    """A task defined by a manifest; ``task_type``, metrics and classes are known after :meth:`check_data`."""

    config_class = CustomConfig
    in_suite = False  # needs the user's manifest: not part of `--task all` or the demo
    layout_help = "a .csv/.jsonl manifest (path, split, one of label | labels | text | value) or a lhotse CutSet"

    def __init__(self, config: CustomConfig, data_root):
        super().__init__(config, data_root)
        self.manifest: Manifest | None = None
        self.task_type = config.task_type
        self.classes: list[str] = []
        self.vocab: list[str] = [BLANK]
        self.value_mean, self.value_std = 0.0, 1.0

    # ------------------------------------------------------------ data
    @property
    def manifest_path(self) -> Path:
        return Path(self.config.data.manifest)

    def row_label(self) -> str:
        from .registry import list_tasks

        stem = self.manifest_path.name
        for suffix in (".gz", ".jsonl", ".json", ".csv"):
            stem = stem[: -len(suffix)] if stem.endswith(suffix) else stem
        stem = "".join(c if c.isalnum() or c in "_.+-" else "_" for c in stem) or "manifest"
        return f"custom_{stem}" if stem in list_tasks(suite_only=False) else stem

    def data_fingerprint(self) -> str:
        """sha256 of the manifest file(s), so a run of an edited manifest is another run."""
        path = self.manifest_path
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        h = hashlib.sha256()
        for p in files:
            h.update(p.name.encode())
            h.update(p.read_bytes())
        return h.hexdigest()[:16]

    def check_data(self) -> None:
        if not self.config.data.manifest:
            raise ManifestError("task 'custom' needs a manifest: --manifest FILE (or -o data.manifest=FILE)")
        self.manifest = load_manifest(self.manifest_path, self.config.task_type, self.config.data.label_separator,
                                      self.skip_bad_audio)
        self.task_type = self.manifest.task_type
        train = self.manifest.split("train")
        if self.task_type == "classification":
            self.classes = sorted({e.target for e in train})
        elif self.task_type == "multilabel":
            self.classes = sorted({t for e in train for t in e.target})
            if not self.classes:
                raise ManifestError(f"manifest {self.manifest_path}: no train entry has a label")
        elif self.task_type == "transcription":
            self.vocab = [BLANK] + sorted({c for e in train for c in _normalise(e.target)})
        else:
            values = torch.tensor([e.target for e in train], dtype=torch.float64)
            self.value_mean = float(values.mean())
            self.value_std = float(values.std()) if len(values) > 1 and float(values.std()) > 0 else 1.0
        self.primary_metric, self.higher_is_better = PRIMARY[self.task_type]

    def load_split(self, split: str) -> list[Utterance]:
        if self.manifest is None:
            self.check_data()
        return [Utterance(id=e.id, path=e.path, duration=e.duration, start=e.start, speaker=e.speaker,
                          label=e.target if self.task_type != "transcription" else None,
                          transcript=_normalise(e.target) if self.task_type == "transcription" else "")
                for e in self.manifest.split(split)]

    # ------------------------------------------------------------ model
    def superb_comparability(self, dropped: dict[str, dict[str, int]]) -> list[str]:
        """A manifest task has no SUPERB number to compare with."""
        return ["not a SUPERB task (--task custom)"]

    def build_head(self, input_dim: int) -> torch.nn.Module:
        h = self.config.head
        if self.task_type == "transcription":
            return BiLSTMCTCHead(input_dim, len(self.vocab), h.ctc.proj_dim, h.ctc.hidden_size, h.ctc.num_layers,
                                 h.ctc.dropout)
        outputs = 1 if self.task_type == "regression" else len(self.classes)
        return PooledLinearHead(input_dim, [outputs], h.proj_dim)

    def _class_targets(self, utts: Sequence[Utterance]) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([index[u.label] for u in utts], dtype=torch.long)

    def _multi_hot(self, utts: Sequence[Utterance]) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.classes)}
        out = torch.zeros(len(utts), len(self.classes))
        for b, u in enumerate(utts):
            for t in u.label:
                out[b, index[t]] = 1.0
        return out

    def loss(self, output: Any, lengths: torch.Tensor, utts: Sequence[Utterance]) -> torch.Tensor:
        if self.task_type == "transcription":
            index = {t: i for i, t in enumerate(self.vocab)}
            return ctc_loss(output, lengths, [[index[c] for c in u.transcript if c in index] for u in utts])
        logits = output[0]
        if self.task_type == "classification":
            return F.cross_entropy(logits, self._class_targets(utts).to(logits.device))
        if self.task_type == "multilabel":
            return F.binary_cross_entropy_with_logits(logits, self._multi_hot(utts).to(logits.device))
        target = (torch.tensor([u.label for u in utts], dtype=torch.float32) - self.value_mean) / self.value_std
        return F.mse_loss(logits[:, 0], target.to(logits.device))

    def predict(self, output: Any, lengths: torch.Tensor, utts: Sequence[Utterance]) -> list[Any]:
        """classification: the class; multi-label: ``{"labels": [...], "probabilities": {class: p}}``;
        transcription: the text; regression: the value (target units)."""
        if self.task_type == "transcription":
            return ["".join(self.vocab[i] for i in ids) for ids in ctc_greedy_decode(output, lengths)]
        logits = output[0].float()
        if self.task_type == "classification":
            return [self.classes[i] for i in logits.argmax(-1).tolist()]
        if self.task_type == "multilabel":
            probs = torch.sigmoid(logits).tolist()
            return [{"labels": [c for c, p in zip(self.classes, row) if p >= 0.5],
                     "probabilities": {c: round(p, 6) for c, p in zip(self.classes, row)}} for row in probs]
        return [v * self.value_std + self.value_mean for v in logits[:, 0].tolist()]

    def prediction_details(self, output: Any, lengths: torch.Tensor, utts: Sequence[Utterance]) -> list[dict]:
        if self.task_type == "classification":
            probs = torch.softmax(output[0].float(), -1).tolist()
            return [{"probabilities": {c: round(p, 6) for c, p in zip(self.classes, row)}} for row in probs]
        return [{} for _ in utts]

    # ------------------------------------------------------------ metrics
    def score(self, split: str, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, float]:
        if self.task_type == "classification":
            from sklearn.metrics import f1_score

            refs = [u.label for u in utts]
            return {"accuracy": accuracy_percent(refs, predictions),
                    "macro_f1": 100.0 * float(f1_score(refs, list(predictions), average="macro", zero_division=0))}
        if self.task_type == "multilabel":
            return self._multilabel_scores(utts, predictions)
        if self.task_type == "transcription":
            refs, hyps = [u.transcript for u in utts], [str(p) for p in predictions]
            return {"cer": error_rate_percent([list(r) for r in refs], [list(h) for h in hyps]),
                    "wer": error_rate_percent([r.split() for r in refs], [h.split() for h in hyps])}
        return _regression_scores([float(u.label) for u in utts], [float(p) for p in predictions])

    def _multilabel_scores(self, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, float]:
        import numpy as np
        from sklearn.metrics import average_precision_score, f1_score

        truth = self._multi_hot(utts).numpy()
        scores = np.array([[p["probabilities"][c] for c in self.classes] for p in predictions])
        picked = (scores >= 0.5).astype(np.float32)
        with_pos = [k for k in range(len(self.classes)) if truth[:, k].any()]
        # mAP over the classes that occur in the split: AP is undefined for a class without positives
        ap = [average_precision_score(truth[:, k], scores[:, k]) for k in with_pos]
        return {"mAP": 100.0 * float(np.mean(ap)) if ap else math.nan,
                "micro_f1": 100.0 * float(f1_score(truth, picked, average="micro", zero_division=0))}


def _normalise(text: str) -> str:
    """Whitespace collapsed to single spaces; characters otherwise as written (case included)."""
    return " ".join(str(text).split())


def _regression_scores(refs: list[float], preds: list[float]) -> dict[str, float]:
    """MAE (target units), Pearson r, Spearman rho; correlations are NaN when either side is constant."""
    import numpy as np
    from scipy import stats

    r, p = np.asarray(refs), np.asarray(preds)
    out = {"mae": float(np.abs(r - p).mean()), "pearson": math.nan, "spearman": math.nan}
    if len(r) > 1 and r.std() > 0 and p.std() > 0:
        out["pearson"] = float(stats.pearsonr(r, p).statistic)
        out["spearman"] = float(stats.spearmanr(r, p).statistic)
    return out


__all__ = ["ManifestTask", "CustomConfig", "TASK_TYPES"]
