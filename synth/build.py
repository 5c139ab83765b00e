"""Build the offline mini-SUPERB corpus: plan every task's synthesis jobs, render them in parallel, then write
each dataset's label files, ``CORPUS.md`` and ``MANIFEST.sha256``."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

from common.io import atomic_write_text, sha256_file

from . import fluent, iemocap, libri2mix, librispeech, quesst, snips, speech_commands, unlabeled, voxceleb
from .card import render_card
from .context import Context
from .render import STATE_DIR, run_jobs
from .sizes import load_size
from .voices import build_speakers, check_engines

MANIFEST = "MANIFEST.sha256"
# Task builders in build order; each has ``plan(ctx) -> (jobs, finish)``, ``finish(results) -> stats``.
BUILDERS: dict[str, Callable] = {
    "librispeech": librispeech.plan,
    "speech_commands": speech_commands.plan,
    "fluent": fluent.plan,
    "voxceleb": voxceleb.plan,
    "iemocap": iemocap.plan,
    "quesst": quesst.plan,
    "snips": snips.plan,
    "libri2mix": libri2mix.plan,
    "unlabeled": unlabeled.plan,
}


def write_manifest(root: Path) -> int:
    """``sha256  relative/path`` for every file under ``root`` except the build state and the manifest itself."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST
                   and STATE_DIR not in p.relative_to(root).parts and not p.name.endswith(".tmp"))
    lines = [f"{sha256_file(p)}  {p.relative_to(root).as_posix()}" for p in files]
    atomic_write_text(root / MANIFEST, "\n".join(lines) + "\n")
    return len(lines)


def _claim(root: Path, size: str, seed: int) -> None:
    """Refuse to mix two corpora in one folder: a folder holds one (size, seed) build, resumed as often as needed."""
    marker = root / STATE_DIR / "build.json"
    wanted = {"size": size, "seed": seed}
    if marker.exists():
        try:
            found = json.loads(marker.read_text())
        except json.JSONDecodeError:
            raise ValueError(f"{marker}: damaged build marker (not JSON); delete {root} and build again, or use "
                             "another --out folder") from None
        if found != wanted:
            raise ValueError(f"{root} holds a corpus built with {found}; asked for {wanted}. Use another --out folder.")
    else:
        atomic_write_text(marker, json.dumps(wanted) + "\n")


def _progress(count: int, total: int) -> None:
    if count == total or count % 500 == 0:
        print(f"  rendered {count}/{total}", file=sys.stderr, flush=True)


def build_corpus(out: str | Path, size: str = "small", seed: int = 0, workers: int | None = None,
                 tasks: list[str] | None = None, verbose: bool = True) -> dict:
    """Build (or resume) the corpus under ``out``; returns per-task statistics."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)  # first: a --out that cannot be a folder is named before anything else
    check_engines()
    cfg = load_size(size)
    workers = workers or os.cpu_count() or 1
    ctx = Context(root=root, seed=seed, size=cfg, speakers=build_speakers(seed))
    unknown = set(tasks or []) - set(BUILDERS)
    if unknown:
        raise ValueError(f"unknown corpus parts {sorted(unknown)}; known: {', '.join(BUILDERS)}")
    started = time.time()
    _claim(root, size, seed)
    plans = {name: plan(ctx) for name, plan in BUILDERS.items() if not tasks or name in tasks}
    jobs = [job for jobs, _ in plans.values() for job in jobs]
    if verbose:
        print(f"synth: {len(jobs)} files for {', '.join(plans)} ({size}, seed {seed}, {workers} workers) in {root}",
              file=sys.stderr, flush=True)
    results = run_jobs(jobs, root, seed, workers, _progress if verbose else None)
    stats = {name: finish(results) for name, (_, finish) in plans.items()}
    atomic_write_text(root / "CORPUS.md", render_card(ctx, stats))
    n_files = write_manifest(root)
    if verbose:
        print(f"synth: done, {n_files} files, {time.time() - started:.1f} s", file=sys.stderr, flush=True)
    return stats
