"""Synthetic speakers and the two TTS engines (espeak-ng and flite) that give them a voice.

A speaker is an engine voice plus fixed prosody (rate, pitch, pitch range). espeak-ng speakers combine its English
accents with voice variants; flite speakers are its bundled voices with a duration stretch. Each synthesis returns
16 kHz mono float32 audio and, for espeak-ng, the phonemes it spoke.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import random
import shutil
import subprocess
import tempfile

import numpy as np
import soundfile as sf
import torch
import torchaudio

from common.audio import SAMPLE_RATE

ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                  "en-us-nyc")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "croak", "klatt")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FEMALE_VOICES = {"f1", "f2", "f3", "f4", "f5", "slt"}
INSTALL_HINT = "install them with: apt-get install -y espeak-ng flite (or run scripts/install_system_deps.sh)"


class SynthesisError(RuntimeError):
    """A TTS engine failed or is missing."""


@dataclasses.dataclass(frozen=True)
class Speaker:
    """One synthetic speaker. ``name`` is a short stable id (``s000``…); ``voice`` is what the engine is given."""

    name: str
    engine: str  # "espeak-ng" or "flite"
    voice: str  # espeak-ng "accent+variant", or a flite voice name
    gender: str  # "f" or "m"
    rate: float  # espeak-ng words per minute; flite uses 170 / rate as its duration stretch
    pitch: int  # espeak-ng base pitch 0-99 (flite: mean F0 = 60 + 2 * pitch Hz)
    pitch_range: int  # espeak-ng SSML prosody range in percent

    @property
    def has_phonemes(self) -> bool:
        return self.engine == "espeak-ng"


@dataclasses.dataclass(frozen=True)
class Style:
    """Per-utterance prosody relative to the speaker: rate and range factors, pitch offset, volume in percent."""

    rate: float = 1.0
    pitch: int = 0
    pitch_range: float = 1.0
    volume: int = 100


def check_engines() -> None:
    """Raise a clear error naming the missing engines and how to install them."""
    missing = [e for e in ("espeak-ng", "flite") if shutil.which(e) is None]
    if missing:
        raise SynthesisError(f"the offline corpus needs the TTS engine(s) {', '.join(missing)}; {INSTALL_HINT}")


@functools.lru_cache(maxsize=1)
def available_flite_voices() -> tuple[str, ...]:
    out = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=True).stdout
    listed = set(out.replace("Voices available:", "").split())
    return tuple(v for v in FLITE_VOICES if v in listed)


def build_speakers(seed: int) -> list[Speaker]:
    """All speakers, in a fixed order for a given seed: every espeak-ng accent × variant, then the flite voices."""
    rng = random.Random(f"speakers-{seed}")
    speakers = []
    for accent in ESPEAK_ACCENTS:
        for variant in ESPEAK_VARIANTS:
            female = variant in FEMALE_VOICES
            speakers.append(Speaker(
                name="", engine="espeak-ng", voice=f"{accent}+{variant}", gender="f" if female else "m",
                rate=round(rng.uniform(135, 195), 1), pitch=rng.randint(45, 80) if female else rng.randint(20, 60),
                pitch_range=rng.randint(60, 160)))
    for voice in available_flite_voices():
        for stretch in (0.9, 1.1):
            speakers.append(Speaker(
                name="", engine="flite", voice=voice, gender="f" if voice in FEMALE_VOICES else "m",
                rate=round(170 / stretch, 1),
                pitch=rng.randint(40, 60) if voice in FEMALE_VOICES else rng.randint(15, 40),
                pitch_range=100))
    return [dataclasses.replace(s, name=f"s{i:03d}") for i, s in enumerate(speakers)]


@functools.lru_cache(maxsize=None)
def _resampler(sr: int) -> torchaudio.transforms.Resample:
    """torchaudio's sinc resampler; the transform keeps its kernel (building it costs far more than applying it)."""
    return torchaudio.transforms.Resample(sr, SAMPLE_RATE)


def _resample(wav: np.ndarray, sr: int) -> np.ndarray:
    if sr == SAMPLE_RATE:
        return wav.astype(np.float32)
    with torch.no_grad():
        return _resampler(sr)(torch.from_numpy(wav.astype(np.float32))).numpy()


def _run(cmd: list[str], what: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SynthesisError(f"{cmd[0]} is not installed; {INSTALL_HINT}") from None
    if proc.returncode != 0:
        raise SynthesisError(f"{cmd[0]} failed for {what}: {proc.stderr.strip()[:300]}")
    return proc.stdout


def synthesize(speaker: Speaker, text: str, style: Style = Style()) -> tuple[np.ndarray, str | None]:
    """Speak ``text`` (lower-case words).

    Returns (audio ``[samples]`` float32 at 16 kHz, the phonemes espeak-ng spoke or None for flite).
    """
    fd, out_wav = tempfile.mkstemp(prefix="synth-", suffix=".wav")
    os.close(fd)
    try:
        return _synthesize(speaker, text, style, out_wav)
    finally:
        os.unlink(out_wav)


def _synthesize(speaker: Speaker, text: str, style: Style, out_wav: str) -> tuple[np.ndarray, str | None]:
    what = f"speaker {speaker.name} ({speaker.voice}) saying {text!r}"
    if speaker.engine == "espeak-ng":
        rate = max(80, int(round(speaker.rate * style.rate)))
        pitch = min(99, max(0, speaker.pitch + style.pitch))
        pitch_range = max(0, int(round(speaker.pitch_range * style.pitch_range)))
        ssml = (f'<speak><prosody range="{pitch_range}%" volume="{style.volume}%">{text}</prosody></speak>')
        phonemes = _run(["espeak-ng", "-v", speaker.voice, "-s", str(rate), "-p", str(pitch), "-m", "-x",
                         "--sep=_", "-w", out_wav, ssml], what)
    elif speaker.engine == "flite":
        stretch = 170.0 / (speaker.rate * style.rate)
        f0 = 60 + 2 * min(99, max(0, speaker.pitch + style.pitch))
        _run(["flite", "-voice", speaker.voice, "--setf", f"duration_stretch={stretch:.3f}", "--setf",
              f"int_f0_target_mean={f0}", "-t", text, "-o", out_wav], what)
        phonemes = None
    else:
        raise SynthesisError(f"unknown engine {speaker.engine!r} for speaker {speaker.name}")
    wav, sr = sf.read(out_wav, dtype="float32", always_2d=True)
    if wav.shape[0] == 0:
        raise SynthesisError(f"empty audio for {what}")
    audio = _resample(wav[:, 0], sr)
    if speaker.engine == "flite":
        audio = audio * (style.volume / 100.0)
    return audio, phonemes
