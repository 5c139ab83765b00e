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
_PRETRAINED: set[str] = set()  # builders taking checkpoint= / random_init= / trust_pickle=


def register_upstream(name: str, pretrained: bool = False) -> Callable[[Callable[..., Upstream]],
                                                                      Callable[..., Upstream]]:
    """Decorator: register ``builder(**kwargs) -> Upstream`` under ``name``.

    ``pretrained=True``: the name stands for trained weights; the builder takes ``checkpoint=``, ``random_init=``
    and ``trust_pickle=`` and must refuse to build without weights unless ``random_init`` (see
    ``upstream/builtin.py``). Other builders (fbank, mfcc) have no weights to load.
    """
    def wrap(builder: Callable[..., Upstream]) -> Callable[..., Upstream]:
        _REGISTRY.register(name, builder)
        if pretrained:
            _PRETRAINED.add(name)
        return builder
    return wrap


def list_upstreams() -> list[str]:
    return _REGISTRY.names()


def build_upstream(name_or_path: str | Path, checkpoint: str | Path | None = None, random_init: bool = False,
                   trust_pickle: bool = False, **kwargs) -> Upstream:
    """Build a registered upstream by name, or load one from a checkpoint file or directory.

    Paths: a Hugging Face model dir, a fairseq HuBERT ``.pt``, an s3prl distiller ``.ckpt`` or our own format
    (see ``upstream/checkpoints.py``); an ``.onnx`` file written by ``run_distill.py export`` runs with onnxruntime
    (``upstream/onnx_upstream.py``). A pretrained name (``hubert_base``, ...) needs ``checkpoint`` (its weights)
    or ``random_init=True``; ``trust_pickle`` allows a full unpickle of a checkpoint you trust.

    Raises ValueError (unknown name, conflicting arguments, a pretrained name without weights), FileNotFoundError,
    ``ConversionError`` / ``UnsafeCheckpointError`` (unreadable or refused checkpoint).
    """
    key = str(name_or_path)
    _REGISTRY.discover()
    builders = _REGISTRY.items
    if key in builders:
        if key in _PRETRAINED:
            return builders[key](checkpoint=checkpoint, random_init=random_init, trust_pickle=trust_pickle,
                                  **kwargs)
        if checkpoint is not None or random_init:
            flag = ("a checkpoint (--upstream-ckpt, --teacher-ckpt)" if checkpoint is not None
                    else "random_init (--random-init)")
            raise ValueError(f"upstream {key!r} has no weights, so {flag} does not apply; pretrained names: "
                             f"{', '.join(sorted(_PRETRAINED))}")
        return builders[key](**kwargs)
    if Path(key).exists() and (checkpoint is not None or random_init):
        flag = "--upstream-ckpt" if checkpoint is not None else "--random-init"
        raise ValueError(f"upstream {key!r} is a checkpoint path already; {flag} applies to a registered "
                         f"pretrained name ({', '.join(sorted(_PRETRAINED))})")
    if Path(key).suffix == ".onnx" and Path(key).is_file():
        from .onnx_upstream import load_onnx_upstream

        return load_onnx_upstream(Path(key), **kwargs)
    if Path(key).exists():
        from .checkpoints import load_upstream_from_path

        return load_upstream_from_path(Path(key), trust_pickle=trust_pickle, **kwargs)
    raise ValueError(f"unknown upstream {key!r}: not a registered name and no such file or directory. "
                     f"Registered: {', '.join(list_upstreams())}")
