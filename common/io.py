"""Atomic file writes and a locked append: nothing already written is lost when a run dies or two runs race."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from filelock import FileLock


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _named(e: OSError, path: Path) -> OSError:
    """``e`` with ``path`` as its filename when the OS did not name one (a failed write says only
    "No space left on device")."""
    if e.filename is None and e.errno is not None:
        return type(e)(e.errno, e.strerror or str(e), str(path))
    return e


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success it is renamed onto ``path`` (atomic on POSIX).

    On an exception the temporary file is removed and ``path`` keeps its old content; an ``OSError`` that names
    no file (disk full while writing) is raised again naming ``path``. The file gets the usual permissions for a
    new file under the umask (``0666 & ~umask``, as ``open`` gives), not ``mkstemp``'s 0600, so a feature cache or
    results folder shared by a group stays readable to it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _named(e, path.parent) from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _named(e, path) from None
        raise


@contextlib.contextmanager
def atomic_dir(directory: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``directory``; on success it replaces ``directory`` (an old one is removed
    first), so readers see the old folder or the whole new one. On an exception the temporary folder is removed.
    The folder gets ``0777 & ~umask`` (as ``mkdir`` gives), not ``mkdtemp``'s 0700."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def locked_append(path: str | Path, text: str, timeout: float = 60.0, header: str | None = None) -> None:
    """Append ``text`` to ``path`` under an inter-process file lock (safe when two runs finish at once).

    ``header`` (e.g. a CSV header line) is written first when the file is missing or empty, inside the same lock.
    The append starts on a fresh line (a file whose last line lost its newline, e.g. to an editor, gets one first)
    and is all or nothing: when a write fails (disk full), the file is truncated back to its previous size, so no
    fragment is left for the next append to glue onto. Errors name ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=timeout):
            # raw file descriptor: a buffered file would retry its failed flush inside truncate()
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                size = os.lseek(fd, 0, os.SEEK_END)
                data = b""
                if size == 0 and header is not None:
                    data = header.encode("utf-8")
                elif size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n"
                view = memoryview(data + text.encode("utf-8"))
                try:
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                        os.fsync(fd)
                    raise
            finally:
                os.close(fd)
    except OSError as e:
        raise _named(e, path) from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
