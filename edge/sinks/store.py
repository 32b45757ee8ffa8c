"""The event store: SQLite in WAL mode, written before an event goes anywhere else.

An event is inserted when it opens (the live alert) and updated when it closes, in one short
transaction each, so a crash or a power cut loses at most the update in flight and never an
alert. Other processes (`nightear events`, a sender) read it while the daemon writes. With
an array, each event keeps its bearing track: one row per scored window in `bearings`.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from nightear.errors import ConfigError, not_regular
from nightear.output import no_space
from nightear.sinks import PRIVATE_FILE_MODE, PRIVATE_FOLDER_MODE

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
    clip TEXT,
    bearing_deg REAL,
    bearing_spread_deg REAL,
    elevation_deg REAL,
    bearing_mirror_deg REAL,
    interrupted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_start ON events (start);
CREATE TABLE IF NOT EXISTS bearings (
    event_id TEXT NOT NULL REFERENCES events (id),
    t TEXT NOT NULL,
    bearing_deg REAL NOT NULL,
    elevation_deg REAL,
    coherence REAL NOT NULL,
    confidence REAL NOT NULL,
    PRIMARY KEY (event_id, t)
);
CREATE TABLE IF NOT EXISTS verdicts (
    event_id TEXT PRIMARY KEY REFERENCES events (id),
    verdict TEXT NOT NULL CHECK (verdict IN ('drone', 'not-drone')),
    at TEXT NOT NULL
);
"""
VERDICTS = ("drone", "not-drone")  # an operator's word on an event: heard right, or a false alarm
# columns added after the first release, for stores written by an older nightear
ADDED_COLUMNS = ("bearing_deg REAL", "bearing_spread_deg REAL", "elevation_deg REAL",
                 "bearing_mirror_deg REAL", "interrupted INTEGER NOT NULL DEFAULT 0")
COLUMNS = ("id, node, state, start, end, peak_confidence, mean_confidence, windows, model, "
           "model_sha256, clip, bearing_deg, bearing_spread_deg, elevation_deg, bearing_mirror_deg, "
           "interrupted")
NAMES = tuple(name.strip() for name in COLUMNS.split(","))
# nightear marks its stores at creation (SQLite's header fields for this), so it can tell its own
# from another program's file and refuse that without writing a byte
APPLICATION_ID = 0x6E656172  # "near"
SCHEMA_VERSION = 1  # PRAGMA user_version; 0: a store written before the mark
FIRST_COLUMNS = frozenset(NAMES[:11])  # id ... clip: every store nightear ever wrote has them
SINK_TABLES = frozenset({"mqtt_sent"})  # what an earlier sink could add to a store before its events


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
    bearing_deg: float | None = None  # with an array: where the drone was heard, clockwise
    bearing_spread_deg: float | None = None  # circular deviation of the windows' bearings
    elevation_deg: float | None = None
    bearing_mirror_deg: float | None = None  # a linear array's equally likely mirror bearing
    interrupted: bool = False  # closed at start-up: the run that heard it was killed mid-event


@dataclass(frozen=True)
class StoredBearing:
    """One window's bearing in an event's track."""

    t: str  # the window's start, UTC ISO-8601
    bearing_deg: float
    elevation_deg: float | None
    coherence: float
    confidence: float


def _event(row: Sequence[Any], path: Path) -> StoredEvent:
    """A row as a typed event; ConfigError naming the store and the row when a value is of
    another type than nightear writes (a store someone else edited), never a traceback later."""
    fields = {**dict(zip(NAMES, row, strict=True)), "interrupted": bool(row[-1])}
    try:
        event = msgspec.convert(fields, type=StoredEvent)
        for moment in (event.start, event.end):
            datetime.fromisoformat(moment)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"{path}: event {str(fields['id'])[:36]!r} is malformed ({exc}): "
                          "not as nightear writes it") from None
    return event


