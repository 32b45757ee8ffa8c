"""One small error hierarchy: every user-facing failure is a NightearError with a message a
technician can act on (file, key, value, allowed range). The CLI prints it on one line."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class NightearError(Exception):
    """Base of every error nightear reports to a user without a traceback."""


class ConfigError(NightearError):
    """A configuration file, key or value is wrong."""


class AudioError(NightearError):
    """An audio file or device cannot be read as audio nightear can use."""


class ModelError(NightearError):
    """A model file is missing, unreadable or does not match the front-end."""


def os_reason(exc: OSError) -> str:
    """An OSError in a technician's words: "<file>: file name too long" (no errno, no repr)."""
    why = (exc.strerror or str(exc)).lower()
    return f"{exc.filename}: {why}" if exc.filename else why


def not_regular(path: str | Path) -> str | None:
    """Why `path` cannot be read as a file nightear keeps (a FIFO would block, /dev/zero never
    end), or None for a regular file or one that does not exist (the caller says that)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO, device or socket)"
    return None
