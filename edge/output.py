"""Where nightear's output and files land, and what to say when that place fails.

Standard output may be a full disk (`detect ... > /dev/full`) as much as a terminal: every
command writes through `GuardedStream`, which turns the write error into an OutputError naming
the destination in words, so the CLI prints one line and exits non-zero instead of a traceback.
`no_space` turns the many faces of a full disk (ENOSPC, SQLite's "disk I/O error",
libsndfile's "System error.") into "no space left on <mount point>".
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import TextIO

from nightear.errors import NightearError

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NEARLY_FULL_BYTES = 64 * 1024  # less free than this: SQLite's or libsndfile's vague error was the disk


class OutputError(NightearError):
    """Standard output cannot be written (a full disk, a device error)."""


def mount_point(path: str | Path) -> Path:
    """The mount point holding `path` (or the nearest folder that exists above it)."""
    here = Path(os.path.abspath(path))
    while not here.exists() and here != here.parent:
        here = here.parent
    while not os.path.ismount(here) and here != here.parent:
        here = here.parent
    return here


def no_space(path: str | Path, exc: BaseException | None = None) -> str | None:
    """"no space left on <mount point> (<path>)" when `exc` or the file system says the disk
    holding `path` is full; None when it is not."""
    full = isinstance(exc, OSError) and exc.errno in FULL_ERRNOS
    if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        full = True
    if not full:
        try:
            stats = os.statvfs(mount_point(path))
            full = stats.f_bavail * stats.f_frsize < NEARLY_FULL_BYTES
        except OSError:
            return None
    return f"no space left on {mount_point(path)} ({path})" if full else None


def _destination(stream: TextIO) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{stream.fileno()}")
    except (OSError, ValueError):
        return "?"


class GuardedStream:
    """A text stream whose write errors (but a closed pipe's, which means the reader left)
    become OutputError: "standard output (/dev/full): no space left on device"."""

    def __init__(self, stream: TextIO, name: str = "standard output"):
        self._stream, self.name = stream, name

    def _fail(self, exc: OSError) -> OutputError:
        where = _destination(self._stream)
        why = "no space left on device" if exc.errno in FULL_ERRNOS else (exc.strerror or str(exc)).lower()
        if exc.errno in FULL_ERRNOS and where.startswith("/") and not where.startswith("/dev/"):
            why = no_space(where, exc) or why
        self.discard()
        return OutputError(f"{self.name} ({where}): {why}")

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._fail(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._fail(exc) from None

    def discard(self) -> None:
        """Point the stream at /dev/null, so what is still buffered cannot fail again at exit."""
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()
