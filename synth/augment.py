"""Acoustic degradations that keep the corpus from being trivially clean: coloured noise at a random SNR and
reverberation from an exponentially decaying noise impulse response. All functions take a ``numpy`` Generator, so
a fixed per-utterance seed gives identical output."""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import scipy.fft

from common.audio import SAMPLE_RATE

NOISE_COLOURS = ("white", "pink", "brown", "blue", "hum")
NOISE_FLOOR_SNR_DB = (35.0, 50.0)


@dataclasses.dataclass(frozen=True)
class Degradation:
    """How likely each degradation is for one utterance, and the SNR range of the added noise (dB)."""

    noise_prob: float = 0.7
    snr_db: tuple[float, float] = (5.0, 30.0)
    reverb_prob: float = 0.3
    rt60: tuple[float, float] = (0.15, 0.6)
    channel_prob: float = 0.0  # chance of a random microphone/channel colouring (smooth EQ of up to ±8 dB)


def coloured_noise(samples: int, rng: np.random.Generator, colour: str) -> np.ndarray:
    """Unit-RMS noise ``[samples]`` with a 1/f^k spectrum (white, pink, brown, blue) or mains hum plus white noise."""
    if colour == "hum":
        t = np.arange(samples) / SAMPLE_RATE
        f0 = rng.choice([50.0, 60.0])
        hum = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 6))
        noise = hum + 0.3 * rng.standard_normal(samples)
    else:
        exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0, "blue": -1.0}[colour]
        # shaped at an FFT-friendly length, then cut: a length with large prime factors made these FFTs a fifth of
        # the corpus build time
        n = scipy.fft.next_fast_len(samples, real=True)
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
        spectrum *= 1.0 / np.maximum(freqs, 20.0) ** (exponent / 2)
        noise = np.fft.irfft(spectrum, n=n)[:samples]
    noise = noise.astype(np.float64)
    return (noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)).astype(np.float32)


def add_noise(wav: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Mix ``noise`` (same length) into ``wav`` so that the speech-to-noise power ratio is ``snr_db``."""
    power = float(np.mean(wav.astype(np.float64) ** 2)) + 1e-10
    scale = np.sqrt(power / (10 ** (snr_db / 10)) / (float(np.mean(noise.astype(np.float64) ** 2)) + 1e-12))
    return (wav + scale * noise).astype(np.float32)


def reverberate(wav: np.ndarray, rng: np.random.Generator, rt60: float) -> np.ndarray:
    """Convolve with a direct path plus an exponentially decaying noise tail (60 dB decay after ``rt60`` s)."""
    length = int(rt60 * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    ir = rng.standard_normal(length) * np.exp(-6.908 * t / rt60) * rng.uniform(0.2, 0.5)
    ir[0] = 1.0
    n = len(wav) + length - 1
    size = 1 << (n - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(wav, size) * np.fft.rfft(ir, size), size)[: len(wav)]
    return (out * np.sqrt(np.mean(wav ** 2) / (np.mean(out ** 2) + 1e-12))).astype(np.float32)


def random_channel(wav: np.ndarray, rng: np.random.Generator, max_db: float = 8.0) -> np.ndarray:
    """Colour ``wav`` with a smooth random frequency response: gains drawn at 8 log-spaced frequencies, interpolated."""
    size = 1 << (len(wav) - 1).bit_length()
    freqs = np.fft.rfftfreq(size, 1.0 / SAMPLE_RATE)
    anchors = np.geomspace(50.0, SAMPLE_RATE / 2, 8)
    gain_db = np.interp(np.log(np.maximum(freqs, 50.0)), np.log(anchors), rng.uniform(-max_db, max_db, 8))
    out = np.fft.irfft(np.fft.rfft(wav, size) * 10 ** (gain_db / 20), size)[: len(wav)]
    return out.astype(np.float32)


def degrade(wav: np.ndarray, rng: np.random.Generator, spec: Degradation) -> np.ndarray:
    """Apply reverberation and/or noise as ``spec`` says (each drawn independently).

    Utterances that draw no noise still get a faint noise floor (SNR 35-50 dB): TTS pauses are exact zeros, which
    would make silence trivially detectable.
    """
    if rng.random() < spec.channel_prob:
        wav = random_channel(wav, rng)
    if rng.random() < spec.reverb_prob:
        wav = reverberate(wav, rng, rng.uniform(*spec.rt60))
    noisy = rng.random() < spec.noise_prob
    colour = NOISE_COLOURS[rng.integers(len(NOISE_COLOURS))] if noisy else "white"
    snr = rng.uniform(*spec.snr_db) if noisy else rng.uniform(*NOISE_FLOOR_SNR_DB)
    return add_noise(wav, coloured_noise(len(wav), rng, colour), snr)


def normalise_peak(wav: np.ndarray, rng: np.random.Generator, low: float = 0.3, high: float = 0.9) -> np.ndarray:
    """Scale to a random peak level in ``[low, high]`` (recording level varies; 16-bit output never clips)."""
    peak = float(np.max(np.abs(wav))) + 1e-9
    return (wav * (rng.uniform(low, high) / peak)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Session:
    """The recording set-up that one session's utterances share: a microphone/room frequency response and a
    recording gain, both drawn from the session's own ``seed``.

    A session is what a real corpus records in one go: a VoxCeleb video, a Speech Commands or Fluent Speech
    Commands contributor's own device, a LibriSpeech chapter, an IEMOCAP session, one mixture. It is never a label,
    so level and channel vary independently of what a task predicts, as they do in real recordings (a speaker's
    videos differ in microphone; an emotion is recorded at every gain). On top, each utterance gets its own gain
    jitter (dB, drawn from the utterance's generator). Gains never exceed 0 dB, so peak levels stay below 1.
    """

    seed: int
    channel_db: float = 8.0                        # largest |gain| of the smooth frequency response (dB)
    gain_db: tuple[float, float] = (-18.0, 0.0)    # the session's recording gain (dB), uniform
    jitter_db: tuple[float, float] = (-6.0, 0.0)   # each utterance's own gain on top (dB), uniform

    @staticmethod
    def of(corpus_seed: int, task: str, name: str, **settings) -> Session:
        """The session ``name`` of ``task`` in the corpus of ``corpus_seed`` (the same in every process)."""
        digest = hashlib.sha256(f"session/{corpus_seed}/{task}/{name}".encode()).digest()
        return Session(int.from_bytes(digest[:8], "little"), **settings)

    def record(self, wav: np.ndarray, rng: np.random.Generator, level: tuple[float, float]) -> np.ndarray:
        """``wav`` through the session's channel, peak-normalised to a random level in ``level`` (as
        :func:`normalise_peak`), then scaled by the session's gain plus the utterance's jitter."""
        session_rng = np.random.default_rng(self.seed)
        wav = random_channel(wav, session_rng, self.channel_db)
        gain_db = session_rng.uniform(*self.gain_db) + rng.uniform(*self.jitter_db)
        return (normalise_peak(wav, rng, *level) * 10 ** (gain_db / 20)).astype(np.float32)


def trim_silence(wav: np.ndarray, threshold: float = 0.02, margin: int = 800) -> np.ndarray:
    """Cut leading and trailing samples quieter than ``threshold`` × peak, keeping ``margin`` samples around speech."""
    loud = np.flatnonzero(np.abs(wav) > threshold * (np.max(np.abs(wav)) + 1e-9))
    if loud.size == 0:
        return wav
    return wav[max(0, loud[0] - margin): loud[-1] + margin]
