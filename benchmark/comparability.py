"""Whether a run's results rows are SUPERB-comparable, and why not (docs/PROTOCOL.md, "Which rows are
SUPERB-comparable"): the report never mixes the two silently.

A run is comparable when it runs the full profile with SUPERB's settings (changing only what SUPERB itself varied:
the learning rate, which it tuned per upstream) under SUPERB's protocol (frozen upstream, weighted sum of every
hidden state), and its task says nothing SUPERB used is missing (``Task.superb_comparability``: a lexicon not
given, one ER fold instead of five, ...).
"""
from __future__ import annotations

from typing import Any

from common.run_record import flatten

# Config keys a run may change and stay comparable: SUPERB tuned the lr per upstream x task
# (s3prl downstream/docs/superb.md:72); logging, evaluation batching and the lr sweep's own runs change no result;
# data.lexicon supplies SUPERB's own file; data.fold picks one of SUPERB's folds (the task says whether one is enough).
NEUTRAL_KEYS = ("optimizer.lr", "train.log_every", "batch.eval_max_seconds", "sweep.", "data.lexicon", "data.fold")


def config_differences(full: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """``key=value`` for each setting of ``actual`` that differs from the full profile ``full`` (nested dicts of a
    task config), outside ``NEUTRAL_KEYS``."""
    a, b = flatten(full), flatten(actual)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(NEUTRAL_KEYS))
    return [f"{k}={b.get(k)!r}" for k in keys]


def comparability_reasons(profile: str | None, layer: int | None, upstream_trainable: bool,
                          full: dict[str, Any], actual: dict[str, Any], task_reasons: list[str]) -> list[str]:
    """The reasons a run is not SUPERB-comparable (empty: it is). ``full``/``actual``: the task's config of the
    full profile without overrides and the run's own (as dicts); ``task_reasons``: what the task says."""
    reasons = []
    if profile:
        reasons.append(f"profile {profile!r} (SUPERB's settings are the full profile)")
    else:
        changed = config_differences(full, actual)
        if changed:
            shown = ", ".join(changed[:4]) + (f" (+{len(changed) - 4} more)" if len(changed) > 4 else "")
            reasons.append(f"settings differ from SUPERB's: {shown}")
    if layer is not None:
        reasons.append(f"--layer {layer} (SUPERB: the weighted sum of every hidden state)")
    if upstream_trainable:
        reasons.append("--upstream-trainable (SUPERB: frozen upstream)")
    return reasons + list(task_reasons)
