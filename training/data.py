"""Unlabelled audio for distillation and pretraining: file discovery, a health scan, seconds-based batches.

Bad files never stop a run: the scan skips unreadable/empty files up front, a file that fails later is dropped from its
batch, and every skipped path is listed (with the reason) in ``skipped_audio.txt`` in the output folder.

Batches are *global*: the sampler yields the same batches whatever the number of processes, and each DDP rank takes
its share of every batch (items ``rank::world``). With losses normalised by the global frame count, one process and
N processes follow the same loss curve.
"""
from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import soundfile as sf
import torch

from common.audio import SAMPLE_RATE, AudioError, check_audio_file, load_audio
from common.folders import scan_tree
from common.io import atomic_write_text

log = logging.getLogger(__name__)
AUDIO_SUFFIXES = (".wav", ".flac")
LIST_SUFFIXES = (".txt", ".lst", ".list", ".tsv")


@dataclass
class DataConfig:
    max_batch_seconds: float = 60.0   # padded seconds per global batch (batch count × longest item)
    max_item_seconds: float = 10.0    # longer files are randomly cropped to this (seeded per epoch and item)
    min_item_seconds: float = 0.5     # shorter files are skipped (listed in the report)
    bucket_size: int = 64             # items sorted by length inside each bucket, so batches pad little
    min_batch_items: int = 2          # smaller (tail) batches are dropped (a rule independent of the number of
                                      # processes, so the batches are the same whatever it is)
    num_workers: int = 0              # DataLoader worker processes decoding audio (s3prl's distiller: 24)
    prefetch_factor: int = 2          # batches each worker loads ahead (with num_workers > 0)


@dataclass
class CollectedAudio:
    """What :func:`collect_audio` found: the files, the ones left out on purpose (``(path, reason)``: macOS ``._``
    companions, folders reached twice through links) and one summary line per folder source (files per top-level
    folder), for the run's log."""

    files: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)


def collect_audio(sources: list[str | Path]) -> CollectedAudio:
    """Expand directories (recursive ``*.wav``/``*.flac``, symbolic links followed, see
    :func:`common.folders.scan_tree`), list files (one path per line, relative to the list's folder) and single
    audio files into one sorted, de-duplicated list. Raises ``ValueError`` naming the source that is none of these,
    or when nothing is found."""
    files: list[Path] = []
    out = CollectedAudio([])
    for src in map(Path, sources):
        if src.is_dir():
            # not only regular files: broken links, FIFOs, ... named *.wav are reported by scan_audio, not hidden
            scan = scan_tree(src, AUDIO_SUFFIXES)
            files += scan.files
            out.skipped += scan.skipped
            out.summaries.append(scan.summary())
        elif src.is_file() and src.suffix.lower() in LIST_SUFFIXES:
            for line in src.read_text(encoding="utf-8-sig").splitlines():
                line = line.strip().split("\t")[0]
                if line and not line.startswith("#"):
                    p = Path(line)
                    files.append(p if p.is_absolute() else src.parent / p)
        elif src.suffix.lower() in AUDIO_SUFFIXES:
            files.append(src)
        else:
            raise ValueError(f"--data {src}: expected a directory, an audio file (.wav/.flac) or a list file "
                             f"({', '.join(LIST_SUFFIXES)}); it is none of these or does not exist")
    first: dict[str, Path] = {}  # real path -> the path it is trained under: a file reached twice trains once
    for path in sorted(set(files)):
        kept = first.setdefault(os.path.realpath(path), path)
        if kept != path:
            out.skipped.append((path, f"same file as {kept} (reached twice, through a link or two sources)"))
    out.files = sorted(first.values())
    if not out.files:
        raise ValueError(f"no audio files (*.wav, *.flac) found in {[str(s) for s in sources]}")
    return out


def collect_audio_files(sources: list[str | Path]) -> list[Path]:
    """The files of :func:`collect_audio` (without what was skipped or the per-folder counts)."""
    return collect_audio(sources).files


