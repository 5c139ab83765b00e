"""Checks shared by every task's dataset audit: leaks across split boundaries and lists that do not match.

* :func:`audio_leaks` — the same audio in two splits, found by *content* (xxh3-128 of the file's bytes), not by path:
  a test file copied under another name into the training folder is caught. Only files whose size occurs in more
  than one split are read (most datasets: a handful), and digests are remembered per (real path, size, mtime).
* :func:`speaker_leaks` — a speaker on both sides of a split boundary the protocol keeps speaker-disjoint (ASV:
  VoxCeleb1's test speakers are not development speakers; ER: the test session's two speakers are in no other
  session; SD: Libri2Mix's splits come from disjoint LibriSpeech speakers; a manifest with a ``speaker`` column).
  Before this, VoxCeleb1 test speakers copied into ``dev/wav`` were trained on without a word (test EER 25 -> 15).
* :func:`id_mismatches` — two files describing the same set of ids (an RTTM and the recordings, a trial list and
  the audio, Kaldi's ``utt2spk`` and ``segments``) must match both ways; every id that does not is named.

Every function returns problem lines (nothing raises): the task's audit collects them and the engine reports them
all at once. Lists are capped at :data:`MAX_LISTED` lines per check, with the count of the rest.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from common.utterance import Utterance

MAX_LISTED = 40  # lines per check (the last line says how many more)
EXAMPLES = 3  # files named per side of a leaking speaker
_digests: dict[tuple[str, int, int], str] = {}  # (real path, size, mtime_ns) -> content digest, for this process

Pair = tuple[str, str]


def _capped(lines: list[str], what: str) -> list[str]:
    if len(lines) <= MAX_LISTED:
        return lines
    return lines[:MAX_LISTED] + [f"... and {len(lines) - MAX_LISTED} more {what}"]


def _allowed(a: str, b: str, pairs: Iterable[Pair]) -> bool:
    return any({a, b} == set(p) for p in pairs)


def content_digest(path: str | Path) -> str:
    """xxh3-128 hex digest of the file's bytes (remembered per real path, size and modification time)."""
    import xxhash

    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    if key not in _digests:
        h = xxhash.xxh3_128()
        with open(real, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _digests[key] = h.hexdigest()
    return _digests[key]


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:  # missing or a link loop: the loader or the engine names it; it leaks nothing
        return None


def audio_leaks(splits: Mapping[str, Sequence[Utterance]], shared: Iterable[Pair] = ()) -> list[str]:
    """The same audio (file content, span and channel) in two splits, except the pairs in ``shared`` (QbE's dev and
    test search the same documents). One line per pair of splits, naming every shared file (capped)."""
    shared = tuple(shared)
    sizes: dict[int, set[str]] = {}
    for split, utts in splits.items():
        for u in utts:
            size = _size(u.path)
            if size is not None:
                sizes.setdefault(size, set()).add(split)
    where: dict[tuple, tuple[str, Utterance]] = {}
    leaks: dict[Pair, list[tuple[Utterance, Utterance]]] = {}
    for split, utts in splits.items():
        for u in utts:
            size = _size(u.path)
            if size is None or len(sizes[size]) < 2:
                continue  # no file of this size in another split: no copy of it there
            try:
                digest = content_digest(u.path)
            except OSError:
                continue
            key = (digest, round(u.start, 3), round(u.duration, 3), u.channel)
            first = where.setdefault(key, (split, u))
            if first[0] != split and not _allowed(first[0], split, shared):
                leaks.setdefault((first[0], split), []).append((first[1], u))
    problems = []
    for (a, b), pairs in leaks.items():
        named = "; ".join(f"{x.path} (id {x.id}) = {y.path} (id {y.id})" if os.path.realpath(x.path) !=
                          os.path.realpath(y.path) else f"{x.path} (ids {x.id}, {y.id})" for x, y in pairs[:MAX_LISTED])
        more = f"; ... and {len(pairs) - MAX_LISTED} more" if len(pairs) > MAX_LISTED else ""
        problems.append(f"{a} and {b} share {len(pairs)} audio file(s) (same content), which leaks between the "
                        f"splits: {named}{more}")
    return problems


def speakers_of(utts: Iterable[Utterance]) -> dict[str, list[str]]:
    """speaker -> the files of its utterances (records without a speaker are left out)."""
    out: dict[str, list[str]] = {}
    for u in utts:
        if u.speaker:
            out.setdefault(u.speaker, []).append(str(u.path))
    return out


def speaker_leaks(speakers: Mapping[str, Mapping[str, Sequence[str]]], pairs: Iterable[Pair],
                  why: str = "") -> list[str]:
    """Speakers found on both sides of each split pair in ``pairs``.

    ``speakers``: split -> speaker -> files (:func:`speakers_of`, or a task's own mapping such as SD's recordings).
    One line per leaking speaker naming it and its files on both sides (the first :data:`EXAMPLES` of each, with
    counts); ``why`` says which protocol keeps the splits apart.
    """
    lines = []
    for a, b in pairs:
        if a not in speakers or b not in speakers:
            continue  # a split that failed to load is reported by the audit already
        for spk in sorted(set(speakers[a]) & set(speakers[b])):
            files = {s: sorted(set(speakers[s][spk])) for s in (a, b)}
            named = "; ".join(f"{s}: {len(f)} file(s), {', '.join(f[:EXAMPLES])}{' ...' if len(f) > EXAMPLES else ''}"
                              for s, f in files.items())
            lines.append(f"speaker {spk} is in both {a} and {b}{f' ({why})' if why else ''}: {named}")
    return _capped(lines, "speakers in two splits")


def id_mismatches(ids: Iterable[str], known: Iterable[str], ids_where: str, known_where: str,
                  what: str = "id") -> list[str]:
    """Both ways: the ``ids`` listed in ``ids_where`` that ``known_where`` does not have, and the known ids that
    ``ids_where`` does not list. At most two lines, each naming every id (capped at :data:`MAX_LISTED`)."""
    ids, known = set(ids), set(known)
    out = []
    for missing, in_, not_in in ((sorted(ids - known), ids_where, known_where),
                                 (sorted(known - ids), known_where, ids_where)):
        if missing:
            shown = ", ".join(missing[:MAX_LISTED]) + (f", ... and {len(missing) - MAX_LISTED} more"
                                                       if len(missing) > MAX_LISTED else "")
            out.append(f"{len(missing)} {what}(s) in {in_} but not in {not_in}: {shown}")
    return out


ALL_PAIRS: tuple[Pair, ...] = (("train", "dev"), ("train", "test"), ("dev", "test"))
