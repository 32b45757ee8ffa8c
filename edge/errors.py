"""One small error hierarchy: every user-facing failure is a NightearError with a message a
technician can act on (file, key, value, allowed range). The CLI prints it on one line."""


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