@dataclass
class SkipReport:
    """Files left out of training, with the reason; written to ``skipped_audio.txt``."""

    skipped: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str | Path, reason: str) -> None:
        self.skipped.append((str(path), reason))

    def write(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / "skipped_audio.txt"
        lines = [f"# {len(self.skipped)} audio file(s) skipped"] + [f"{p}\t{r}" for p, r in self.skipped]
        atomic_write_text(path, "\n".join(lines) + "\n")
        return path


def scan_audio(files: list[Path], cfg: DataConfig, report: SkipReport) -> list[tuple[Path, int]]:
    """Read each file's header; return ``(path, num_samples at 16 kHz)`` for the usable ones."""
    kept = []
    for path in files:
        try:
            check_audio_file(path)  # before opening: sf.info on a FIFO would block forever
            info = sf.info(str(path))
        except AudioError as e:
            report.add(path, str(e))
            continue
        except Exception as e:  # soundfile raises several types for broken files
            report.add(path, f"unreadable: {e}")
            continue
        seconds = info.frames / info.samplerate if info.samplerate else 0.0
        if info.frames == 0:
            report.add(path, "empty")
        elif seconds < cfg.min_item_seconds:
            report.add(path, f"shorter than min_item_seconds={cfg.min_item_seconds} ({seconds:.2f} s)")
        else:
            kept.append((path, int(round(seconds * SAMPLE_RATE))))
    if report.skipped:
        log.warning("skipped %d of %d audio files (see skipped_audio.txt)", len(report.skipped), len(files))
    if not kept:
        raise ValueError(f"none of the {len(files)} audio files is usable; reasons: {report.skipped[:5]}")
    return kept


def training_audio(sources: list[str | Path], cfg: DataConfig, report: SkipReport) -> list[tuple[Path, int]]:
    """:func:`collect_audio` then :func:`scan_audio`: the usable ``(path, samples)``; what a folder scan left out
    goes into ``report`` too, and the files found per top-level folder are logged (one line per folder source)."""
    collected = collect_audio(sources)
    for line in collected.summaries:
        log.info("audio found in %s", line)
    for path, reason in collected.skipped:
        report.add(path, reason)
    return scan_audio(collected.files, cfg, report)


class UnlabelledAudio(torch.utils.data.Dataset):
    """Items are ``(index, epoch)`` pairs so that the random crop depends only on the seed, epoch and item —
    a resumed run reads exactly the same samples as an uninterrupted one."""

    def __init__(self, entries: list[tuple[Path, int]], cfg: DataConfig, seed: int):
        self.entries, self.cfg, self.seed = entries, cfg, seed
        self.max_samples = int(cfg.max_item_seconds * SAMPLE_RATE)

    def __len__(self) -> int:
        return len(self.entries)

    def cropped_length(self, index: int) -> int:
        return min(self.entries[index][1], self.max_samples)

    def __getitem__(self, key: tuple[int, int] | tuple[int, int, bool]) -> tuple[int, torch.Tensor | None, int, str]:
        """``(item index, waveform or None when unreadable, crop start in samples, error message)``. A key's
        optional third element marks a stand-in item (see :meth:`SecondsBatchSampler.iterate`); it reads the same."""
        index, epoch = key[:2]
        path, num = self.entries[index]
        start = 0
        if num > self.max_samples:
            start = random.Random(f"{self.seed}-{epoch}-{index}").randrange(num - self.max_samples + 1)
        try:
            wav = load_audio(path, start=start / SAMPLE_RATE,
                             duration=self.max_samples / SAMPLE_RATE if num > self.max_samples else None)
        except AudioError as e:
            return index, None, start, str(e)
        return index, wav, start, ""


def collate(items: list[tuple[int, torch.Tensor | None, int, str]], weight: float = 1.0) -> dict:
    """Pad to ``wav [batch, samples]`` with ``wav_lengths [batch]``, the items' dataset ``indices [batch]`` and crop
    ``starts [batch]`` (samples; pretraining aligns its frame labels with them); failed items go to ``failed``.
    ``weight`` (0 for a stand-in share, else 1) multiplies this rank's loss and frame count in the loop."""
    good = [(i, w, s) for i, w, s, _ in items if w is not None]
    failed = [(i, msg) for i, w, _, msg in items if w is None]
    lengths = torch.tensor([w.numel() for _, w, _ in good], dtype=torch.long)
    wav = torch.zeros(len(good), int(lengths.max()) if good else 0)
    for row, (_, w, _) in enumerate(good):
        wav[row, : w.numel()] = w
    return {"wav": wav, "wav_lengths": lengths, "indices": torch.tensor([i for i, _, _ in good], dtype=torch.long),
            "starts": torch.tensor([s for _, _, s in good], dtype=torch.long), "failed": failed,
            "weight": weight}


class SecondsBatchSampler:
    """Global batches bounded by padded seconds, rebuilt per epoch from ``seed + epoch``.

    Each batch holds items of similar length (sorted inside shuffled buckets), so padding stays small. A rank's
    share of a global batch is ``batch[rank::world]``. ``start_batch`` resumes mid-epoch. Any number of ranks
    works: a rank past the batch's items (more GPUs than items, e.g. 16 GPUs on the recipe's 15-item batches) gets
    a stand-in share, one item of the batch marked as such, whose loss and frames count zero (DDP needs every rank
    to run forward and backward; the gradients stay those of the real items).
    """

    def __init__(self, dataset: UnlabelledAudio, cfg: DataConfig, seed: int, rank: int = 0, world: int = 1):
        self.dataset, self.cfg, self.seed, self.rank, self.world = dataset, cfg, seed, rank, world
        if cfg.min_batch_items < 1:
            raise ValueError(f"data.min_batch_items must be >= 1, got {cfg.min_batch_items}")
        longest = max(dataset.cropped_length(i) for i in range(len(dataset))) / SAMPLE_RATE
        if longest * cfg.min_batch_items > cfg.max_batch_seconds:
            raise ValueError(f"data.max_batch_seconds={cfg.max_batch_seconds} cannot hold {cfg.min_batch_items} "
                             f"item(s) of {longest:.1f} s; raise it or lower data.max_item_seconds")

    def global_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1000003 + epoch)
        order = list(range(len(self.dataset)))
        rng.shuffle(order)
        limit = self.cfg.max_batch_seconds * SAMPLE_RATE
        batches: list[list[int]] = []
        for b in range(0, len(order), self.cfg.bucket_size):
            bucket = sorted(order[b: b + self.cfg.bucket_size], key=self.dataset.cropped_length)
            current: list[int] = []
            for idx in bucket:
                longest = max([self.dataset.cropped_length(i) for i in current + [idx]])
                if current and longest * (len(current) + 1) > limit:
                    batches.append(current)
                    current = []
                current.append(idx)
            if current:
                batches.append(current)
        # every rank needs at least one item per batch: drop (tail) batches below min_batch_items, a rule that
        # does not depend on the number of processes
        batches = [bt for bt in batches if len(bt) >= self.cfg.min_batch_items]
        if not batches:
            raise ValueError(f"no batch reaches data.min_batch_items={self.cfg.min_batch_items}: too few files "
                             "or max_batch_seconds too small")
        rng.shuffle(batches)
        return batches

    def iterate(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[int, list[tuple]]]:
        """Yield ``(batch_index, this rank's [(item, epoch), ...])`` from ``start_batch`` to the epoch's end; a
        stand-in share is ``[(item, epoch, True)]`` (see the class docstring)."""
        for b, batch in enumerate(self.global_batches(epoch)):
            if b >= start_batch:
                share = batch[self.rank:: self.world]
                yield b, [(i, epoch) for i in share] if share else [(batch[self.rank % len(batch)], epoch, True)]


