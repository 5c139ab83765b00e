"""Libri2Mix Kaldi data dirs for diarization (as SUPERB prepares them): recordings, speaker segments, reference RTTM.

``Libri2Mix/kaldi/{train,dev,test}/`` holds ``wav.scp`` (``<reco> <path>``, relative paths relative to that dir),
``segments`` (``<utt> <reco> <start> <end>``), ``utt2spk`` (``<utt> <spk>``), ``reco2dur`` (``<reco> <seconds>``)
and ``rttm`` (``SPEAKER <reco> 1 <tbeg> <tdur> <NA> <NA> <spk> <NA> <NA>``). Every malformed line raises an error
naming its file and line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common import datasets
from tasks.audit import id_mismatches
from tasks.base import DatasetNotFoundError
from tasks.listfile import ListFileError, parse_float, read_fields

KALDI_DIR = Path(datasets.LIBRI2MIX) / "kaldi"


@dataclass
class Recording:
    id: str
    path: Path
    duration: float
    turns: list[tuple[str, float, float]] = field(default_factory=list)  # (speaker, start_s, end_s), sorted

    @property
    def speakers(self) -> list[str]:
        return sorted({t[0] for t in self.turns})


def read_rttm(path: Path) -> dict[str, list[tuple[str, float, float]]]:
    """Recording → sorted (speaker, start, end) from the ``SPEAKER`` lines of an RTTM file."""
    out: dict[str, list[tuple[str, float, float]]] = {}
    for lineno, fields, raw in read_fields(path, 1, None):
        if fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise ListFileError(path, lineno, "expected 'SPEAKER <reco> <chnl> <tbeg> <tdur> <NA> <NA> <spk> ...'",
                                raw)
        start = parse_float(fields[3], path, lineno, "tbeg", raw)
        dur = parse_float(fields[4], path, lineno, "tdur", raw)
        if start < 0 or dur < 0:
            raise ListFileError(path, lineno, "tbeg and tdur must not be negative", raw)
        out.setdefault(fields[1], []).append((fields[7], start, start + dur))
    return {k: sorted(v, key=lambda t: (t[1], t[0])) for k, v in out.items()}


def _read_map(path: Path, what: str) -> dict[str, tuple[int, str]]:
    """``<key> <value>`` lines → key → (line number, value); duplicate keys are errors."""
    out: dict[str, tuple[int, str]] = {}
    for lineno, fields, raw in read_fields(path, 2, 2, what):
        if fields[0] in out:
            raise ListFileError(path, lineno, f"duplicate key {fields[0]!r} (first on line {out[fields[0]][0]})", raw)
        out[fields[0]] = (lineno, fields[1])
    return out


def load_kaldi_dir(kaldi_dir: Path) -> list[Recording]:
    """Recordings of one Kaldi data dir with their speaker turns (from ``segments`` + ``utt2spk``)."""
    if not kaldi_dir.is_dir():
        raise DatasetNotFoundError(f"Kaldi data dir {kaldi_dir} not found (see docs/DATA_LAYOUTS.md, SD)")
    for name in ("wav.scp", "segments", "utt2spk", "reco2dur"):
        if not (kaldi_dir / name).is_file():
            raise DatasetNotFoundError(f"{kaldi_dir / name} not found (a Kaldi dir needs wav.scp, segments, "
                                       "utt2spk, reco2dur, rttm)")
    recordings: dict[str, Recording] = {}
    durations = _read_map(kaldi_dir / "reco2dur", "'<reco> <seconds>'")
    absent = []  # every missing audio file, not only the first
    for reco, (lineno, rel) in _read_map(kaldi_dir / "wav.scp", "'<reco> <path>'").items():
        path = Path(rel) if Path(rel).is_absolute() else kaldi_dir / rel
        if not path.is_file():
            absent.append(str(ListFileError(kaldi_dir / "wav.scp", lineno, f"audio {path} not found")))
            continue
        if reco not in durations:
            raise ListFileError(kaldi_dir / "wav.scp", lineno, f"recording {reco!r} has no line in reco2dur")
        d_line, d_value = durations[reco]
        duration = parse_float(d_value, kaldi_dir / "reco2dur", d_line, "duration")
        recordings[reco] = Recording(reco, path, duration)
    if absent:
        raise ValueError(f"{len(absent)} audio file(s) of {kaldi_dir / 'wav.scp'} not found (only plain paths are "
                         "supported, not Kaldi pipes): " + "; ".join(absent[:40])
                         + (f"; ... and {len(absent) - 40} more" if len(absent) > 40 else ""))
    utt2spk = _read_map(kaldi_dir / "utt2spk", "'<utt> <spk>'")
    seg_path = kaldi_dir / "segments"
    seg_lines: dict[str, int] = {}
    for lineno, (utt, reco, start, end), raw in read_fields(seg_path, 4, 4, "'<utt> <reco> <start> <end>'"):
        if utt in seg_lines:  # a speaker turn counted twice
            raise ListFileError(seg_path, lineno, f"duplicate utterance {utt!r} (first on line {seg_lines[utt]})", raw)
        seg_lines[utt] = lineno
        if reco not in recordings:
            raise ListFileError(seg_path, lineno, f"recording {reco!r} is not in wav.scp", raw)
        if utt not in utt2spk:
            raise ListFileError(seg_path, lineno, f"utterance {utt!r} has no speaker in utt2spk", raw)
        t0, t1 = parse_float(start, seg_path, lineno, "start", raw), parse_float(end, seg_path, lineno, "end", raw)
        if not 0 <= t0 < t1:
            raise ListFileError(seg_path, lineno, f"expected 0 <= start < end, got {t0} and {t1}", raw)
        recordings[reco].turns.append((utt2spk[utt][1], t0, t1))
    # the files describing the same ids must agree both ways (Kaldi's validate_data_dir.sh rule): an utterance of
    # utt2spk without a segment, or a reco2dur line of no recording, means the dir was assembled from mixed parts
    mismatch = id_mismatches(utt2spk, seg_lines, str(kaldi_dir / "utt2spk"), str(seg_path), "utterance id")
    mismatch += id_mismatches(durations, recordings, str(kaldi_dir / "reco2dur"), str(kaldi_dir / "wav.scp"),
                              "recording id")
    silent = sorted(r.id for r in recordings.values() if not r.turns)
    if silent:  # trained as all silence otherwise
        mismatch.append(f"{len(silent)} recording(s) of {kaldi_dir / 'wav.scp'} have no line in {seg_path}: "
                        + ", ".join(silent[:40]) + (f", ... and {len(silent) - 40} more" if len(silent) > 40 else ""))
    if mismatch:
        raise ValueError(f"Kaldi dir {kaldi_dir}: " + "; ".join(mismatch))
    for rec in recordings.values():
        rec.turns.sort(key=lambda t: (t[1], t[0]))
    return [recordings[k] for k in sorted(recordings)]
