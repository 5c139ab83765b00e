"""Registry of upstream builders, and ``build_upstream`` that accepts a registered name or a checkpoint path."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from common.registry import Registry

from .base import Upstream

# Modules of the package that hold no builders; every other module is imported on first lookup, so a new
# upstream is one file with a decorated builder and nothing else to edit.
_REGISTRY: Registry[Callable[..., Upstream]] = Registry("upstream", __package__, Path(__file__).resolve().parent,
                                                        {"base", "registry"})


def register_upstream(name: str) -> Callable[[Callable[..., Upstream]], Callable[..., Upstream]]:
    """Decorator: register ``builder(**kwargs) -> Upstream`` under ``name``."""
    def wrap(builder: Callable[..., Upstream]) -> Callable[..., Upstream]:
        return _REGISTRY.register(name, builder)
    return wrap


def list_upstreams() -> list[str]:
    return _REGISTRY.names()


def build_upstream(name_or_path: str | Path, **kwargs) -> Upstream:
    """Build a registered upstream by name, or load one from a checkpoint file or directory.

    Paths: a Hugging Face model dir, a fairseq HuBERT ``.pt``, an s3prl distiller ``.ckpt`` or our own format
    (see ``upstream/checkpoints.py``); an ``.onnx`` file written by ``run_distill.py export`` runs with onnxruntime
    (``upstream/onnx_upstream.py``).
    """
    key = str(name_or_path)
    _REGISTRY.discover()
    if key in _REGISTRY.items:
        return _REGISTRY.items[key](**kwargs)
    if Path(key).suffix == ".onnx" and Path(key).is_file():
        from .onnx_upstream import load_onnx_upstream

        return load_onnx_upstream(Path(key), **kwargs)
    if Path(key).exists():
        from .checkpoints import load_upstream_from_path

        return load_upstream_from_path(Path(key), **kwargs)
    raise ValueError(f"unknown upstream {key!r}: not a registered name and no such file or directory. "
                     f"Registered: {', '.join(list_upstreams())}")
