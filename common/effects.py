"""sox effect chains applied to an utterance's waveform before the upstream, as s3prl's datasets apply them.

s3prl loads the audio of three SUPERB tasks through ``torchaudio.sox_effects.apply_effects_file`` (libsox) with
``gain -3.0`` (KS ``speech_commands/dataset.py:22``, QbE ``quesst14_dtw/dataset.py:31``, ASV
``sv_voxceleb1/dataset.py:25``), ASV followed by ``silence 1 0.1 0.1% -1 0.1 0.1%`` (``sv_voxceleb1/dataset.py:26``:
drop the leading audio until 0.1 s lies above 0.1% of full scale, and every later stretch of 0.1 s below it).
torchaudio no longer ships libsox, so a chain is run by the Debian ``sox`` binary (SoX 14.4.2, the libsox version
torchaudio bundled), fed and read back as raw float32 through pipes: samples, lengths and trimming decisions are the
binary's own (``tests/test_effects.py`` checks the pipe against ``sox file.wav`` on fixtures). A gain-only chain is
a multiplication by 10^(dB/20) here (the same samples to fp32 rounding, 3e-8; no process per utterance).

Without the binary, a chain with ``silence`` cannot be reproduced: :func:`apply_effects` then applies the gain
alone and says so once (``scripts/install_system_deps.sh`` installs sox; rows of such runs are not
SUPERB-comparable, :func:`sox_available` lets a task say it).
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .audio import SAMPLE_RATE, AudioError, load_audio

log = logging.getLogger(__name__)

Effect = tuple[str, ...]  # one sox effect and its arguments, e.g. ("gain", "-3.0")
GAIN_MINUS_3 = (("gain", "-3.0"),)
TRIM_SILENCE = ("silence", "1", "0.1", "0.1%", "-1", "0.1", "0.1%")
_warned: set[str] = set()
_lock = threading.Lock()


def sox_available() -> bool:
    """Whether the ``sox`` binary is on PATH."""
    return shutil.which("sox") is not None


def effects_key(effects: Sequence[Effect]) -> str:
    """The chain as one string (``gain -3.0 | silence 1 ...``): part of the feature cache key."""
    return " | ".join(" ".join(e) for e in effects)


def check_effects(effects: Sequence[Effect]) -> None:
    """Raise ``ValueError`` for an effect this module does not run (only ``gain`` and ``silence`` are used)."""
    for e in effects:
        if not e or e[0] not in ("gain", "silence"):
            raise ValueError(f"unsupported sox effect {' '.join(e)!r} (supported: gain, silence)")
        if e[0] == "gain":
            float(e[1])


def _warn_once(message: str) -> None:
    with _lock:
        if message in _warned:
            return
        _warned.add(message)
    log.warning(message)


def _python_gain(wav: torch.Tensor, effects: Sequence[Effect]) -> torch.Tensor:
    db = sum(float(e[1]) for e in effects if e[0] == "gain")
    return wav * (10.0 ** (db / 20.0)) if db else wav


def run_sox(wav: torch.Tensor, effects: Sequence[Effect]) -> torch.Tensor:
    """``wav`` ``[time]`` (16 kHz float32) through the ``sox`` binary with ``effects``; ``[time']`` float32.

    Raises :class:`AudioError` when sox fails (its last stderr line) or is missing."""
    cmd = ["sox", "-D", "-V1", "-t", "f32", "-r", str(SAMPLE_RATE), "-c", "1", "-", "-t", "f32", "-",
           *[arg for e in effects for arg in e]]
    data = wav.detach().cpu().numpy().astype("<f4").tobytes()
    try:
        done = subprocess.run(cmd, input=data, capture_output=True, check=False)
    except OSError as e:
        raise AudioError(f"cannot run sox ({e}); install it: scripts/install_system_deps.sh") from None
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(f"sox {effects_key(effects)} failed (exit {done.returncode}): "
                         f"{tail[-1] if tail else 'no message'}")
    return torch.from_numpy(np.frombuffer(done.stdout, dtype="<f4").copy())


def apply_effects(wav: torch.Tensor, effects: Sequence[Effect]) -> torch.Tensor:
    """``wav`` ``[time]`` after the sox chain ``effects`` (nothing when empty). Gain-only chains run here; a chain
    with ``silence`` runs through the sox binary, or, when it is missing, as its gain alone (warned once)."""
    if not effects:
        return wav
    if all(e[0] == "gain" for e in effects):
        return _python_gain(wav, effects)
    if not sox_available():
        _warn_once(f"sox not found: '{effects_key(effects)}' applied as its gain only (no silence trimming), so "
                   f"these numbers are not SUPERB's; install sox (scripts/install_system_deps.sh)")
        return _python_gain(wav, effects)
    return run_sox(wav, effects)


def load_with_effects(path: str | Path, effects: Sequence[Effect]) -> torch.Tensor:
    """The whole file at ``path`` (16 kHz mono float32) after ``effects``; :class:`AudioError` names the file."""
    wav = apply_effects(load_audio(path), effects)
    if wav.numel() == 0:
        raise AudioError(f"audio file {path} is empty after sox {effects_key(effects)}")
    return wav


def _memo_path() -> Path:
    root = os.environ.get("DISTILSUPERB_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "distilsuperb") / "effects_durations.sqlite"


def _ident(path: Path, effects: Sequence[Effect]) -> str:
    st = os.stat(path)
    raw = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{effects_key(effects)}|sox={sox_available()}"
    return hashlib.sha256(raw.encode()).hexdigest()


def durations_after_effects(paths: Sequence[str | Path], effects: Sequence[Effect], workers: int | None = None,
                            memo: str | Path | None = None) -> list[float]:
    """Seconds of each whole file after ``effects`` (ASV's trimmed lengths, as s3prl's ``trimmed_length``,
    ``sv_voxceleb1/dataset.py:45-52``), computed in parallel once and remembered on disk (``memo``, default
    ``$DISTILSUPERB_CACHE/effects_durations.sqlite``) by file identity and chain, as s3prl keeps ``.wav_lengths``.
    A file that cannot be read gets -1.0 (the loader decides; the audit names bad audio)."""
    paths = [Path(p) for p in paths]
    db_path = Path(memo) if memo else _memo_path()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    idents: list[str | None] = []
    for p in paths:
        try:
            idents.append(_ident(p, effects))
        except OSError:
            idents.append(None)
    with sqlite3.connect(db_path, timeout=60) as db:
        db.execute("CREATE TABLE IF NOT EXISTS d (ident TEXT PRIMARY KEY, seconds REAL)")
        known = {}
        wanted = [i for i in idents if i]
        for k in range(0, len(wanted), 900):
            chunk = wanted[k:k + 900]
            rows = db.execute(f"SELECT ident, seconds FROM d WHERE ident IN ({','.join('?' * len(chunk))})", chunk)
            known.update(rows.fetchall())

    def measure(i: int) -> float:
        try:
            return load_with_effects(paths[i], effects).numel() / SAMPLE_RATE
        except AudioError:
            return -1.0

    todo = [i for i, ident in enumerate(idents) if ident and ident not in known]
    if todo:
        log.info("measuring %d files after sox %s (remembered in %s)", len(todo), effects_key(effects), db_path)
        with ThreadPoolExecutor(max_workers=workers or max(1, (os.cpu_count() or 1))) as pool:
            seconds = list(pool.map(measure, todo))
        with sqlite3.connect(db_path, timeout=60) as db:
            db.executemany("INSERT OR REPLACE INTO d VALUES (?, ?)",
                           [(idents[i], s) for i, s in zip(todo, seconds) if s >= 0])
        known.update({idents[i]: s for i, s in zip(todo, seconds)})
    return [known.get(ident, -1.0) if ident else -1.0 for ident in idents]
