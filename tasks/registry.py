"""Task registry: ``@register_task("name")`` on a :class:`tasks.base.Task` subclass; ``build_task`` loads its config.

Every module of the ``tasks`` package is imported on first lookup, so a new task is one file with a decorated class
(plus, optionally, ``configs/tasks/<name>.yaml``). Configs: the YAML's sections map onto the task's
``config_class``; a top-level ``profiles:`` mapping holds named override sets (``--profile demo`` merges
``profiles.demo`` over the defaults); ``-o key=value`` overrides come last. Unknown keys are errors.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Callable

from common.config import ConfigError, apply_overrides, load_config, load_yaml

from .base import Task, TaskConfig

_TASKS: dict[str, type[Task]] = {}
_NOT_TASK_MODULES = {"base", "registry", "synth", "__main__"}
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "tasks"
_discovered = False


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: register a Task subclass under ``name`` (lower case, as typed on the command line)."""
    def wrap(cls: type[Task]) -> type[Task]:
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"@register_task({name!r}) must decorate a tasks.base.Task subclass, got {cls!r}")
        if name in _TASKS and _TASKS[name] is not cls:
            raise ValueError(f"task {name!r} is registered twice ({_TASKS[name].__module__} and {cls.__module__})")
        cls.name = name
        _TASKS[name] = cls
        return cls
    return wrap


def _discover() -> None:
    """Import every module of the tasks package once, so their decorators run."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    package_dir = Path(__file__).resolve().parent
    for info in pkgutil.iter_modules([str(package_dir)]):
        if info.name in _NOT_TASK_MODULES or info.name.startswith("_"):
            continue
        importlib.import_module(f"tasks.{info.name}")


def _is_module(name: str) -> bool:
    package_dir = Path(__file__).resolve().parent
    return name.isidentifier() and name not in _NOT_TASK_MODULES and (
        (package_dir / f"{name}.py").is_file() or (package_dir / name / "__init__.py").is_file())


def list_tasks(suite_only: bool = True) -> list[str]:
    """Registered task names; by default only those of the benchmark suite (``--task all``, the demo), not the
    ones that need user data (``custom``: a manifest)."""
    _discover()
    return sorted(n for n, cls in _TASKS.items() if cls.in_suite or not suite_only)


def get_task_class(name: str) -> type[Task]:
    if name not in _TASKS and _is_module(name):
        importlib.import_module(f"tasks.{name}")  # the usual case: task "ks" lives in tasks/ks.py (or tasks/ks/)
    if name not in _TASKS:
        _discover()
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def load_task_config(name: str, overrides: list[str] | None = None, profile: str | None = None,
                     config_path: str | Path | None = None) -> TaskConfig:
    """The task's config: dataclass defaults < YAML < ``profiles.<profile>`` < ``-o`` overrides."""
    cls = get_task_class(name)
    path = Path(config_path) if config_path else CONFIG_DIR / f"{name}.yaml"
    data = load_yaml(path) if path.is_file() else {}
    profiles = data.pop("profiles", {}) or {}
    if profile is not None:
        if profile not in profiles:
            raise ConfigError(f"{path}: no profile {profile!r}; profiles: {sorted(profiles) or 'none'}")
        data = _deep_merge(data, profiles[profile])
    data = apply_overrides(data, overrides)
    return load_config(cls.config_class, base=data)


def build_task(name: str, data_root: str | Path, overrides: list[str] | None = None,
               profile: str | None = None, config_path: str | Path | None = None) -> Task:
    cls = get_task_class(name)
    return cls(load_task_config(name, overrides, profile, config_path), data_root)


def _deep_merge(base: dict, new: dict) -> dict:
    out = dict(base)
    for k, v in new.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
