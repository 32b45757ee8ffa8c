"""The MQTT sink: store-and-forward from the SQLite store to a broker, and the unit's heartbeat.

The store is the record; MQTT is how the record travels. An event is published (QoS 1) from
the store and marked sent, in the store's own `mqtt_sent` table, only when the broker
acknowledges it (PUBACK). Whatever a broker outage, a network cut or a reboot left unsent goes
out when the broker is back, oldest first, at most `max_events_per_second`; the fleet stores
events by id, so a message the broker got twice (an acknowledgement lost with the link) is
stored once. A unit keeps a retained `status` (`online`; its last will `offline`), so an
operator sees a dead unit at once.

One thread owns the connection, the publishing and its own store connection: no locks. It
connects to the configured brokers in turn (a cluster's nodes, or a load balancer in front of
them), and a refused or unreachable broker is reported and retried with backoff while the
daemon goes on detecting and storing.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt

from nightear.errors import ConfigError
from nightear.schema import (
    MAX_TRACK_POINTS,
    SCHEMA_VERSION,
    EventMessage,
    HeartbeatMessage,
    StatusMessage,
    TrackPoint,
    UnitPosition,
    encode,
    topic,
)
from nightear.sinks.broker import LOOP_SECONDS, MAX_IN_FLIGHT, BrokerLink, MqttSettings, utc_now
from nightear.sinks.clip_sender import ClipSender
from nightear.sinks.store import APPLICATION_ID, COLUMNS, StoredEvent

RESCAN_SECONDS = 10.0  # the store is read for pending events when told, else this often
STORE_RETRY_SECONDS = 5.0  # after the store failed (full disk, locked): wait, then go on
SENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS mqtt_sent (
    event_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    acked TEXT NOT NULL
);
"""


