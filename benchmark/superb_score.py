"""The SUPERB score: each metric mapped linearly so the zero anchor -> 0 and the top anchor -> 1000, averaged
within a task (SF has two metrics), then across tasks. Reference anchors live in ``configs/superb_reference.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.config import ConfigError, load_yaml

DEFAULT_REFERENCE = Path(__file__).resolve().parent.parent / "configs" / "superb_reference.yaml"


@dataclass(frozen=True)
class MetricRef:
    task: str
    metric: str
    column: str
    higher_is_better: bool


@dataclass
class Reference:
    fbank: dict[str, float]
    sota: dict[str, float]
    metrics: list[MetricRef]
    published: dict[str, dict[str, float]]

    def task_metrics(self, task: str) -> list[MetricRef]:
        return [m for m in self.metrics if m.task == task]

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(m.task for m in self.metrics))


def load_reference(path: str | Path | None = None) -> Reference:
    """The SUPERB reference at ``path`` (default ``configs/superb_reference.yaml``): anchors and metrics.

    Raises ``ConfigError`` (a ValueError) naming the file when it is missing, not a YAML mapping, or lacks the
    top-level key ``anchors`` or ``tasks``."""
    path = Path(path or DEFAULT_REFERENCE)
    data = load_yaml(path)
    for key in ("anchors", "tasks"):
        if key not in data:
            raise ConfigError(f"{path}: missing top-level key {key!r}")
    metrics = [MetricRef(task, m["metric"], m["column"], bool(m["higher_is_better"]))
               for task, items in data["tasks"].items() for m in items]
    return Reference(data["anchors"]["fbank"], data["anchors"]["sota"], metrics, data.get("published", {}))


def linear_score(value: float, zero: float, top: float) -> float:
    """``value`` on the scale where ``zero`` -> 0 and ``top`` -> 1000 (works for lower- and higher-is-better)."""
    if top == zero:
        raise ValueError(f"score anchors coincide ({zero}); the scale is undefined")
    return 1000.0 * (value - zero) / (top - zero)


def superb_score(values: dict[str, float], zero: dict[str, float], top: dict[str, float], ref: Reference,
                 tasks: list[str] | None = None, skip_unscaled: bool = False) -> float | None:
    """Mean over ``tasks`` (default: all of ``ref``) of the within-task mean of mapped metrics.

    ``values``/``zero``/``top`` are keyed by leaderboard column (``PR``, ``SF_F1``, ...). A task with a missing
    value makes the result None (a partial average would not be comparable). ``skip_unscaled`` leaves out metrics
    whose top anchor is not strictly better than the zero anchor, and tasks left without metrics. Equal anchors
    have no scale; a top anchor on the wrong side would turn the scale round (on the offline corpus FBANK's QbE
    MTWV is above the published SOTA, and a row worse than FBANK would score positive). Without the flag such
    anchors raise ``ValueError``.
    """
    per_task = []
    for task in tasks or ref.tasks:
        metrics = ref.task_metrics(task)
        if any(m.column not in values or m.column not in zero or m.column not in top for m in metrics):
            return None
        scaled = [m for m in metrics if _top_is_better(m, zero[m.column], top[m.column])]
        if skip_unscaled:
            metrics = scaled
            if not metrics:
                continue
        elif len(scaled) < len(metrics):
            bad = [m.column for m in metrics if m not in scaled]
            raise ValueError(f"top anchor is not better than the zero anchor for {bad}; the scale is undefined")
        per_task.append(sum(linear_score(values[m.column], zero[m.column], top[m.column]) for m in metrics)
                        / len(metrics))
    return sum(per_task) / len(per_task) if per_task else None


def _top_is_better(metric: MetricRef, zero: float, top: float) -> bool:
    return top > zero if metric.higher_is_better else top < zero
