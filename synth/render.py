"""Synthesis jobs and the parallel, resumable runner that turns them into audio files.

A job names its output file (relative to the corpus root) and everything needed to render it; all randomness comes
from a generator seeded by ``(seed, path)``, so a job renders to the same bytes in any process and any order. Each
finished job's small JSON result (durations, phones, segment times) is appended to ``.synth/results.jsonl`` with
the job's fingerprint; a re-run skips jobs whose file exists and whose recorded fingerprint still matches.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from common.audio import SAMPLE_RATE, write_audio

from .augment import Degradation, Session, coloured_noise, degrade, normalise_peak, trim_silence
from .phones import espeak_to_cmu
from .voices import Speaker, Style, synthesize

STATE_DIR = ".synth"


def job_rng(seed: int, path: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{path}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def jittered(style: Style, rng: np.random.Generator) -> Style:
    """Small per-utterance variation of rate, pitch and volume around ``style``."""
    return dataclasses.replace(style, rate=style.rate * float(rng.uniform(0.92, 1.08)),
                               pitch=style.pitch + int(rng.integers(-4, 5)),
                               volume=max(10, style.volume + int(rng.integers(-10, 11))))


def _ms(seconds: float) -> float:
    """Seconds rounded down to the millisecond, so a written end time never passes the end of the audio."""
    return math.floor(seconds * 1000) / 1000


def _recorded(wav: np.ndarray, rng: np.random.Generator, session: Session | None,
              level: tuple[float, float]) -> np.ndarray:
    """The degraded ``wav`` as its session records it, or peak-normalised to a random level without a session."""
    return session.record(wav, rng, level) if session else normalise_peak(wav, rng, *level)


def _pause(rng: np.random.Generator, low: float = 0.05, high: float = 0.25) -> np.ndarray:
    return np.zeros(int(rng.uniform(low, high) * SAMPLE_RATE), dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class SpeechJob:
    """One speaker saying ``chunks`` one after another (short pauses between), optionally degraded.

    Result: ``duration`` (s), ``chunks`` ([start, end] of each chunk in s), and ``phones`` (CMU phones, espeak-ng
    speakers only) when ``phonemes`` is set. With ``clip_seconds`` the trimmed speech is placed at a random offset in
    a clip of exactly that length (cut if longer). Speech shorter than ``min_seconds`` is padded with silence on
    both sides (before noise is added, so the padding is not digital silence).
    """

    path: str
    speaker: Speaker
    chunks: tuple[str, ...]
    style: Style = Style()
    degradation: Degradation = Degradation()
    phonemes: bool = False
    clip_seconds: float | None = None
    min_seconds: float = 0.0
    level: tuple[float, float] = (0.3, 0.9)  # range of the random peak level
    session: Session | None = None  # the recording set-up shared with other utterances (channel and gain)

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        style = jittered(self.style, rng)
        pieces, spans, phones, t = [], [], [], 0.0
        for i, text in enumerate(self.chunks):
            audio, phonemes = synthesize(self.speaker, text, style)
            if len(self.chunks) > 1 or self.clip_seconds:
                audio = trim_silence(audio)
            if i:
                pieces.append(_pause(rng))
                t += len(pieces[-1]) / SAMPLE_RATE
            pieces.append(audio)
            spans.append([_ms(t), _ms(t + len(audio) / SAMPLE_RATE)])
            t += len(audio) / SAMPLE_RATE
            if self.phonemes and phonemes is not None:
                phones += espeak_to_cmu(phonemes, where=self.path)
        wav = np.concatenate(pieces)
        if self.clip_seconds:
            n = int(round(self.clip_seconds * SAMPLE_RATE))
            wav = wav[:n]
            offset = int(rng.integers(0, n - len(wav) + 1))
            wav = np.pad(wav, (offset, n - len(wav) - offset))
            spans = [[_ms(offset / SAMPLE_RATE + a), _ms(min(self.clip_seconds, offset / SAMPLE_RATE + b))]
                     for a, b in spans]
        short = int(self.min_seconds * SAMPLE_RATE) - len(wav)
        if short > 0:
            before = int(rng.integers(0, short + 1))
            wav = np.pad(wav, (before, short - before))
            spans = [[_ms(a + before / SAMPLE_RATE), _ms(b + before / SAMPLE_RATE)] for a, b in spans]
        wav = _recorded(degrade(wav, rng, self.degradation), rng, self.session, self.level)
        result = {"duration": round(len(wav) / SAMPLE_RATE, 4), "chunks": spans}
        if self.phonemes and self.speaker.has_phonemes:
            result["phones"] = phones
        return wav, result


@dataclasses.dataclass(frozen=True)
class NoiseJob:
    """A long background-noise recording of one colour (``_background_noise_``-style)."""

    path: str
    seconds: float
    colour: str

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        wav = coloured_noise(int(self.seconds * SAMPLE_RATE), rng, self.colour)
        return normalise_peak(wav, rng, 0.2, 0.6), {"duration": self.seconds}


@dataclasses.dataclass(frozen=True)
class Turn:
    speaker: Speaker
    text: str


@dataclasses.dataclass(frozen=True)
class MixJob:
    """A two-speaker conversation: turns alternate, each one starting before the previous ends so that 10-30 % of
    the speech overlaps. Result: ``duration`` and ``segments`` ([speaker name, start, end] per turn)."""

    path: str
    turns: tuple[Turn, ...]
    overlap: tuple[float, float] = (0.1, 0.3)
    degradation: Degradation = Degradation(noise_prob=0.5, reverb_prob=0.2)
    session: Session | None = None

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        audios = [trim_silence(synthesize(t.speaker, t.text, jittered(Style(), rng))[0]) for t in self.turns]
        gains = {t.speaker.name: float(rng.uniform(0.6, 1.0)) for t in self.turns}
        total = sum(len(a) for a in audios)
        # Overlapped samples are shared out over the turn boundaries, each boundary taking at most 60 % of the
        # shorter neighbour.
        target = float(rng.uniform(*self.overlap)) * total
        starts, end, t0 = [], 0, 0
        for i, audio in enumerate(audios):
            if i:
                share = target / (len(audios) - 1)
                t0 = max(0, end - int(min(share, 0.6 * min(len(audio), len(audios[i - 1])))))
            starts.append(t0)
            end = t0 + len(audio)
            t0 = end
        lead = int(rng.uniform(0.2, 0.8) * SAMPLE_RATE)
        wav = np.zeros(lead + end + int(rng.uniform(0.2, 0.8) * SAMPLE_RATE), dtype=np.float32)
        segments = []
        for turn, audio, start in zip(self.turns, audios, starts):
            audio = audio / (np.sqrt(np.mean(audio ** 2)) + 1e-9) * gains[turn.speaker.name]
            wav[lead + start: lead + start + len(audio)] += audio
            segments.append([turn.speaker.name, _ms((lead + start) / SAMPLE_RATE),
                             _ms((lead + start + len(audio)) / SAMPLE_RATE)])
        wav = _recorded(degrade(wav, rng, self.degradation), rng, self.session, (0.3, 0.9))
        return wav, {"duration": round(len(wav) / SAMPLE_RATE, 4), "segments": segments}


Job = SpeechJob | NoiseJob | MixJob


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core already; more threads only contend


def _render_one(args: tuple[Job, str, int]) -> tuple[str, dict]:
    job, root, seed = args
    wav, result = job.render(job_rng(seed, job.path))
    write_audio(Path(root) / job.path, wav)
    return job.path, result


def fingerprint(job: Job) -> str:
    """Identity of a job's content: a changed plan (other text, speaker, settings) renders the file again."""
    return hashlib.sha256(repr(job).encode()).hexdigest()[:16]


