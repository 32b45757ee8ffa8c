"""`nightear fleet`: where the units' alerts meet.

It subscribes to `nightear/<site>/+/+` (QoS 1, a persistent session: the broker keeps what
arrives while the fleet is away), stores every event in its own SQLite store by id (a message
delivered twice, or re-sent after an outage, is stored and printed once), keeps each unit's
last heartbeat, and prints one JSON line per alert, unit change (up/down), clock warning and
position fix. A payload that does not fit the schema (malformed, oversized, a newer version)
is ignored with a log line.

`Fleet` holds the logic without any I/O but the store, so tests and the benchmark drive it
with payloads and a clock of their own; `run` wires it to a broker.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TextIO

import msgspec

from nightear.errors import ConfigError
from nightear.position import Fix, FixRefused, Sighting, locate, track
from nightear.schema import (
    EventMessage,
    HeartbeatMessage,
    Message,
    PayloadError,
    StatusMessage,
    decode,
)
from nightear.sinks import PRIVATE_FILE_MODE
from nightear.sinks.broker import BrokerLink, MqttSettings

FIX_SLACK_SECONDS = 3.0  # sound takes ~3 s to cross a kilometre: events this far apart overlap
CLOCK_SAMPLES = 5  # heartbeats behind a unit's clock offset
STORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    state TEXT NOT NULL,
    start TEXT NOT NULL,
    end TEXT NOT NULL,
    received TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_span ON events (start, end);
"""
EXPORT_COLUMNS = ("id", "site", "node", "state", "start", "end", "received", "peak_confidence",
                  "mean_confidence", "windows", "bearing_deg", "bearing_spread_deg", "elevation_deg",
                  "lat_deg", "lon_deg", "alt_m", "model", "model_sha256", "interrupted")


class FleetSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The fleet's own store and when it calls a unit down or its clock wrong."""

    store: str | None = None  # the fleet's SQLite file; None: kept in memory only
    client_id: str | None = None  # MQTT client id; None: nightear-fleet-<site>
    down_after_heartbeats: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    clock_tolerance_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 1.0
    track_bin_seconds: Annotated[float, msgspec.Meta(ge=0.25, le=600.0)] = 2.0


def parse_utc(text: str) -> float:
    """Seconds since the epoch of an ISO-8601 time (UTC when it names no zone)."""
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def utc_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


class FleetStore:
    """Every event the fleet has heard, by id, its latest state winning (closed is final)."""

    def __init__(self, path: str | Path | None):
        where = ":memory:" if path is None else str(path)
        try:
            if path is not None:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                if not Path(path).exists():  # where every unit was and what it heard: private
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
            self._db = sqlite3.connect(where, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(STORE_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"{where}: cannot open the fleet store ({exc})") from None

    def save(self, event: EventMessage, received: str) -> bool:
        """Store the event; False when nothing new came (the same id in the same or an older
        state: a re-delivery)."""
        start, end = utc_iso(parse_utc(event.start)), utc_iso(parse_utc(event.end))
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "state = excluded.state, end = excluded.end, received = excluded.received, "
                "payload = excluded.payload WHERE events.state = 'open' AND excluded.state = 'closed'",
                (event.id, event.site, event.node, event.state, start, end, received,
                 msgspec.json.encode(event).decode()))
        return cursor.rowcount > 0

    def overlapping(self, start_s: float, end_s: float) -> list[EventMessage]:
        """Events of any unit that overlap [start_s, end_s] (epoch seconds)."""
        rows = self._db.execute("SELECT payload FROM events WHERE start <= ? AND end >= ? ORDER BY start",
                                (utc_iso(end_s), utc_iso(start_s)))
        return [msgspec.json.decode(row[0], type=EventMessage) for row in rows]

    def events(self, since: datetime | None = None) -> Iterator[tuple[EventMessage, str]]:
        """(event, received) oldest first, all or those that started at or after `since`."""
        query, args = "SELECT payload, received FROM events", ()  # type: tuple[str, tuple[str, ...]]
        if since is not None:
            query, args = query + " WHERE start >= ?", (utc_iso(since.timestamp()),)
        for payload, received in self._db.execute(query + " ORDER BY start, id", args):
            yield msgspec.json.decode(payload, type=EventMessage), received

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])

    def close(self) -> None:
        self._db.close()