def _collate_share(items: list) -> dict:
    return collate([item[:4] for item in items], weight=0.0 if items and all(item[4] for item in items) else 1.0)


class _ShareDataset(torch.utils.data.Dataset):
    """The dataset's items with their stand-in mark appended (a picklable wrapper, for worker processes)."""

    def __init__(self, dataset: UnlabelledAudio):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple) -> tuple:
        return (*self.dataset[key], len(key) > 2)


def epoch_loader(dataset: UnlabelledAudio, sampler: SecondsBatchSampler, epoch: int, start_batch: int,
                 cfg: DataConfig, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """DataLoader over this rank's shares of the epoch's batches from ``start_batch`` on (batch dicts from
    :func:`collate`): ``cfg.num_workers`` processes decode audio, each ``cfg.prefetch_factor`` batches ahead;
    ``pin_memory`` (for a CUDA device) puts batches in page-locked memory so the copy to the GPU is asynchronous."""
    shares = [items for _, items in sampler.iterate(epoch, start_batch)]
    extra = {"prefetch_factor": cfg.prefetch_factor} if cfg.num_workers > 0 else {}
    return torch.utils.data.DataLoader(_ShareDataset(dataset), batch_sampler=shares, collate_fn=_collate_share,
                                       num_workers=cfg.num_workers, pin_memory=pin_memory, **extra)
