"""Task registry: ``@register_task("name")`` on a :class:`tasks.base.Task` subclass; ``build_task`` loads its config.

Every module of the ``tasks`` package is imported on first lookup, so a new task is one file with a decorated class
(plus, optionally, ``configs/tasks/<name>.yaml``). Configs: the YAML's sections map onto the task's
``config_class``; a top-level ``profiles:`` mapping holds named override sets (``--profile demo`` merges
``profiles.demo`` over the defaults); ``-o key=value`` overrides come last. Unknown keys are errors.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from common.config import ConfigError, apply_overrides, load_config, load_yaml, merge_nested
from common.registry import Registry

from .base import Task, TaskConfig

_REGISTRY: Registry[type[Task]] = Registry("task", "tasks", Path(__file__).resolve().parent,
                                           {"base", "registry", "synth", "__main__"})
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "tasks"


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: register a Task subclass under ``name`` (lower case, as typed on the command line)."""
    def wrap(cls: type[Task]) -> type[Task]:
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"@register_task({name!r}) must decorate a tasks.base.Task subclass, got {cls!r}")
        _REGISTRY.register(name, cls)
        cls.name = name
        return cls
    return wrap


def list_tasks() -> list[str]:
    return _REGISTRY.names()


def get_task_class(name: str) -> type[Task]:
    tasks = _REGISTRY.items
    if name not in tasks and _REGISTRY.is_module(name):
        importlib.import_module(f"tasks.{name}")  # the usual case: task "ks" lives in tasks/ks.py (or tasks/ks/)
    if name not in tasks:
        _REGISTRY.discover()
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(tasks))}")
    return tasks[name]


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
        data = merge_nested(data, profiles[profile])
    data = apply_overrides(data, overrides)
    return load_config(cls.config_class, base=data)


def build_task(name: str, data_root: str | Path, overrides: list[str] | None = None,
               profile: str | None = None, config_path: str | Path | None = None) -> Task:
    cls = get_task_class(name)
    return cls(load_task_config(name, overrides, profile, config_path), data_root)

