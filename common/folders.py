"""Scanning a folder tree for audio the way clusters lay datasets out: symbolic links followed, loops guarded.

``Path.rglob`` does not enter symlinked sub-folders (Python <= 3.12), and clusters link datasets into place all the
time (``data/train/speakers -> /shared/voxceleb/dev/wav``), so a scan that uses it silently trains or benchmarks on a
fraction of the data. :func:`scan_tree` walks with :func:`os.scandir`, enters every linked folder once (a folder
reached again, through a loop or a second link, is listed as skipped with the path it was first seen at), skips the
``._*`` companions macOS writes next to every file on non-Apple disks (AppleDouble metadata, not audio), and
counts the files found per top-level folder so that callers can print where the files came from.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
MACOS_COMPANION = "._"  # AppleDouble resource files: ``._clip.wav`` next to ``clip.wav`` (metadata, not audio)


@dataclass
class FolderScan:
    """What :func:`scan_tree` found under ``root``.

    files: matching files, sorted, as paths through ``root`` (links kept, so relative paths stay meaningful);
    skipped: ``(path, reason)`` for macOS companions and folders not entered again (link loops, second links);
    counts: top-level folder name (``"."`` for files directly in ``root``) -> matching files under it.
    """

    root: Path
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: ``ROOT: N files (a 3, b 5); skipped 2 (1 macOS '._' companion, 1 link loop)``."""
        parts = ", ".join(f"{name} {n}" for name, n in sorted(self.counts.items()))
        line = f"{self.root}: {len(self.files)} file(s)" + (f" ({parts})" if parts else "")
        if self.skipped:
            kinds: dict[str, int] = {}
            for _, reason in self.skipped:
                kind = reason.split(":", 1)[0]
                kinds[kind] = kinds.get(kind, 0) + 1
            line += f"; skipped {len(self.skipped)} (" + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")"
        return line


def is_macos_companion(path: str | Path) -> bool:
    """True for ``._name`` files (macOS AppleDouble metadata written beside ``name`` on non-Apple disks)."""
    return Path(path).name.startswith(MACOS_COMPANION)


def scan_tree(root: str | Path, suffixes: tuple[str, ...], exclude: tuple[str, ...] = ()) -> FolderScan:
    """Every file under ``root`` whose lower-cased name ends with one of ``suffixes``, following symbolic links.

    ``exclude``: top-level folder names left out. Entries that are not folders are returned whatever they are
    (broken links, FIFOs named ``*.wav``): the caller's audio checks name them, a folder scan must not hide them.
    A linked folder that resolves to a folder already entered (a loop back to an ancestor, or a second link to the
    same data) is not entered again and is listed in ``skipped``. Raises ``NotADirectoryError`` when ``root`` is not
    a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    scan = FolderScan(root)
    seen: dict[tuple[int, int], Path] = {}  # (device, inode) of every folder entered -> the path it was entered at
    st = os.stat(root)
    seen[(st.st_dev, st.st_ino)] = root
    stack: list[tuple[Path, str]] = [(root, ".")]
    suffixes = tuple(s.lower() for s in suffixes)
    while stack:
        folder, top = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:  # unreadable folder: said, not hidden
            scan.skipped.append((folder, f"unreadable folder: {e.strerror}"))
            continue
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:  # a link loop at the entry itself (ELOOP): not a folder, reported as a file if named so
                is_dir = False
            if is_dir:
                if folder == root and entry.name in exclude:
                    continue
                try:
                    st = os.stat(path)
                except OSError as e:
                    scan.skipped.append((path, f"unreadable folder: {e.strerror}"))
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    first = seen[key]
                    loop = first == root or first in path.parents
                    scan.skipped.append((path, f"link loop: back to {first}" if loop
                                         else f"second link: to {first}, already scanned"))
                    continue
                seen[key] = path
                stack.append((path, entry.name if folder == root else top))
            elif entry.name.lower().endswith(suffixes):
                if entry.name.startswith(MACOS_COMPANION):
                    scan.skipped.append((path, "macOS '._' companion: AppleDouble metadata, not audio"))
                    continue
                scan.files.append(path)
                scan.counts[top] = scan.counts.get(top, 0) + 1
    scan.files.sort()
    return scan


def layout_files(folder: str | Path, pattern: str) -> tuple[list[Path], list[Path]]:
    """``(files, companions)``: the sorted files matching a fixed-depth ``pattern`` under ``folder`` (``"*/*.wav"``;
    :meth:`Path.glob` follows symbolic links at fixed depths), without the macOS ``._`` companions, which come back
    apart so that a loader can count them as dropped. A ``._19-198.trans.txt`` read as a transcript, or a
    ``._00001.wav`` read as audio, would stop the run on AppleDouble bytes."""
    found = sorted(Path(folder).glob(pattern))
    companions = [p for p in found if is_macos_companion(p)]
    if companions:  # said once per scan: a copy from a Mac has one per file
        shown = ", ".join(str(p.relative_to(folder)) for p in companions[:10])
        log.warning("skipped %d macOS '._' companion file(s) under %s: %s%s", len(companions), folder, shown,
                    f" ... and {len(companions) - 10} more" if len(companions) > 10 else "")
    return [p for p in found if not is_macos_companion(p)], companions