class EventForwarder:
    """Sends the store's events to the broker and the unit's heartbeat, on its own thread.

    `wake()` after storing an event sends it at once. `heartbeat(pending)` gives the unit's
    health (the daemon's counters); `clock` paces heartbeats and the send rate (tests move it).
    """

    def __init__(self, settings: MqttSettings, store_path: str | Path | None, node: str,
                 heartbeat: Callable[[int], HeartbeatMessage] | None,
                 log: Callable[[str], None], position: UnitPosition | None = None,
                 heading_deg: float | None = None, base: Path | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if store_path is None:
            raise ConfigError("mqtt.brokers needs store.path: events are sent from the store, so "
                              "that a broker outage loses none")
        self.settings, self.node, self.log, self.clock = settings, node, log, clock
        self.store_path = Path(store_path)
        self.heartbeat, self.position, self.heading_deg = heartbeat, position, heading_deg
        self.base = base
        self.clips: ClipSender | None = None  # made on the thread, with its store connection
        self._clips_due = True
        self._drain_until = 0.0
        self.link = BrokerLink(settings, f"nightear-{settings.site}-{node}", True, log, base)
        status_topic = topic(settings.site, node, "status")
        self.link.client.will_set(status_topic, self._status("offline"), qos=1, retain=True)
        self.link.on_connected = self._on_connected
        self.link.client.on_publish = self._on_publish
        self._in_flight: dict[int, tuple[str, str]] = {}  # mid -> (event id, state)
        self._wake, self.stop_event = threading.Event(), threading.Event()
        self._tokens = 1.0
        self._refilled = clock()
        self._dirty, self._next_scan = True, 0.0  # whether the store may hold something to send
        self._next_heartbeat = 0.0
        self._db: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self.acked = 0  # events the broker acknowledged since start

    def _status(self, state: str) -> bytes:
        return encode(StatusMessage(SCHEMA_VERSION, self.node, self.settings.site, state, utc_now()))  # type: ignore[arg-type]

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """An event was stored: send it now (if the broker is there and the rate allows)."""
        self._wake.set()

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what can be sent within `timeout_s`, say `offline`, disconnect."""
        self._drain_until = time.monotonic() + timeout_s
        self.stop_event.set()
        self._wake.set()
        self._thread.join(timeout_s + 2.0)

    def _run(self) -> None:
        self._db = sqlite3.connect(self.store_path, isolation_level=None, timeout=10.0)
        schema_ready = False
        try:
            while not self.stop_event.is_set() or self._draining():
                try:
                    # the sent tables go only into a store the daemon has opened (and so marked
                    # as nightear's): while a full disk keeps it closed, wait, never write first
                    if not schema_ready:
                        if self._db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                            raise sqlite3.OperationalError("not opened by the daemon yet")
                        self._db.executescript(SENT_SCHEMA)
                        self.clips = ClipSender(self._db, self.link.client, self.settings.site,
                                                self.node, self.base, self.log)
                        schema_ready = True
                    self._step()
                except sqlite3.Error as exc:  # a full disk or a locked store: report, try again
                    self.log(f"nightear: warning: mqtt: event store {self.store_path}: {exc}; "
                             f"sending again in {STORE_RETRY_SECONDS:.0f} s")
                    self.stop_event.wait(STORE_RETRY_SECONDS)
            if self.link.connected:
                info = self.link.client.publish(topic(self.settings.site, self.node, "status"),
                                                self._status("offline"), qos=1, retain=True)
                deadline = time.monotonic() + 1.0
                while not info.is_published() and time.monotonic() < deadline and self.link.connected:
                    self.link.client.loop(LOOP_SECONDS)
                self.link.close()
        finally:
            self._db.close()

    def _step(self) -> None:
        """One turn: the network, then what the store holds to send, then the heartbeat."""
        self.link.service(self._wake)
        if self._wake.is_set():
            self._wake.clear()
            self._dirty = True
        if self.link.connected:
            self._send_pending()
            self._send_heartbeat()
            self._send_clip()

    def _send_clip(self) -> None:
        """A clip part when no event waits: evidence goes after alerts, never before."""
        if (self.clips is None or self.clips.in_flight is not None or self._in_flight or self._dirty
                or self.stop_event.is_set()):
            return
        if (self._clips_due or self.clock() >= self._next_scan) and not self.pending(1):
            self._clips_due = self.clips.send()

    def _draining(self) -> bool:
        """After close(): go on while events are in flight or pending and time is left (a unit
        stopped right after an alert still gets it out if a broker takes it in time)."""
        if time.monotonic() >= self._drain_until:
            return False
        return bool(self._in_flight) or self.pending_count() > 0

    def _on_connected(self) -> None:
        self._in_flight.clear()  # unacknowledged sends of the last connection go out again
        self._dirty = self._clips_due = True
        if self.clips is not None:
            self.clips.connection_lost()
        self.link.client.publish(topic(self.settings.site, self.node, "status"), self._status("online"),
                                 qos=1, retain=True)
        self._next_heartbeat = self.clock()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: object,
                    properties: object) -> None:
        if self.clips is not None and self.clips.acknowledged(mid):
            self._clips_due = True
            return
        sent = self._in_flight.pop(mid, None)
        if sent is None or self._db is None:
            return
        event_id, state = sent
        self._clips_due = self._clips_due or state == "closed"
        self._dirty = True  # room in flight: the next pending event may go
        self._db.execute(  # closed is final: a late PUBACK of the open never undoes it
            "INSERT INTO mqtt_sent (event_id, state, acked) VALUES (?, ?, ?) ON CONFLICT(event_id) "
            "DO UPDATE SET state = excluded.state, acked = excluded.acked WHERE mqtt_sent.state != 'closed'",
            (event_id, state, utc_now()))
        self.acked += 1

    def pending(self, limit: int) -> list[tuple[str, str]]:
        """(id, state) of stored events the broker has not acknowledged, oldest first."""
        assert self._db is not None
        return list(self._db.execute(
            "SELECT e.id, e.state FROM events e LEFT JOIN mqtt_sent s ON s.event_id = e.id "
            "WHERE s.state IS NULL OR (s.state != e.state AND s.state != 'closed') "
            "ORDER BY e.start, e.id LIMIT ?", (limit,)))

    def pending_count(self) -> int:
        assert self._db is not None
        (count,) = self._db.execute(
            "SELECT count(*) FROM events e LEFT JOIN mqtt_sent s ON s.event_id = e.id "
            "WHERE s.state IS NULL OR (s.state != e.state AND s.state != 'closed')").fetchone()
        return int(count)

    def _send_pending(self) -> None:
        now = self.clock()
        rate = self.settings.max_events_per_second
        self._tokens = min(max(1.0, rate), self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens < 1.0 or len(self._in_flight) >= MAX_IN_FLIGHT:
            return
        if not self._dirty and now < self._next_scan:  # a scan per change, not per loop: a Pi's CPU
            return
        self._dirty, self._next_scan = False, now + RESCAN_SECONDS
        busy = set(self._in_flight.values())
        assert self._db is not None
        for event_id, state in self.pending(MAX_IN_FLIGHT + len(busy)):
            if self._tokens < 1.0 or len(self._in_flight) >= MAX_IN_FLIGHT:
                self._dirty = True  # more to send once the rate or the broker allows
                break
            if (event_id, state) in busy:
                continue
            payload = event_payload(self._db, event_id, self.settings.site, self.node, self.position,
                                    self.heading_deg)
            info = self.link.client.publish(topic(self.settings.site, self.node, "event"), payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self._dirty = True
                break
            self._in_flight[info.mid] = (event_id, state)
            self._tokens -= 1.0

    def _send_heartbeat(self) -> None:
        if self.heartbeat is None or self.clock() < self._next_heartbeat:
            return
        self._next_heartbeat = self.clock() + self.settings.heartbeat_seconds
        message = self.heartbeat(self.pending_count())
        self.link.client.publish(topic(self.settings.site, self.node, "heartbeat"), encode(message), qos=1)


def event_payload(db: sqlite3.Connection, event_id: str, site: str, node: str,
                  position: UnitPosition | None, heading_deg: float | None) -> bytes:
    """A stored event as the schema's JSON, from the store as it stands now."""
    row = db.execute(f"SELECT {COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
    e = StoredEvent(*row)
    track = [TrackPoint(*point) for point in db.execute(
        "SELECT t, bearing_deg, elevation_deg, coherence, confidence FROM bearings "
        "WHERE event_id = ? ORDER BY t", (event_id,))]
    if len(track) > MAX_TRACK_POINTS:  # a very long pass: keep every k-th window
        track = track[:: -(-len(track) // MAX_TRACK_POINTS)]
    return encode(EventMessage(
        schema=SCHEMA_VERSION, id=e.id, node=node, site=site, state=e.state,  # type: ignore[arg-type]
        start=e.start, end=e.end, sent=utc_now(), peak_confidence=e.peak_confidence,
        mean_confidence=e.mean_confidence, windows=e.windows, model=e.model,
        model_sha256=e.model_sha256, bearing_deg=e.bearing_deg,
        bearing_spread_deg=e.bearing_spread_deg, elevation_deg=e.elevation_deg,
        bearing_mirror_deg=e.bearing_mirror_deg, position=position,
        heading_deg=heading_deg if e.bearing_deg is not None else None, track=track,
        interrupted=bool(e.interrupted)))