def _load_state(path: Path) -> dict[str, tuple[str, dict]]:
    """``{path: (job fingerprint, result)}`` of the jobs finished so far."""
    done: dict[str, tuple[str, dict]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                done[record["path"]] = (record["key"], record["result"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by an interrupted run; that job is simply rendered again
    return done


def run_jobs(jobs: Iterable[Job], root: Path, seed: int, workers: int,
             progress: Callable[[int, int], None] | None = None) -> dict[str, dict]:
    """Render every job not already done (file and result present); return ``{path: result}`` for all jobs."""
    jobs = list(jobs)
    paths = [j.path for j in jobs]
    if len(set(paths)) != len(paths):
        dupes = sorted({p for p in paths if paths.count(p) > 1})[:5]
        raise ValueError(f"two synthesis jobs write the same file: {dupes}")
    state_file = root / STATE_DIR / "results.jsonl"
    state_file.parent.mkdir(parents=True, exist_ok=True)
    done = _load_state(state_file)
    keys = {j.path: fingerprint(j) for j in jobs}
    todo = [j for j in jobs if not (done.get(j.path, ("",))[0] == keys[j.path] and (root / j.path).exists())]
    if todo:
        with open(state_file, "a", encoding="utf-8") as state:
            def record(path: str, result: dict, count: int) -> None:
                done[path] = (keys[path], result)
                state.write(json.dumps({"path": path, "key": keys[path], "result": result}) + "\n")
                state.flush()
                if progress:
                    progress(count, len(todo))

            args = [(j, str(root), seed) for j in todo]
            if workers <= 1 or len(todo) < 8:
                for count, a in enumerate(args, 1):
                    record(*_render_one(a), count)
            else:
                with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker) as pool:
                    for count, (path, result) in enumerate(pool.imap_unordered(_render_one, args, chunksize=4), 1):
                        record(path, result, count)
            os.fsync(state.fileno())
    return {p: done[p][1] for p in paths}
