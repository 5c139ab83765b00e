"""Upstreams: one contract (list of 16 kHz waveforms → all hidden states), a registry, and checkpoint I/O.

Importing this package registers the built-in upstreams.
"""
from .base import Upstream, UpstreamOutput
from .registry import build_upstream, list_upstreams, register_upstream
from . import builtin, fbank  # noqa: E402,F401  (registers the built-in upstreams)

__all__ = ["Upstream", "UpstreamOutput", "build_upstream", "list_upstreams", "register_upstream"]
