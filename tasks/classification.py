"""Shared part of the utterance classification tasks (KS, SID, ER): mean-pooled linear head, cross-entropy,
accuracy. Subclasses set ``classes`` (in ``load_split`` or ``__init__``) and put the class name in ``Utterance.label``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from downstream.pooled_linear import PooledLinearHead

from .base import Task, TaskConfig, Utterance, accuracy_percent


@dataclass
class PooledHeadConfig:
    proj_dim: int = 256


@dataclass
class PooledTaskConfig(TaskConfig):
    """The config of a task with the mean-pooled linear head (IC, KS, SID, ER; KS and ER add a ``data`` section)."""

    head: PooledHeadConfig = field(default_factory=PooledHeadConfig)


class ClassificationTask(Task):
    primary_metric = "accuracy"
    higher_is_better = True
    classes: list[str] = []

    def _targets(self, utts: Sequence[Utterance]) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.classes)}
        try:
            return torch.tensor([index[u.label] for u in utts], dtype=torch.long)
        except KeyError as e:
            raise ValueError(f"task {self.name!r}: label {e.args[0]!r} is not one of its {len(self.classes)} "
                             "classes (seen in training)") from None

    def audit_splits(self, splits: dict[str, list[Utterance]], warnings: list[str]) -> list[str]:
        """Every label is one of ``classes`` (for SID: a speaker seen in training): a label the head cannot output
        would only show up as a crash or a silently lower score. A class without training data is a warning."""
        problems = super().audit_splits(splits, warnings)
        known = set(self.classes)
        for split, utts in splits.items():
            unknown = Counter(u.label for u in utts if u.label not in known)
            if unknown:
                shown = ", ".join(f"{label!r} ({n})" for label, n in unknown.most_common(5))
                problems.append(f"{split}: {sum(unknown.values())} record(s) with labels outside the task's "
                                f"{len(known)} classes: {shown}")
        unseen = sorted(known - {u.label for u in splits.get("train", [])})
        if unseen and splits.get("train"):
            warnings.append(f"train: no training record for {len(unseen)} class(es): "
                            f"{', '.join(map(repr, unseen[:5]))}")
        return problems

    def build_head(self, input_dim: int) -> PooledLinearHead:
        """Output: ``[logits [batch, len(classes)]]`` (a one-item list) of the mean-pooled utterance."""
        return PooledLinearHead(input_dim, [len(self.classes)], self.config.head.proj_dim)

    def loss(self, output: list[torch.Tensor], lengths: torch.Tensor, utts: Sequence[Utterance]) -> torch.Tensor:
        return F.cross_entropy(output[0], self._targets(utts).to(output[0].device))

    def predict(self, output: list[torch.Tensor], lengths: torch.Tensor, utts: Sequence[Utterance]) -> list[Any]:
        return [self.classes[i] for i in output[0].argmax(-1).tolist()]

    def prediction_details(self, output: list[torch.Tensor], lengths: torch.Tensor,
                           utts: Sequence[Utterance]) -> list[dict]:
        probs = torch.softmax(output[0].float(), -1).tolist()
        return [{"probabilities": {str(c): round(p, 6) for c, p in zip(self.classes, row)}} for row in probs]

    def score(self, split: str, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, float]:
        return {"accuracy": accuracy_percent([u.label for u in utts], predictions)}


def balanced_weights(labels: Sequence[str]) -> list[float]:
    """Sampling weight 1 / (count of the label), so every class is drawn equally often."""
    counts = Counter(labels)
    return [1.0 / counts[label] for label in labels]
