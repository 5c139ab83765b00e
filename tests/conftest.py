"""Shared pytest fixtures.

``tiny_corpus``: the offline mini-SUPERB corpus at size ``tiny`` (seed 0), built once and cached under
``$DISTILSUPERB_CACHE`` (default ``~/.cache/distilsuperb``) in ``tiny-<hash of synth/>``, so it is rebuilt only
when the generator changes. A file lock keeps two pytest processes from building it at once.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from filelock import FileLock

from tests.fixtures.upstreams import register_tiny_upstream

register_tiny_upstream()  # tests build the tiny deterministic upstream by name (run_task, run_benchmark.main)

REPO = Path(__file__).resolve().parents[1]
SYNTH_DIR = REPO / "synth"


def synth_code_hash() -> str:
    """Hash of the generator's source files (code, size settings, card template)."""
    h = hashlib.sha256()
    for path in sorted(SYNTH_DIR.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".yaml", ".md"):
            h.update(path.relative_to(SYNTH_DIR).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def cache_root() -> Path:
    return Path(os.environ.get("DISTILSUPERB_CACHE", Path.home() / ".cache" / "distilsuperb"))


@pytest.fixture(scope="session")
def tiny_corpus() -> Path:
    """Path of a complete tiny corpus (the layouts of docs/DATA_LAYOUTS.md). Treat it as read-only."""
    from synth.build import MANIFEST, build_corpus
    from synth.voices import SynthesisError

    root = cache_root() / f"tiny-{synth_code_hash()}"
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock", timeout=600):
        if not (root / MANIFEST).exists():  # the manifest is written last: its presence means a finished build
            try:
                build_corpus(root, size="tiny", seed=0, verbose=False)
            except SynthesisError as e:
                pytest.skip(f"cannot build the tiny corpus: {e}")
    return root