class StoreLock:
    """One daemon per store: an exclusive lock on `<store>.lock`, held while the daemon runs,
    released by the kernel however the process ends (so a SIGKILL leaves no stale lock)."""

    def __init__(self, store_path: str | Path):
        self.path = Path(f"{store_path}.lock")
        try:
            self.path.parent.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot create the store's lock ({exc.strerror})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise ConfigError(f"{store_path}: another nightear listen (pid {holder}) is using this "
                              "event store; stop it first or give this one its own store.path") from None
        try:  # the holder's pid, for the next one's message; a full disk only loses that
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass

    def release(self) -> None:
        os.close(self._fd)


def recognise(db: sqlite3.Connection, path: Path, accept_empty: bool) -> str:
    """"nightear" for a store nightear marked, "earlier" for one an earlier nightear wrote
    (unmarked, its own tables and columns), "empty" for a new file (only with `accept_empty`);
    ConfigError saying what the file is otherwise. Reads only: nothing is written to decide."""
    try:
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    except sqlite3.DatabaseError as exc:
        what = "not an SQLite database" if "not a database" in str(exc) else f"unreadable ({exc})"
        raise ConfigError(f"{path}: not a nightear event store: {what}") from None
    if application_id == APPLICATION_ID:
        return "nightear"
    if application_id == 0 and FIRST_COLUMNS <= columns <= set(NAMES):
        return "earlier"
    if application_id == 0 and tables and tables <= SINK_TABLES:  # a sink's table, no events yet
        tables = set()
    if application_id == 0 and not tables:
        if accept_empty:
            return "empty"
        size = path.stat().st_size if path.exists() else 0
        what = "an empty file" if size == 0 else "an SQLite database with no events table yet"
        raise ConfigError(f"{path}: not a nightear event store: {what}")
    owner = f"application_id {application_id:#x}" if application_id else "no application_id"
    listed = ", ".join(sorted(tables)[:6]) + (", ..." if len(tables) > 6 else "")
    raise ConfigError(f"{path}: not a nightear event store: another program's SQLite database "
                      f"({owner}; tables {listed}); left unchanged")


