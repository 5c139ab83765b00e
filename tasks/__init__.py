"""SUPERB tasks: one module per task, registered with ``@register_task`` (see ``tasks/base.py``)."""
from .base import DatasetNotFoundError, Task, TaskConfig, Utterance
from .registry import build_task, list_tasks, register_task

__all__ = ["DatasetNotFoundError", "Task", "TaskConfig", "Utterance", "build_task", "list_tasks", "register_task"]
