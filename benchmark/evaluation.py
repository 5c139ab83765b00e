"""Predictions and metrics of a downstream model on a split: ``task.predict`` over evaluation batches (longest first,
no gradients, the model and upstream in eval mode), then ``task.score``, checked to hold the primary metric."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from common import distributed
from common.utterance import Utterance
from tasks.base import Task

from .batching import eval_batches
from .features import BatchRequest
from .run_data import FeatureSources, RunSplits


class Evaluator:
    """Scores downstream models of ``task`` on the run's splits, with features from ``sources``."""

    def __init__(self, task: Task, upstream: nn.Module, sources: FeatureSources, splits: RunSplits):
        self.task, self.upstream, self.sources, self.splits = task, upstream, sources, splits

    def predict(self, model: nn.Module, utts: Sequence[Utterance]) -> list[Any]:
        """``task.predict`` output per utterance, in the order of ``utts``. Under torchrun each rank predicts every
        ``world``-th evaluation batch and the ranks exchange their predictions (every rank must call it), so each
        rank reads 1/world of the split's features; tensors in predictions come back on the CPU."""
        model.eval()
        self.upstream.eval()
        source = self.sources.for_run()
        mine: dict[int, Any] = {}
        batches = eval_batches([u.duration for u in utts], self.task.config.batch.eval_max_seconds)
        # each rank predicts its share of the batches; the parts are gathered (one part in one process)
        requests = (BatchRequest([utts[i] for i in idx], tag=idx) for idx in distributed.shard(batches))
        with torch.no_grad():
            for request, fb in source.stream(requests):
                preds = self.task.predict(model(fb.hidden, fb.lengths), fb.lengths, fb.utts)
                for i, p in zip(request.tag, preds):
                    mine[i] = p.cpu() if isinstance(p, torch.Tensor) else p
        out: list[Any] = [None] * len(utts)
        for part in distributed.all_gather(mine):
            for i, p in part.items():
                out[i] = p
        return out

    def score(self, split: str, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, float]:
        """``task.score``; raises KeyError when it lacks the task's primary metric."""
        with torch.no_grad():
            metrics = self.task.score(split, utts, predictions)
        if self.task.primary_metric not in metrics:
            raise KeyError(f"task {self.task.name!r}: score() returned {sorted(metrics)}, "
                           f"missing its primary metric {self.task.primary_metric!r}")
        return metrics

    def evaluate_split(self, model: nn.Module, split: str) -> dict[str, float]:
        """Metrics of ``model`` on ``split`` (the dev evaluations during training)."""
        utts = self.splits.load(split)
        return self.score(split, utts, self.predict(model, utts))
