"""The event store: SQLite in WAL mode, written before an event goes anywhere else.

An event is inserted when it opens (the live alert) and updated when it closes, in one short
transaction each, so a crash or a power cut loses at most the update in flight and never an
alert. Other processes (`nightear events`, a sender) read it while the daemon writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from nightear.errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'closed')),
    start TEXT NOT NULL,
    end TEXT NOT NULL,
    peak_confidence REAL NOT NULL,
    mean_confidence REAL NOT NULL,
    windows INTEGER NOT NULL,
    model TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    clip TEXT
);
CREATE INDEX IF NOT EXISTS events_start ON events (start);
"""


@dataclass(frozen=True)
class StoredEvent:
    """One row of the store, as `nightear events` shows it."""

    id: str
    node: str
    state: str
    start: str
    end: str
    peak_confidence: float
    mean_confidence: float
    windows: int
    model: str
    model_sha256: str
    clip: str | None = None  # the WAV with pre-roll, once the event has closed


class EventStore:
    """Durable events: `save` inserts or updates one event in its own transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"{self.path}: cannot open the event store ({exc})") from None

    def save(self, event: StoredEvent) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE "
                "SET state=excluded.state, end=excluded.end, peak_confidence=excluded.peak_confidence,"
                " mean_confidence=excluded.mean_confidence, windows=excluded.windows, "
                "clip=excluded.clip",
                (event.id, event.node, event.state, event.start, event.end, event.peak_confidence,
                 event.mean_confidence, event.windows, event.model, event.model_sha256, event.clip),
            )

    def since(self, start: datetime | None = None) -> Iterator[StoredEvent]:
        """Events that started at or after `start` (all without it), oldest first."""
        query, args = "SELECT * FROM events", ()  # type: tuple[str, tuple[str, ...]]
        if start is not None:
            query, args = query + " WHERE start >= ?", (start.isoformat(timespec="milliseconds"),)
        for row in self._db.execute(query + " ORDER BY start", args):
            yield StoredEvent(*row)

    def close(self) -> None:
        self._db.close()
