"""About the LibriSpeech corpus (read English audiobooks, 16 kHz FLAC; Panayotov et al. 2015) — shared by ASR and PR.

Layout (docs/DATA_LAYOUTS.md): ``LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>-<NNNN>.flac`` with one
``<spk>-<chapter>.trans.txt`` per chapter (``<utt-id> <UPPER CASE WORDS>``) and, in the offline corpus only,
``<spk>-<chapter>.phn.txt`` (``<utt-id> <phones>``, SUPERB's stress-marked ARPAbet set). SUPERB uses train-clean-100 / dev-clean /
test-clean.
"""
from __future__ import annotations

from pathlib import Path

from common import datasets
from common.audio import audio_duration

from .base import DatasetNotFoundError, Utterance
from .listfile import ListFileError, read_text_lines

LIBRISPEECH_DIR = datasets.LIBRISPEECH
LAYOUT = ("LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>-<NNNN>.flac + <spk>-<chapter>.trans.txt "
          "(subsets train-clean-100, dev-clean, test-clean)")


def _read_lines(path: Path) -> dict[str, str]:
    """``{utterance id: rest of the line}``; an id on two lines is an error (the later one would silently win)."""
    out: dict[str, str] = {}
    first: dict[str, int] = {}
    for n, line in enumerate(read_text_lines(path), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if parts[0] in first:
            raise ListFileError(path, n, f"id {parts[0]} is already on line {first[parts[0]]}", line)
        first[parts[0]] = n
        out[parts[0]] = parts[1] if len(parts) > 1 else ""
    return out


def load_librispeech(root: Path, subset: str, task: str) -> list[Utterance]:
    """Records of one subset, sorted by id; ``transcript`` = upper-case words, ``label`` = phone list or None."""
    folder = root / LIBRISPEECH_DIR / subset
    if not folder.is_dir():
        raise DatasetNotFoundError(f"task {task!r}: LibriSpeech subset folder {folder} not found. Expected layout: "
                                   f"{LAYOUT}; see docs/DATA_LAYOUTS.md")
    utts = []
    for trans in sorted(folder.glob("*/*/*.trans.txt")):
        texts = _read_lines(trans)
        phn = trans.with_name(trans.name.replace(".trans.txt", ".phn.txt"))
        phones = _read_lines(phn) if phn.is_file() else {}
        for utt_id, text in sorted(texts.items()):
            audio = trans.parent / f"{utt_id}.flac"
            if not audio.is_file():
                raise DatasetNotFoundError(f"task {task!r}: {trans} lists {utt_id} but {audio} is missing")
            label = phones[utt_id].upper().split() if utt_id in phones else None
            utts.append(Utterance(id=utt_id, path=audio, duration=audio_duration(audio),
                                  speaker=utt_id.split("-")[0], transcript=text.upper(), label=label))
    if not utts:
        raise DatasetNotFoundError(f"task {task!r}: no *.trans.txt under {folder} (expected {LAYOUT})")
    return utts
