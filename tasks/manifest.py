"""Reading and checking a user's labelled manifest (``--task custom --manifest FILE``); see docs/MANIFEST.md.

Accepted inputs:

* ``.csv`` (pandas; every cell read as text) and ``.jsonl`` (one JSON object per line), with the columns
  ``path`` (relative to the manifest's folder, or absolute), ``split`` (train/dev/test), optional ``id``, ``start``
  and ``end`` (seconds), ``speaker``, and one target column: ``label``, ``labels`` (``;``-separated), ``text`` or
  ``value`` (a number).
* A lhotse ``CutSet`` manifest (``*.jsonl``/``*.jsonl.gz`` of cuts), or a folder of lhotse manifests (cuts, or
  recordings + supervisions, one pair per part) read with lhotse's own reader (``lhotse.load_manifest``). Targets come
  from the first supervision (``text``, ``speaker``, and ``custom`` fields ``label``/``labels``/``value``), the split
  from the cut's or supervision's ``custom["split"]``, else from the file's part name (``train*``, ``dev*``/``valid*``,
  ``test*``).

Every problem is collected before anything trains, and reported all at once with line numbers
(:class:`ManifestError`): missing columns, unknown split values, empty splits, dev/test labels unseen in train,
duplicate ids, missing audio files, non-numeric values, bad or overlapping ``start``/``end``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.audio import audio_duration

from .base import SPLITS, DatasetNotFoundError

TARGETS = {"label": "classification", "labels": "multilabel", "text": "transcription", "value": "regression"}
TASK_TYPES = tuple(TARGETS.values())
MAX_LISTED = 40  # problems listed in one error (the count says how many more)
LHOTSE_SUFFIXES = (".jsonl.gz", ".json.gz", ".json")


class ManifestError(DatasetNotFoundError):
    """A manifest cannot be used; the message lists every problem found, each with its line number."""


@dataclass
class ManifestRow:
    """One manifest entry as read (strings, before checks); ``line`` is the 1-based line of the file (or the
    entry's number in a lhotse manifest)."""

    line: int
    fields: dict[str, Any]


@dataclass
class Entry:
    """One checked manifest entry. ``start``/``end`` in seconds (``end`` None = to the end of the file)."""

    line: int
    id: str
    path: Path
    split: str
    start: float
    end: float | None
    duration: float
    speaker: str
    target: Any  # str (label, text), tuple[str, ...] (labels) or float (value)
    missing: bool = False  # the audio file does not exist (kept only with --skip-bad-audio)


@dataclass
class Manifest:
    path: Path
    task_type: str
    entries: list[Entry] = field(default_factory=list)

    def split(self, name: str) -> list[Entry]:
        return [e for e in self.entries if e.split == name]


def _split_aliases(name: str) -> str | None:
    low = name.lower()
    for prefix, split in (("train", "train"), ("dev", "dev"), ("valid", "dev"), ("val", "dev"), ("test", "test")):
        if low.startswith(prefix) or f"_{prefix}" in low or f"-{prefix}" in low:
            return split
    return None


# ---------------------------------------------------------------- readers
def read_rows(path: Path) -> list[ManifestRow]:
    """Rows of a CSV / JSONL manifest or a lhotse CutSet (file or folder); raises :class:`ManifestError`."""
    if path.is_dir():
        return _read_lhotse(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} not found (expected a .csv, .jsonl, or lhotse CutSet file or folder)")
    name = path.name.lower()
    if name.endswith(".csv"):
        return _read_csv(path)
    if name.endswith(".jsonl"):
        first = _first_json(path)
        if first is not None and "path" not in first and ("recording" in first or "type" in first):
            return _read_lhotse(path)
        return _read_jsonl(path)
    if name.endswith(LHOTSE_SUFFIXES):
        return _read_lhotse(path)
    raise ManifestError(f"manifest {path}: unknown format (expected .csv, .jsonl, or a lhotse CutSet .jsonl.gz "
                        "file or folder)")


def _read_csv(path: Path) -> list[ManifestRow]:
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ManifestError(f"manifest {path}: not a readable CSV file ({e})") from None
    df.columns = [str(c).strip() for c in df.columns]
    return [ManifestRow(i + 2, {k: v.strip() for k, v in row.items()})  # line 1 is the header
            for i, row in enumerate(df.to_dict("records"))]


def _first_json(path: Path) -> dict | None:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    return None
                return obj if isinstance(obj, dict) else None
    return None


def _read_jsonl(path: Path) -> list[ManifestRow]:
    rows, problems = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"line {n}: not JSON ({e.msg})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"line {n}: expected a JSON object, got {type(obj).__name__}")
            continue
        rows.append(ManifestRow(n, {k: ("" if v is None else v) for k, v in obj.items()}))
    if problems:
        raise _problems_error(path, problems)
    return rows


def _read_lhotse(path: Path) -> list[ManifestRow]:
    """Cuts via lhotse's own reader -> rows with our column names (see the module docstring)."""
    try:
        from lhotse import CutSet, RecordingSet, SupervisionSet, load_manifest
    except ImportError:
        raise ManifestError(f"manifest {path} is a lhotse manifest, but lhotse is not installed "
                            "(pip install lhotse==1.33.0)") from None
    parts: list[tuple[str | None, Any]] = []  # (split from the file name, CutSet)
    prefixes: list[str] = []  # folder: ids are "<file part>/<cut id>" (recipes number supervisions per part)
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz")))
            cuts = [p for p in files if "cuts" in p.name]
            if cuts:
                parts = [(_split_aliases(p.name.split("cuts", 1)[1]), load_manifest(p)) for p in cuts]
                prefixes = [_part_name(p.name, "cuts") for p in cuts]
            else:
                recs = [p for p in files if "recordings" in p.name]
                for rec in recs:
                    sup = rec.with_name(rec.name.replace("recordings", "supervisions"))
                    if not sup.is_file():
                        raise ManifestError(f"manifest folder {path}: {rec.name} has no {sup.name} next to it")
                    recordings, supervisions = load_manifest(rec), load_manifest(sup)
                    if not isinstance(recordings, RecordingSet) or not isinstance(supervisions, SupervisionSet):
                        raise ManifestError(f"manifest folder {path}: {rec.name}/{sup.name} are not lhotse "
                                            "recordings/supervisions manifests")
                    cutset = CutSet.from_manifests(recordings=recordings, supervisions=supervisions).trim_to_supervisions(
                        keep_overlapping=False)
                    parts.append((_split_aliases(rec.name.split("recordings", 1)[1]), cutset))
                    prefixes.append(_part_name(rec.name, "recordings"))
            if not parts:
                raise ManifestError(f"manifest folder {path}: no lhotse cuts (*cuts*.jsonl.gz) or "
                                    "recordings/supervisions manifests in it")
        else:
            loaded = load_manifest(path)
            if not isinstance(loaded, CutSet):
                raise ManifestError(f"manifest {path}: a lhotse {type(loaded).__name__}, expected a CutSet "
                                    "(or a folder with recordings + supervisions)")
            parts = [(_split_aliases(path.name.split("cuts", 1)[-1]) if "cuts" in path.name else None, loaded)]
    except ManifestError:
        raise
    except Exception as e:  # lhotse raises plain exceptions of several types for a malformed manifest
        raise ManifestError(f"manifest {path}: lhotse cannot read it ({type(e).__name__}: {e})") from None
    rows = []
    for k, (file_split, cutset) in enumerate(parts):
        for cut in cutset:
            fields = _cut_fields(cut, file_split)
            if prefixes:
                fields["id"] = f"{prefixes[k]}/{fields['id']}"
            rows.append(ManifestRow(len(rows) + 1, fields))
    return rows


def _part_name(file_name: str, kind: str) -> str:
    """``slu_recordings_train.jsonl.gz`` -> ``train``."""
    tail = file_name.split(kind, 1)[1].lstrip("_-.")
    return tail.split(".", 1)[0] or kind


def _cut_fields(cut: Any, file_split: str | None) -> dict[str, Any]:
    sup = cut.supervisions[0] if getattr(cut, "supervisions", None) else None
    custom = {**(getattr(sup, "custom", None) or {}), **(getattr(cut, "custom", None) or {})}
    rec = getattr(cut, "recording", None)
    source = next((s for s in rec.sources if s.type == "file"), None) if rec is not None else None
    row: dict[str, Any] = {"id": cut.id, "path": source.source if source else "",
                           "start": f"{cut.start:.6f}", "end": f"{cut.start + cut.duration:.6f}"}
    split = custom.get("split", file_split)
    row["split"] = "" if split is None else split
    if sup is not None and sup.speaker:
        row["speaker"] = sup.speaker
    if sup is not None and sup.text:
        row["text"] = sup.text
    for key in ("label", "labels", "value"):
        if key in custom:
            row[key] = ";".join(custom[key]) if key == "labels" and isinstance(custom[key], list) else custom[key]
    if source is None:
        row["path"] = ""
        row["_problem"] = f"cut {cut.id}: its recording has no file source (only file-based audio is supported)"
    return row


# ---------------------------------------------------------------- checks
def _problems_error(path: Path, problems: list[str]) -> ManifestError:
    shown = problems[:MAX_LISTED]
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return ManifestError(f"manifest {path}: {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out and abs(out) != float("inf") else None  # NaN and inf are not values


def infer_task_type(path: Path, columns: set[str], task_type: str) -> str:
    """The task type from the target column present (or the one asked for); raises :class:`ManifestError`."""
    present = [c for c in TARGETS if c in columns]
    if task_type != "auto":
        want = next(c for c, t in TARGETS.items() if t == task_type)
        if want not in columns:
            raise ManifestError(f"manifest {path}: task_type={task_type} needs a {want!r} column; columns are "
                                f"{', '.join(sorted(columns)) or 'none'}")
        return task_type
    if not present:
        raise ManifestError(f"manifest {path}: no target column; expected one of label (classification), labels "
                            f"(multi-label), text (transcription), value (regression); columns are "
                            f"{', '.join(sorted(columns)) or 'none'}")
    if len(present) > 1:
        raise ManifestError(f"manifest {path}: several target columns ({', '.join(present)}); choose one with "
                            f"-o task_type={'|'.join(TARGETS[c] for c in present)}")
    return TARGETS[present[0]]


def load_manifest(path: str | Path, task_type: str = "auto", label_separator: str = ";",
                  skip_bad_audio: bool = False) -> Manifest:
    """Read and check a manifest; every problem is reported in one :class:`ManifestError`.

    ``skip_bad_audio``: missing audio files are kept (flagged ``missing``) for the engine to skip and record, as it
    does for unreadable files, instead of being an error.
    """
    path = Path(path)
    rows = read_rows(path)
    if not rows:
        raise ManifestError(f"manifest {path}: no entries")
    columns = set().union(*(r.fields for r in rows))
    missing_cols = [c for c in ("path", "split") if c not in columns]
    if missing_cols:
        raise ManifestError(f"manifest {path}: missing column(s) {', '.join(missing_cols)}; required: path, split "
                            "and one target column (label | labels | text | value)")
    task_type = infer_task_type(path, columns, task_type)
    target_col = next(c for c, t in TARGETS.items() if t == task_type)
    base = path if path.is_dir() else path.parent
    problems: list[str] = []
    entries: list[Entry] = []
    first_line_of_id: dict[str, int] = {}
    for row in rows:
        f, n = row.fields, row.line
        if "_problem" in f:
            problems.append(f"line {n}: {f['_problem']}")
            continue
        raw_path = str(f.get("path", "")).strip()
        split = str(f.get("split", "")).strip()
        bad = False
        if not raw_path:
            problems.append(f"line {n}: empty path")
            bad = True
        if split not in SPLITS:
            problems.append(f"line {n}: split {split!r} is not one of {', '.join(SPLITS)}")
            bad = True
        start, end = 0.0, None
        if str(f.get("start", "")).strip() != "":
            start = _number(f["start"])
            if start is None or start < 0:
                problems.append(f"line {n}: start {f['start']!r} is not a number of seconds >= 0")
                bad, start = True, 0.0
        if str(f.get("end", "")).strip() != "":
            end = _number(f["end"])
            if end is None:
                problems.append(f"line {n}: end {f['end']!r} is not a number of seconds")
                bad = True
            elif end <= start:
                problems.append(f"line {n}: end {end:g} s is not after start {start:g} s")
                bad = True
        target: Any = f.get(target_col, "")
        if task_type == "regression":
            target = _number(target)
            if target is None:
                problems.append(f"line {n}: value {f.get('value', '')!r} is not a number")
                bad = True
        elif task_type == "multilabel":
            target = tuple(sorted({t.strip() for t in str(target).split(label_separator) if t.strip()}))
        else:
            target = str(target).strip()
            if not target:
                problems.append(f"line {n}: empty {target_col}")
                bad = True
        audio = Path(raw_path) if Path(raw_path).is_absolute() else base / raw_path
        missing = bool(raw_path) and not audio.is_file()
        if missing and not skip_bad_audio:
            problems.append(f"line {n}: audio file {audio} not found")
            bad = True
        if bad:
            continue
        uid = str(f.get("id", "")).strip() or (raw_path if start == 0.0 and end is None
                                              else f"{raw_path}@{start:g}-{'' if end is None else f'{end:g}'}")
        if uid in first_line_of_id:
            problems.append(f"line {n}: duplicate id {uid!r} (first on line {first_line_of_id[uid]})")
            continue
        first_line_of_id[uid] = n
        total = 0.0 if missing else audio_duration(audio)
        if end is not None and total > 0 and end > total + 0.01:
            problems.append(f"line {n}: end {end:g} s is past the end of {audio} ({total:.3f} s)")
            continue
        if not missing and total > 0 and start >= total:
            problems.append(f"line {n}: start {start:g} s is past the end of {audio} ({total:.3f} s)")
            continue
        duration = (end if end is not None else total) - start
        entries.append(Entry(n, uid, audio, split, start, end, max(duration, 0.0), str(f.get("speaker", "")).strip(),
                             target, missing))
    problems += _overlaps(entries)
    for split in SPLITS:
        if not any(e.split == split for e in entries):
            problems.append(f"split {split!r} has no entries (train, dev and test each need at least one)")
    problems += _unseen_labels(entries, task_type)
    if problems:
        raise _problems_error(path, problems)
    return Manifest(path, task_type, entries)


def _overlaps(entries: list[Entry]) -> list[str]:
    """Two entries of one file whose ``[start, end)`` intervals overlap (the same audio would be used twice)."""
    by_file: dict[Path, list[Entry]] = {}
    for e in entries:
        by_file.setdefault(e.path, []).append(e)
    problems = []
    for group in by_file.values():
        if len(group) < 2:
            continue
        spans = sorted(group, key=lambda e: (e.start, e.line))
        for a, b in zip(spans, spans[1:]):
            a_end = a.end if a.end is not None else a.start + a.duration
            if b.start < a_end - 1e-6:
                problems.append(f"line {b.line}: start/end [{b.start:g}, "
                                f"{'end' if b.end is None else f'{b.end:g}'}) overlaps line {a.line}'s "
                                f"[{a.start:g}, {'end' if a.end is None else f'{a.end:g}'}) of {a.path}")
    return problems


def _unseen_labels(entries: list[Entry], task_type: str) -> list[str]:
    if task_type not in ("classification", "multilabel"):
        return []
    def labels(e: Entry) -> tuple[str, ...]:
        return e.target if task_type == "multilabel" else (e.target,)
    seen = {t for e in entries if e.split == "train" for t in labels(e)}
    return [f"line {e.line}: {e.split} label {t!r} never occurs in train (a head cannot predict it)"
            for e in entries if e.split != "train" for t in labels(e) if t not in seen]


# ---------------------------------------------------------------- a manifest from a folder of class folders
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def manifest_from_folder(folder: str | Path, dev_every: int = 10, exclude: tuple[str, ...] = ()) -> list[dict]:
    """Rows ``{path, split, label}`` for ``folder/<label>/**/<audio>``: the label is the first-level folder name.

    Within each label the files (sorted) go every ``dev_every``-th to dev, the next one to test, the rest to train;
    labels with fewer than 3 files go to train only (a dev/test label must occur in train). Paths are relative to
    ``folder``. Raises :class:`ManifestError` when no audio is found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"{folder}: not a folder (expected <folder>/<label>/<audio files>)")
    rows = []
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in exclude):
        files = sorted(p for p in label_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        for k, path in enumerate(files):
            split = "train"
            if len(files) >= 3:
                split = "dev" if k % dev_every == 1 else "test" if k % dev_every == 2 else "train"
            rows.append({"path": path.relative_to(folder).as_posix(), "split": split, "label": label_dir.name})
    if not rows:
        raise ManifestError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in label folders")
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m tasks.manifest FOLDER --out FILE.csv``: a classification manifest from class folders."""
    import argparse
    import csv
    import io
    import sys

    from common.io import atomic_write_text

    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m tasks.manifest",
                                description="Write a classification manifest (path, split, label) for "
                                "FOLDER/<label>/<audio>; see docs/MANIFEST.md.")
    p.add_argument("folder", type=Path)
    p.add_argument("--out", type=Path, required=True, help="the .csv to write (paths relative to its folder)")
    p.add_argument("--exclude", nargs="*", default=[], help="label folders to leave out (e.g. _background_noise_)")
    p.add_argument("--dev-every", type=int, default=10, help="every N-th file of a label to dev, the next to test")
    args = p.parse_args(argv)
    try:
        rows = manifest_from_folder(args.folder, args.dev_every, tuple(args.exclude))
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    base = args.out.resolve().parent
    folder = args.folder.resolve()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["path", "split", "label"], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        path = folder / r["path"]
        try:
            r["path"] = path.relative_to(base).as_posix()
        except ValueError:
            r["path"] = str(path)
        writer.writerow(r)
    atomic_write_text(args.out, buf.getvalue())
    counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    print(f"wrote {args.out}: {len(rows)} files, {len({r['label'] for r in rows})} labels "
          f"(train {counts['train']}, dev {counts['dev']}, test {counts['test']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