def refuse_foreign(path: str | Path) -> None:
    """ConfigError, before anything is created beside it (a lock, a WAL), when `path` exists and
    is not a store nightear may write: another program's file stays exactly as it was."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not an event store")
    if fault := not_regular(path):
        raise ConfigError(f"{path}: {fault}, not an event store")
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error:
        return  # unreadable here: the writable open says why
    try:
        recognise(db, path, accept_empty=True)
    finally:
        db.close()


class EventStore:
    """Durable events: `save` inserts or updates one event in its own transaction.

    `read_only` opens an existing store for listing without changing a byte of it: a user who
    may only read the file can list it, and a file that is not a nightear store stays as it was.
    """

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        if read_only:
            self._db = self._open_read_only()
            return
        try:
            self.path.parent.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
            # created 0640 before SQLite opens it: its -wal and -shm files copy this mode
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE))
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
            if recognise(self._db, self.path, accept_empty=True) != "nightear":  # new, or unmarked
                self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif (version := self._db.execute("PRAGMA user_version").fetchone()[0]) > SCHEMA_VERSION:
                raise ConfigError(f"{self.path}: written by a newer nightear (store schema {version}, "
                                  f"this one writes {SCHEMA_VERSION}): upgrade nightear to write it")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
            for column in ADDED_COLUMNS:
                if column.split()[0] not in have:
                    self._db.execute(f"ALTER TABLE events ADD COLUMN {column}")
            self._columns = set(NAMES)
            self._has_verdicts = True
        except ConfigError:
            self._db.close()
            raise
        except (OSError, sqlite3.Error) as exc:
            why = no_space(self.path, exc) or str(exc)
            raise ConfigError(f"{self.path}: cannot open the event store ({why})") from None

    def _open_read_only(self) -> sqlite3.Connection:
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        try:
            db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10.0)
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.OperationalError as exc:
            if Path(f"{self.path}-wal").exists():
                raise ConfigError(f"{self.path}: cannot read the event store ({exc})") from None
            # a WAL store in a folder this user cannot write, with no WAL beside it: nothing
            # waits to be checkpointed, so the file alone holds every event
            try:
                db = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            except sqlite3.DatabaseError as exc:
                raise ConfigError(f"{self.path}: cannot read the event store ({exc})") from None
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                raise ConfigError(f"{self.path}: not a nightear event store: not an SQLite database"
                                  ) from None
            raise ConfigError(f"{self.path}: cannot read the event store ({exc})") from None
        try:
            recognise(db, self.path, accept_empty=False)
        except ConfigError:
            db.close()
            raise
        self._columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
        self._has_verdicts = "verdicts" in tables  # a store from before verdicts has none
        return db

    def save(self, event: StoredEvent, track: Sequence[StoredBearing] = ()) -> None:
        """Insert or update an event and its bearing track, in one transaction."""
        values = tuple(getattr(event, name) for name in NAMES)
        updated = [n for n in NAMES if n not in ("id", "node", "start", "model", "model_sha256")]
        with self._db:
            self._db.execute(
                f"INSERT INTO events ({COLUMNS}) VALUES ({', '.join('?' * len(values))}) "
                f"ON CONFLICT(id) DO UPDATE SET {', '.join(f'{c}=excluded.{c}' for c in updated)}",
                values,
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO bearings VALUES (?, ?, ?, ?, ?, ?)",
                [(event.id, b.t, b.bearing_deg, b.elevation_deg, b.coherence, b.confidence)
                 for b in track],
            )

    def track(self, event_id: str) -> list[StoredBearing]:
        """An event's per-window bearings, in time order."""
        rows = self._db.execute("SELECT t, bearing_deg, elevation_deg, coherence, confidence FROM "
                                "bearings WHERE event_id = ? ORDER BY t", (event_id,))
        return [StoredBearing(*row) for row in rows]

    def _selected(self) -> str:
        # a store written by an older nightear, opened read-only, lacks the newer columns
        return ", ".join(c if c in self._columns else "NULL" for c in NAMES)

    def since(self, start: datetime | None = None) -> Iterator[StoredEvent]:
        """Events that started at or after `start` (all without it), oldest first."""
        query, args = f"SELECT {self._selected()} FROM events", ()  # type: tuple[str, tuple[str, ...]]
        if start is not None:
            query, args = query + " WHERE start >= ?", (start.isoformat(timespec="milliseconds"),)
        for row in self._db.execute(query + " ORDER BY start", args):
            yield _event(row, self.path)

    def find(self, id_prefix: str) -> StoredEvent:
        """The one event whose id starts with `id_prefix` (a clip's name holds its first 8 hex
        digits); ConfigError naming the store when none or several match."""
        rows = self._db.execute(f"SELECT {self._selected()} FROM events WHERE substr(id, 1, ?) = ? "
                                "ORDER BY start LIMIT 2", (len(id_prefix), id_prefix)).fetchall()
        if not rows:
            raise ConfigError(f"{self.path}: no event with id {id_prefix!r} (`nightear events` lists them)")
        if len(rows) > 1:
            raise ConfigError(f"{self.path}: more than one event's id starts with {id_prefix!r}; "
                              "give more of it")
        return _event(rows[0], self.path)

    def set_verdict(self, event_id: str, verdict: str, at: str) -> None:
        """Record an operator's verdict on an event (a second one replaces the first)."""
        if verdict not in VERDICTS:
            raise ConfigError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?)", (event_id, verdict, at))

    def verdicts(self) -> dict[str, tuple[str, str]]:
        """Every event's verdict and when it was given, by event id."""
        if not self._has_verdicts:
            return {}
        rows = self._db.execute("SELECT event_id, verdict, at FROM verdicts")
        return {event_id: (verdict, at) for event_id, verdict, at in rows}

    def close_interrupted(self) -> list[StoredEvent]:
        """Close the events an earlier run left open (SIGKILL, a power cut): each keeps the
        extent of its last stored window and is marked interrupted. Only a daemon holding the
        store's lock calls this, so no open event here belongs to a live run."""
        with self._db:
            left_open = [e for e in self.since() if e.state == "open"]
            self._db.execute("UPDATE events SET state = 'closed', interrupted = 1 WHERE state = 'open'")
        return [replace(e, state="closed", interrupted=True) for e in left_open]

    def close(self) -> None:
        self._db.close()
