"""Rules for writing into an output folder that already holds a run (distillation, pretraining).

Nothing already written is changed by a command that is then refused: the new run's record (its config) is compared
with the one on disk *before* anything is written. ``--resume`` continues a run only with the same settings, except
those in ``safe_keys`` (how long to train, how often to log or checkpoint, which device and threads), which take
effect for real in the resumed run; any other difference is refused with the differing keys. A re-run into a folder
that holds a run needs ``--resume`` (or a new ``--output``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class RunFolderError(ValueError):
    """The output folder holds a run that this command must not overwrite or continue."""


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are compared whole)."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def changed_keys(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ (a key on one side only counts as changed, unless its value is None):
    key -> (old, new)."""
    a, b = flatten(old), flatten(new)
    # a key a newer version added with the value None matches a record written before it existed
    return {k: (a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)}


_ABSENT = object()


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else repr(value)


def check_run_folder(record_path: Path, record: dict, resume: bool, has_progress: bool,
                     safe_keys: frozenset[str], command: str) -> list[str]:
    """Decide whether ``command`` may write its run ``record`` (a nested dict) over the folder of ``record_path``.

    ``has_progress``: the folder holds training state (a checkpoint or a finished model). Returns the safe keys
    that change on this resume (to log); raises :class:`RunFolderError` naming the folder (and, on a resume, every
    differing key with its old and new value) when the run must not go on. Writes nothing.
    """
    out = record_path.parent
    if not has_progress:
        return []  # nothing trained yet: a (re)start writes its own record
    if not resume:
        raise RunFolderError(f"{out} already holds a {command} run ({record_path.name}, checkpoints): pass --resume "
                             f"to continue it, or choose a new --output; nothing was changed")
    if not record_path.is_file():
        raise RunFolderError(f"{out}: cannot --resume: {record_path.name} is missing, so the run's settings are "
                             f"unknown; choose a new --output")
    try:
        old = yaml.safe_load(record_path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as e:
        raise RunFolderError(f"{record_path}: cannot --resume, the run's record is not valid YAML ({e})") from None
    diff = changed_keys(old if isinstance(old, dict) else {}, record)
    refused = {k: v for k, v in diff.items() if k not in safe_keys}
    if refused:
        listed = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in refused.items())
        raise RunFolderError(f"{out}: --resume with changed settings ({listed}). Only "
                             f"{', '.join(sorted(safe_keys))} may change on resume; run with the saved settings "
                             f"(see {record_path.name}) or choose a new --output; nothing was changed")
    return sorted(diff)
