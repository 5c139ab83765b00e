"""Registry of upstream builders, and ``build_upstream`` that accepts a registered name or a checkpoint path."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Callable

from .base import Upstream

_BUILDERS: dict[str, Callable[..., Upstream]] = {}
# Modules of the package that hold no builders; every other module is imported on first lookup, so a new
# upstream is one file with a decorated builder and nothing else to edit.
_NOT_UPSTREAM_MODULES = {"base", "registry"}
_discovered = False


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules([str(Path(__file__).resolve().parent)]):
        if info.name not in _NOT_UPSTREAM_MODULES and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")


def register_upstream(name: str) -> Callable[[Callable[..., Upstream]], Callable[..., Upstream]]:
    """Decorator: register ``builder(**kwargs) -> Upstream`` under ``name``."""
    def wrap(builder: Callable[..., Upstream]) -> Callable[..., Upstream]:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"upstream {name!r} is registered twice "
                             f"({_BUILDERS[name].__module__} and {builder.__module__})")
        _BUILDERS[name] = builder
        return builder
    return wrap


def list_upstreams() -> list[str]:
    _discover()
    return sorted(_BUILDERS)


def build_upstream(name_or_path: str | Path, **kwargs) -> Upstream:
    """Build a registered upstream by name, or load one from a checkpoint file or directory.

    Paths: a Hugging Face model dir, a fairseq HuBERT ``.pt``, an s3prl distiller ``.ckpt`` or our own format
    (see ``upstream/checkpoints.py``).
    """
    key = str(name_or_path)
    _discover()
    if key in _BUILDERS:
        return _BUILDERS[key](**kwargs)
    if Path(key).exists():
        from .checkpoints import load_upstream_from_path

        return load_upstream_from_path(Path(key), **kwargs)
    raise ValueError(f"unknown upstream {key!r}: not a registered name and no such file or directory. "
                     f"Registered: {', '.join(list_upstreams())}")
