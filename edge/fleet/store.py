"""The post's own record: every unit's events, its last heartbeat, each event's clip, the
operators' acknowledgements and verdicts, and the position fixes with their tracks.

One SQLite file in WAL mode, marked as the fleet's (`PRAGMA application_id`) when created, so
that any other file (a unit's event store, another program's database) is refused before a
byte of it is changed. One connection shared by the fleet's MQTT thread and the console's
request threads, behind a lock: the writes are small and few.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from nightear.errors import ConfigError
from nightear.schema import EventMessage
from nightear.sinks import PRIVATE_FILE_MODE

FLEET_APPLICATION_ID = 0x4E454654  # "NEFT": a nightear fleet store
STORE_VERSION = 2  # 1: events only; 2: units, clips, acks, verdicts, fixes
FLEET_TABLES = {"events", "units", "clips", "clip_parts", "acks", "verdicts", "fixes"}
STORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY, site TEXT NOT NULL, node TEXT NOT NULL, state TEXT NOT NULL,
    start TEXT NOT NULL, end TEXT NOT NULL, received TEXT NOT NULL, payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_span ON events (start, end);
CREATE TABLE IF NOT EXISTS units (
    site TEXT NOT NULL, node TEXT NOT NULL, received TEXT NOT NULL, heartbeat TEXT NOT NULL,
    PRIMARY KEY (site, node)
);
CREATE TABLE IF NOT EXISTS clips (
    event_id TEXT PRIMARY KEY, flac BLOB NOT NULL, seconds REAL NOT NULL,
    sample_rate INTEGER NOT NULL, truncated INTEGER NOT NULL, received TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS clip_parts (
    event_id TEXT NOT NULL, part INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (event_id, part)
);
CREATE TABLE IF NOT EXISTS acks (event_id TEXT PRIMARY KEY, by TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS verdicts (
    event_id TEXT PRIMARY KEY, verdict TEXT NOT NULL CHECK (verdict IN ('drone', 'not-drone')),
    by TEXT NOT NULL, at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fixes (
    events TEXT PRIMARY KEY, t TEXT NOT NULL, received TEXT NOT NULL, fix TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS fixes_t ON fixes (t);
"""
EXPORT_COLUMNS = ("id", "site", "node", "state", "start", "end", "received", "peak_confidence",
                  "mean_confidence", "windows", "bearing_deg", "bearing_spread_deg", "elevation_deg",
                  "unit_lat_deg", "unit_lon_deg", "unit_alt_m", "model", "model_sha256", "interrupted")
FIX_COLUMNS = ("t", "lat_deg", "lon_deg", "alt_m", "major_m", "minor_m", "major_bearing_deg",
               "crossing_deg", "units", "events", "received")


def parse_utc(text: str) -> float:
    """Seconds since the epoch of an ISO-8601 time (UTC when it names no zone)."""
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def utc_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _read_only_uri(path: Path) -> str:
    """A URI that reads `path` without creating anything beside it: SQLite makes -wal and -shm
    files to read a WAL database, unless told the file cannot change (true without a WAL)."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    return uri if Path(f"{path}-wal").exists() else uri + "&immutable=1"


def _recognise(path: Path) -> None:
    """Refuse, without writing, a file that is not a fleet store (or an empty new one)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        db = sqlite3.connect(_read_only_uri(path), uri=True)
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path}: not a nightear fleet store ({exc}); nothing was changed") from None
    if app_id == FLEET_APPLICATION_ID:
        return
    if app_id == 0 and "events" in tables and {"received", "payload"} <= columns and tables <= FLEET_TABLES:
        return  # a fleet store from before the marking
    what = ("a unit's event store: `nightear events` reads it" if "peak_confidence" in columns
            else "another program's SQLite file")
    raise ConfigError(f"{path}: not a nightear fleet store ({what}); nothing was changed")


