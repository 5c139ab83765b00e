"""How the command-line entry points turn a user's problem into one line on stderr and exit code 2.

Bad input (a config key, a dataset file, a refused resume) raises ``ValueError`` or ``FileNotFoundError`` subclasses
whose message already names the file; Ctrl-C prints how to resume; an environment problem (disk full, read-only folder, a file where a folder is
expected, no permission) raises ``OSError``, which :func:`user_error` words as ``PATH: problem``. Anything else is a
bug and keeps its traceback.
"""
from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Callable

# errno values that mean "the place you asked me to write to cannot take it", not a bug in the toolkit
PATH_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR,
               errno.EEXIST, errno.ENOENT, errno.ENAMETOOLONG, errno.ELOOP, errno.EFBIG}


def user_error(e: BaseException) -> str | None:
    """The one-line message for a user-caused error, or None when ``e`` is a bug (let it raise)."""
    if isinstance(e, OSError) and e.errno in PATH_ERRNOS and e.filename is not None:
        blocker = _file_in_the_way(str(e.filename)) if e.errno in (errno.EEXIST, errno.ENOTDIR) else None
        if blocker is not None:
            return f"{blocker} is a file, but a folder is expected there (to hold {e.filename})"
        where = f"{e.filename} -> {e.filename2}" if e.filename2 else str(e.filename)
        hint = {errno.ENOSPC: " (free some space or choose another folder)",
                errno.EDQUOT: " (disk quota exceeded: free some space or choose another folder)",
                errno.EROFS: " (choose a writable folder)",
                errno.ENOTDIR: " (a file is in the way where a folder is expected)"}.get(e.errno, "")
        return f"{where}: {e.strerror}{hint}"
    if isinstance(e, (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)):
        return str(e)
    return None


def print_error(line: str) -> None:
    """``error: line`` on stderr, on a line of its own: progress bars still open (the error interrupted them)
    are closed first, which ends or clears their half-drawn line."""
    _close_bars()
    print(f"error: {line}", file=sys.stderr, flush=True)


def _close_bars() -> None:
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _file_in_the_way(path: str) -> str | None:
    """The first existing non-folder among ``path`` and its parents, when creating ``path`` failed because of it."""
    p = Path(path)
    for candidate in [*reversed(p.parents), p]:
        if candidate.exists() and not candidate.is_dir():
            return str(candidate)
    return None


INTERRUPTED = 130  # the exit code a shell gives a process ended by Ctrl-C (128 + SIGINT)


def resume_command(script: str, argv: list[str]) -> str:
    """The command line that continues an interrupted run: the same arguments with ``--resume``."""
    import shlex

    return shlex.join(["python", script, *argv, *([] if "--resume" in argv else ["--resume"])])


def run_main(main: Callable[[], int], resume_hint: str | None = None) -> int:
    """Call ``main``; a user-caused error becomes ``error: <one line>`` on stderr and exit code 2. Ctrl-C
    (KeyboardInterrupt) ends with one ``interrupted`` line, plus ``resume_hint`` (how to continue), exit code 130:
    checkpoints are written atomically, so the run folder holds the last complete one."""
    try:
        return main()
    except KeyboardInterrupt:
        _close_bars()
        print("\ninterrupted (Ctrl-C)" + (f"; {resume_hint}" if resume_hint else ""), file=sys.stderr, flush=True)
        return INTERRUPTED
    except Exception as e:  # noqa: BLE001 — only the kinds user_error recognises are swallowed
        line = user_error(e)
        if line is None:
            raise
        print_error(line)
        return 2