@dataclass
class UnitHealth:
    """What the fleet knows of one unit."""

    up: bool | None = None
    heartbeat_at: float | None = None  # the fleet's clock at its last heartbeat
    interval_s: float = 10.0
    offsets: deque[float] = field(default_factory=lambda: deque(maxlen=CLOCK_SAMPLES))
    clock_off: bool = False


class Fleet:
    """Payloads in, JSON lines out (see the module docstring). `clock` times heartbeats
    (monotonic), `wall` is the receipt time that units' clocks are checked against."""

    def __init__(self, settings: FleetSettings, store: FleetStore, log: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.settings, self.store, self.log, self.clock, self.wall = settings, store, log, clock, wall
        self.units: dict[tuple[str, str], UnitHealth] = {}
        self.ignored = 0  # payloads refused by the schema
        self.duplicates = 0  # events heard again with nothing new

    def receive(self, topic_name: str, payload: bytes) -> list[dict[str, object]]:
        """One MQTT message: the lines it gives (none for a duplicate or a heartbeat)."""
        received = self.wall()
        try:
            message = decode(topic_name, payload)
        except PayloadError as exc:
            self.ignored += 1
            self.log(f"nightear: warning: ignored a message on {topic_name[:120]}: {str(exc)[:200]}")
            return []
        lines = self._check_clock(message, received)
        if isinstance(message, HeartbeatMessage):
            return lines + self._heartbeat(message)
        if isinstance(message, StatusMessage):
            reason = "online" if message.state == "online" else "offline (its last will or a clean stop)"
            unit = self._unit(message.site, message.node)
            if message.state == "online" and unit.heartbeat_at is not None:
                unit.heartbeat_at = self.clock()  # back: its silence is counted from now
            return lines + self._set_up(message.site, message.node, message.state == "online", reason)
        return lines + self._event(message, received)

    def tick(self) -> list[dict[str, object]]:
        """Call every second or so: units silent for too many heartbeats go down."""
        lines: list[dict[str, object]] = []
        now = self.clock()
        for (site, node), unit in self.units.items():
            if unit.up and unit.heartbeat_at is not None:
                silent = now - unit.heartbeat_at
                if silent > self.settings.down_after_heartbeats * unit.interval_s:
                    lines += self._set_up(site, node, False, f"silent for {silent:.0f} s "
                                          f"({self.settings.down_after_heartbeats} heartbeats)")
        return lines

    def _unit(self, site: str, node: str) -> UnitHealth:
        return self.units.setdefault((site, node), UnitHealth())

    def _set_up(self, site: str, node: str, up: bool, reason: str) -> list[dict[str, object]]:
        unit = self._unit(site, node)
        if unit.up == up:
            return []
        unit.up = up
        return [{"kind": "unit", "site": site, "node": node, "state": "up" if up else "down",
                 "reason": reason, "at": utc_iso(self.wall())}]

    def _heartbeat(self, beat: HeartbeatMessage) -> list[dict[str, object]]:
        unit = self._unit(beat.site, beat.node)
        unit.heartbeat_at, unit.interval_s = self.clock(), beat.interval_s
        return self._set_up(beat.site, beat.node, True, "heartbeat")

    def _check_clock(self, message: Message, received: float) -> list[dict[str, object]]:
        """A unit's clock against the receipt times: the sample nearest to zero latency (the
        largest sent - received) over the last few heartbeats."""
        if not isinstance(message, HeartbeatMessage):
            return []
        unit = self._unit(message.site, message.node)
        try:
            unit.offsets.append(parse_utc(message.sent) - received)
        except ValueError:
            return []
        offset = max(unit.offsets)
        off = abs(offset) > self.settings.clock_tolerance_seconds
        if off == unit.clock_off:
            return []
        unit.clock_off = off
        return [{"kind": "clock", "site": message.site, "node": message.node,
                 "state": "off" if off else "ok", "offset_s": round(offset, 3),
                 "tolerance_s": self.settings.clock_tolerance_seconds}]

    def _event(self, event: EventMessage, received: float) -> list[dict[str, object]]:
        if not self.store.save(event, utc_iso(received)):
            self.duplicates += 1
            return []
        alert: dict[str, object] = {"kind": "alert", **{k: v for k, v in msgspec.structs.asdict(
            event).items() if k not in ("track", "schema") and v is not None}}
        if event.position is not None:
            alert["position"] = msgspec.structs.asdict(event.position)
        alert["received"] = utc_iso(received)
        return [alert, *self._fix(event)]

    def _fix(self, event: EventMessage) -> list[dict[str, object]]:
        """A position fix when other units heard this event's drone at the same time."""
        if not _locatable(event):
            return []
        start, end = parse_utc(event.start), parse_utc(event.end)
        others = [e for e in self.store.overlapping(start - FIX_SLACK_SECONDS, end + FIX_SLACK_SECONDS)
                  if _locatable(e) and e.node != event.node]
        if not others:
            return []
        heard = [event, *others]
        ids = sorted(e.id for e in heard)
        common = (max(parse_utc(e.start) for e in heard) - FIX_SLACK_SECONDS,
                  min(parse_utc(e.end) for e in heard) + FIX_SLACK_SECONDS)
        sightings = [s for e in heard for s in _sightings(e)]
        now = [s for s in sightings if common[0] <= s.t_s <= common[1]] or sightings
        try:
            fix = locate(now)
        except FixRefused as exc:
            return [{"kind": "no_fix", "events": ids, "reason": str(exc)}]
        path = track(sightings, self.settings.track_bin_seconds)
        return [{"kind": "fix", "events": ids, **_fix_json(fix),
                 "track": [{"t": utc_iso(f.t_s), "lat_deg": f.lat_deg, "lon_deg": f.lon_deg,
                            "major_m": f.major_m} for f in path]}]


def _locatable(event: EventMessage) -> bool:
    """An event with a bearing track from a unit whose position is known (a linear array's
    bearing has a mirror image and is left out)."""
    return (event.position is not None and event.bearing_deg is not None and bool(event.track)
            and event.bearing_mirror_deg is None)


def _sightings(event: EventMessage) -> list[Sighting]:
    """The event's windows over its span (the windows that made it an event) as sightings."""
    assert event.position is not None
    start, end = parse_utc(event.start), parse_utc(event.end)
    spread = event.bearing_spread_deg or 0.0
    out = []
    for point in event.track:
        t = parse_utc(point.t)
        if start - 1e-3 <= t <= end:
            out.append(Sighting(event.node, event.position, t, point.bearing_deg, spread,
                                point.elevation_deg))
    return out


def _fix_json(fix: Fix) -> dict[str, object]:
    out = asdict(fix)
    out["t"] = utc_iso(out.pop("t_s"))
    out["units"] = list(fix.units)
    return out


def export(store: FleetStore, fmt: str, out: TextIO, since: datetime | None = None) -> int:
    """The fleet's events as CSV (one row each, no track) or JSON lines (with the track), for
    the retraining notebooks. Returns how many."""
    count = 0
    writer = csv.DictWriter(out, EXPORT_COLUMNS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for event, received in store.events(since):
        row = msgspec.structs.asdict(event)
        position = row.pop("position")
        row.update(received=received, **(msgspec.structs.asdict(position) if position else {}))
        if writer is not None:
            writer.writerow({k: row.get(k) for k in EXPORT_COLUMNS})
        else:
            row["track"] = [msgspec.structs.asdict(p) for p in event.track]
            out.write(json.dumps(row) + "\n")
        count += 1
    return count


def run(mqtt_settings: MqttSettings, settings: FleetSettings, out: TextIO, log: Callable[[str], None],
        stop: threading.Event, base: Path | None = None,
        clock: Callable[[], float] = time.monotonic) -> Fleet:
    """Subscribe to the site and print lines until `stop` is set."""
    if not mqtt_settings.enabled:
        raise ConfigError("nightear fleet needs mqtt.brokers in its config: the broker to subscribe to")
    site = mqtt_settings.site
    store = FleetStore(settings.store if settings.store is None or base is None
                       or Path(settings.store).is_absolute() else base / settings.store)
    fleet = Fleet(settings, store, log, clock)
    link = BrokerLink(mqtt_settings, settings.client_id or f"nightear-fleet-{site}", False, log, base,
                      patience="retrying")

    def emit(lines: list[dict[str, object]]) -> None:
        for line in lines:
            out.write(json.dumps(line) + "\n")
        if lines:
            out.flush()

    link.on_connected = lambda: link.client.subscribe(f"nightear/{site}/+/+", qos=1) and None
    link.client.on_message = lambda client, userdata, msg: emit(fleet.receive(msg.topic, msg.payload))
    log(f"nightear: fleet of site {site!r}, store {settings.store or 'in memory'}")
    ticked = time.monotonic()
    try:
        while not stop.is_set():
            link.service(stop)
            if time.monotonic() - ticked >= 1.0:
                emit(fleet.tick())
                ticked = time.monotonic()
    finally:
        link.close()
        store.close()
    return fleet
