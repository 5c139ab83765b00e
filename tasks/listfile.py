"""Reading whitespace-separated list files (trial lists, RTTM, Kaldi dirs, IOB files) with errors that point at a line.

Every corpus loader reads its text files through :func:`read_fields`, so a malformed line always fails the same way:
``ListFileError: path/to/file:12: expected 3 fields ..., got 'the line'``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator


class ListFileError(ValueError):
    """A line of a list file does not have the expected shape."""

    def __init__(self, path: str | Path, lineno: int, message: str, line: str | None = None):
        where = f"{path}:{lineno}"
        text = f"{where}: {message}" + (f" (line: {line.rstrip()!r})" if line is not None else "")
        super().__init__(text)
        self.path, self.lineno = Path(path), lineno


def read_text_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file, without line ends. A BOM is dropped and CRLF/CR line ends are accepted
    (files saved by Windows editors parse the same); bytes that are not UTF-8 raise :class:`ListFileError` naming
    the file and line."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        lineno = data[: e.start].count(b"\n") + 1
        raise ListFileError(path, lineno, f"not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as "
                            f"UTF-8") from None
    return text.splitlines()


def read_fields(path: str | Path, min_fields: int = 1, max_fields: int | None = None,
                what: str = "") -> Iterator[tuple[int, list[str], str]]:
    """Yield ``(line_number, fields, raw_line)`` for each non-empty, non-comment line of ``path``.

    ``fields`` is the line split on whitespace. A line with fewer than ``min_fields`` (or more than ``max_fields``)
    fields raises :class:`ListFileError` naming the file and line; ``what`` describes the expected format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"list file not found: {path}")
    for lineno, raw in enumerate(read_text_lines(path), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith(";;") or stripped.startswith("#"):
            continue
        fields = stripped.split()
        if len(fields) < min_fields or (max_fields is not None and len(fields) > max_fields):
            want = f"{min_fields}" if max_fields == min_fields else (
                f"at least {min_fields}" if max_fields is None else f"{min_fields}-{max_fields}")
            raise ListFileError(path, lineno, f"expected {want} fields{' (' + what + ')' if what else ''}, "
                                f"got {len(fields)}", raw)
        yield lineno, fields, raw


def parse_float(value: str, path: str | Path, lineno: int, name: str, raw: str | None = None) -> float:
    """``float(value)`` or a :class:`ListFileError` naming the field, file and line."""
    try:
        out = float(value)
    except ValueError:
        raise ListFileError(path, lineno, f"{name} must be a number, got {value!r}", raw) from None
    if out != out or out in (float("inf"), float("-inf")):
        raise ListFileError(path, lineno, f"{name} must be finite, got {value!r}", raw)
    return out
