"""Reading audio as 16 kHz mono float32 tensors, with errors that name the file."""
from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SAMPLE_RATE = 16000
log = logging.getLogger(__name__)
_warned_resample: set[int] = set()


class AudioError(ValueError):
    """An audio file cannot be used: unreadable, empty or malformed."""


def check_audio_file(path: str | Path) -> None:
    """Raise :class:`AudioError` naming ``path`` unless it is a non-empty regular file (symlinks followed).

    Checked before any audio library opens the file: opening a FIFO named ``*.wav`` blocks forever, and a missing
    file, a broken symlink and a symlink loop each deserve their own words.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise AudioError(f"audio file {path} is a broken symbolic link (to {os.readlink(path)})") from None
        raise AudioError(f"audio file {path} does not exist") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AudioError(f"audio file {path} is a symbolic link loop") from None
        raise AudioError(f"cannot open audio file {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a directory" if stat.S_ISDIR(st.st_mode)
                else "a device or socket")
        raise AudioError(f"audio file {path} is {kind}, not a regular file")
    if st.st_size == 0:
        raise AudioError(f"audio file {path} is empty (0 bytes)")


def load_audio(path: str | Path, start: float = 0.0, duration: float | None = None,
               sample_rate: int = SAMPLE_RATE, channel: int | None = None) -> torch.Tensor:
    """Load ``path`` (optionally a ``[start, start+duration)`` slice in seconds) as a 1-D float32 tensor.

    ``channel``: the 0-based channel to read (a speaker's side of a stereo conversation, as lhotse's
    ``Cut.channel``); None downmixes every channel (their mean). Other sample rates are resampled with torchaudio
    (said once per rate). Raises :class:`AudioError` naming the file when it is missing, not a regular file (checked
    first: a FIFO is never opened), unreadable, empty, holds NaN/inf, or has no channel ``channel``.
    """
    path = Path(path)
    check_audio_file(path)
    try:
        info = sf.info(str(path))
        first = int(round(start * info.samplerate))
        frames = -1 if duration is None else int(round(duration * info.samplerate))
        wav, sr = sf.read(str(path), start=first, frames=frames, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types; all mean the same to the caller
        raise AudioError(f"cannot read audio file {path}: {e}") from None
    if wav.shape[0] == 0:
        raise AudioError(f"audio file {path} is empty (or the requested slice is)")
    if channel is not None:
        if not 0 <= channel < wav.shape[1]:
            raise AudioError(f"audio file {path} has {wav.shape[1]} channel(s); channel {channel} was asked for "
                             f"(0-based, expected 0..{wav.shape[1] - 1})")
        wav = wav[:, channel]
    else:
        wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if not np.isfinite(wav).all():
        raise AudioError(f"audio file {path} contains NaN or inf samples")
    out = torch.from_numpy(np.ascontiguousarray(wav))
    if sr != sample_rate:
        import torchaudio.functional as AF

        if sr not in _warned_resample:
            _warned_resample.add(sr)
            log.warning("resampling audio from %d Hz to %d Hz (first seen in %s)", sr, sample_rate, path)
        out = AF.resample(out, sr, sample_rate)
    return out


def audio_duration(path: str | Path) -> float:
    """Duration of an audio file in seconds, from its header.

    An unreadable file gives 0.0 instead of raising, so that a loader can list it: the engine reports it
    by name when it loads the audio (or skips and records it with ``--skip-bad-audio``).
    """
    try:
        check_audio_file(path)  # before opening: sf.info on a FIFO would block forever
        info = sf.info(str(path))
    except AudioError:
        return 0.0
    except Exception:  # soundfile raises several types for the same problem; the engine reports it later
        return 0.0
    return info.frames / info.samplerate


def require_samples(wav: torch.Tensor, min_samples: int, path: str | Path, utterance: str = "") -> torch.Tensor:
    """``wav`` if it has at least ``min_samples`` samples (an upstream's one frame), else an :class:`AudioError`
    naming the file (a truncated file ends up here too: its header promises more than it holds)."""
    if wav.numel() < min_samples:
        who = f" (utterance {utterance})" if utterance else ""
        raise AudioError(f"audio file {path}{who}: {wav.numel()} samples is shorter than one frame of the upstream "
                         f"({min_samples} samples at 16 kHz)")
    return wav


def write_audio(path: str | Path, wav: torch.Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM (FLAC when the suffix says so), atomically."""
    from .io import atomic_path

    path = Path(path)
    data = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, sample_rate, subtype="PCM_16", format=fmt)