class FleetStore:
    """Every event the fleet has heard, by id, its latest state winning (closed is final),
    and what the post adds to them. `read_only` (exports) opens without writing."""

    def __init__(self, path: str | Path | None, read_only: bool = False):
        where = ":memory:" if path is None else str(path)
        self._lock = threading.RLock()
        try:
            if path is not None:
                _recognise(Path(path))
            if read_only and path is not None:
                self._db = sqlite3.connect(_read_only_uri(Path(path)), uri=True,
                                           isolation_level=None, check_same_thread=False)
                self._tables = {row[0] for row in self._db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                return
            if path is not None:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                if not Path(path).exists():  # where every unit was and what it heard: private
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
            self._db = sqlite3.connect(where, isolation_level=None, timeout=10.0, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # a heartbeat a unit: no fsync each
            self._db.executescript(STORE_SCHEMA)
            self._db.execute(f"PRAGMA application_id = {FLEET_APPLICATION_ID}")
            self._db.execute(f"PRAGMA user_version = {STORE_VERSION}")
            self._tables = set(FLEET_TABLES)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"{where}: cannot open the fleet store ({exc})") from None

    def _rows(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(query, args).fetchall()

    def _write(self, query: str, args: tuple[Any, ...]) -> int:
        with self._lock, self._db:
            return self._db.execute(query, args).rowcount

    def save(self, event: EventMessage, received: str) -> bool:
        """Store the event; False when nothing new came (the same id in the same or an older
        state: a re-delivery)."""
        start, end = utc_iso(parse_utc(event.start)), utc_iso(parse_utc(event.end))
        return self._write(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "state = excluded.state, end = excluded.end, received = excluded.received, "
            "payload = excluded.payload WHERE events.state = 'open' AND excluded.state = 'closed'",
            (event.id, event.site, event.node, event.state, start, end, received,
             msgspec.json.encode(event).decode())) > 0

    def overlapping(self, start_s: float, end_s: float) -> list[EventMessage]:
        """Events of any unit that overlap [start_s, end_s] (epoch seconds)."""
        rows = self._rows("SELECT payload FROM events WHERE start <= ? AND end >= ? ORDER BY start",
                          (utc_iso(end_s), utc_iso(start_s)))
        return [msgspec.json.decode(row[0], type=EventMessage) for row in rows]

    def events(self, since: datetime | None = None) -> Iterator[tuple[EventMessage, str]]:
        """(event, received) oldest first, all or those that started at or after `since`."""
        query, args = "SELECT payload, received FROM events", ()  # type: tuple[str, tuple[str, ...]]
        if since is not None:
            query, args = query + " WHERE start >= ?", (utc_iso(since.timestamp()),)
        for payload, received in self._rows(query + " ORDER BY start, id", args):
            yield msgspec.json.decode(payload, type=EventMessage), received

    def event(self, event_id: str) -> tuple[EventMessage, str] | None:
        rows = self._rows("SELECT payload, received FROM events WHERE id = ?", (event_id,))
        return (msgspec.json.decode(rows[0][0], type=EventMessage), rows[0][1]) if rows else None

    def recent(self, limit: int) -> list[tuple[EventMessage, str]]:
        """The `limit` latest events, newest first."""
        rows = self._rows("SELECT payload, received FROM events ORDER BY start DESC, id LIMIT ?", (limit,))
        return [(msgspec.json.decode(p, type=EventMessage), r) for p, r in rows]

    def count(self) -> int:
        return int(self._rows("SELECT count(*) FROM events")[0][0])

    def save_heartbeat(self, site: str, node: str, received: str, heartbeat: bytes) -> None:
        self._write("INSERT OR REPLACE INTO units VALUES (?, ?, ?, ?)", (site, node, received, heartbeat))

    def heartbeats(self) -> list[tuple[str, str, str, str]]:
        """(site, node, received, heartbeat JSON) of every unit heard."""
        return [tuple(row) for row in self._rows("SELECT * FROM units ORDER BY site, node")]  # type: ignore[misc]

    def save_clip(self, event_id: str, flac: bytes, seconds: float, sample_rate: int, truncated: bool,
                  received: str) -> bool:
        """Keep an event's clip; False when it was here already (a re-delivery)."""
        return self._write("INSERT OR IGNORE INTO clips VALUES (?, ?, ?, ?, ?, ?)",
                           (event_id, flac, seconds, sample_rate, int(truncated), received)) > 0

    def save_clip_part(self, event_id: str, part: int, parts: int, data: bytes) -> bytes | None:
        """Keep one part of a clip (parts outlive a restart of the post); the whole clip once
        its last part is in, else None."""
        with self._lock, self._db:
            self._db.execute("INSERT OR IGNORE INTO clip_parts VALUES (?, ?, ?)", (event_id, part, data))
            rows = self._db.execute("SELECT data FROM clip_parts WHERE event_id = ? AND part < ? "
                                    "ORDER BY part", (event_id, parts)).fetchall()
            if len(rows) < parts:
                return None
            self._db.execute("DELETE FROM clip_parts WHERE event_id = ?", (event_id,))
        return b"".join(bytes(row[0]) for row in rows)

    def trim_clips(self, quota_bytes: int) -> int:
        """Delete the oldest clips no operator judged until the rest fit `quota_bytes`; judged
        ones are training data and stay. Returns how many went."""
        with self._lock, self._db:
            rows = self._db.execute(
                "SELECT c.event_id, length(c.flac) FROM clips c LEFT JOIN verdicts v "
                "ON v.event_id = c.event_id WHERE v.event_id IS NULL ORDER BY c.received").fetchall()
            total = int(self._db.execute("SELECT coalesce(sum(length(flac)), 0) FROM clips").fetchone()[0])
            gone = []
            for event_id, size in rows:
                if total <= quota_bytes:
                    break
                gone.append((event_id,))
                total -= size
            self._db.executemany("DELETE FROM clips WHERE event_id = ?", gone)
        return len(gone)

    def clip(self, event_id: str) -> bytes | None:
        rows = self._rows("SELECT flac FROM clips WHERE event_id = ?", (event_id,))
        return bytes(rows[0][0]) if rows else None

    def clip_ids(self) -> set[str]:
        return {row[0] for row in self._rows("SELECT event_id FROM clips")}

    def ack(self, event_id: str, by: str, at: str) -> None:
        """An operator saw the alert (the first acknowledgement stands)."""
        self._write("INSERT OR IGNORE INTO acks VALUES (?, ?, ?)", (event_id, by, at))

    def acks(self) -> dict[str, tuple[str, str]]:
        return {row[0]: (row[1], row[2]) for row in self._rows("SELECT * FROM acks")}

    def set_verdict(self, event_id: str, verdict: str, by: str, at: str) -> None:
        """An operator's word on an event (a later one replaces it)."""
        if verdict not in ("drone", "not-drone"):
            raise ConfigError(f"verdict must be drone or not-drone, got {verdict!r}")
        self._write("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?)", (event_id, verdict, by, at))

    def verdicts(self) -> dict[str, tuple[str, str, str]]:
        """event id -> (verdict, by, at)."""
        return {row[0]: (row[1], row[2], row[3]) for row in self._rows("SELECT * FROM verdicts")}

    def save_fix(self, fix: dict[str, Any], received: str) -> None:
        """A fix by the events it fuses; a later fix of the same events (their closing, with
        the whole track) replaces the first."""
        key = ",".join(fix["events"])  # type: ignore[arg-type]
        self._write("INSERT OR REPLACE INTO fixes VALUES (?, ?, ?, ?)",
                    (key, fix["t"], received, json.dumps(fix)))

    def fixes(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Stored fixes oldest first, each with its `received` time."""
        if "fixes" not in self._tables:  # a store from before fixes were kept, read as it is
            return []
        query, args = "SELECT fix, received FROM fixes", ()  # type: tuple[str, tuple[str, ...]]
        if since is not None:
            query, args = query + " WHERE t >= ?", (utc_iso(since.timestamp()),)
        return [{**json.loads(fix), "received": received}
                for fix, received in self._rows(query + " ORDER BY t", args)]

    def close(self) -> None:
        with self._lock:
            self._db.close()
