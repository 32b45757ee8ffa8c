"""The daemon's event store, opened and written so that a full disk never stops the listening.

A unit whose disk is full at start (or whose store cannot be created for want of space), or
fills while it runs, still detects: every event goes to stdout (the journal) as always, one the
store does not take is kept in memory, and the store is tried again every `RETRY_SECONDS`; once
it takes them, the kept events are written (and MQTT, which sends from the store, sends them).
Any other problem with the store at start (another program's file, no permission) is a
configuration error and stops the start as before.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence

from nightear.errors import ConfigError
from nightear.output import no_space
from nightear.sinks.store import EventStore, StoredBearing, StoredEvent, StoreLock, refuse_foreign

RETRY_SECONDS = 30.0
MAX_KEPT_EVENTS = 10_000  # events held in memory while the store cannot be written


class StoreOpener:
    """Holds the store's lock and connection once they open; keeps events until then."""

    def __init__(self, path: str, log: Callable[[str], None]):
        self.path, self.log = path, log
        self.lock: StoreLock | None = None
        self.store: EventStore | None = None
        self.kept: dict[str, tuple[StoredEvent, Sequence[StoredBearing]]] = {}
        self._next_try = 0.0

    def open(self) -> EventStore | None:
        """The store, or None while its disk is full (said once); ConfigError for anything else."""
        refuse_foreign(self.path)  # before the lock: another program's file gains nothing beside it
        try:
            self.lock = self.lock or StoreLock(self.path)
            self.store = EventStore(self.path)
        except ConfigError:
            full = no_space(self.path)
            if full is None:
                raise
            if not self._next_try:
                self.log(f"nightear: warning: {self.path}: event store not opened ({full}): events go "
                         f"to stdout and are kept until it opens, tried every {RETRY_SECONDS:.0f} s")
            self._next_try = time.monotonic() + RETRY_SECONDS
            return None
        return self.store

    def keep(self, event: StoredEvent, track: Sequence[StoredBearing]) -> None:
        """Hold an event (its latest state) until the store opens."""
        self.kept.pop(event.id, None)
        self.kept[event.id] = (event, track)
        while len(self.kept) > MAX_KEPT_EVENTS:
            self.kept.pop(next(iter(self.kept)))

    def retry(self) -> EventStore | None:
        """When due: open the store if it is not, and write the events kept meanwhile (an error
        writing them keeps them for the next try)."""
        if time.monotonic() < self._next_try or (self.store is not None and not self.kept):
            return self.store
        store = self.store or self.open()
        if store is None:
            return None
        self._next_try = time.monotonic() + RETRY_SECONDS
        for event_id, (event, track) in list(self.kept.items()):
            store.save(event, track)
            del self.kept[event_id]
        self.log(f"nightear: {self.path}: the events kept while it could not be written are stored")
        return store

    def retry_logged(self) -> EventStore | None:
        """`retry`, a store that fails otherwise than by space said as a warning, not raised."""
        try:
            return self.retry()
        except (ConfigError, sqlite3.Error, OSError) as exc:
            self.log(f"nightear: warning: {self.path}: still not writable ({exc})")
            return None

    def save(self, event: StoredEvent, track: Sequence[StoredBearing]) -> EventStore | None:
        """Write the event, or keep it while the store is not open; a failed write (a disk full
        since) is a warning: the event's line still goes out. Returns the store, if open."""
        if self.store is None:
            self.keep(event, track)
            return self.retry_logged()
        try:
            self.store.save(event, track)
        except (sqlite3.Error, OSError) as exc:
            self.log(f"nightear: warning: event {event.id} not stored yet, kept and retried "
                     f"({no_space(self.path, exc) or exc})")
            self.keep(event, track)
            self._next_try = time.monotonic() + RETRY_SECONDS
        return self.store
