"""Each closed event's clip, to the post through the broker: the evidence an operator plays.

A unit opens no port, so the clip travels the way events do: from the store, QoS 1, marked
sent part by part in the store's own `mqtt_clips` table only when the broker acknowledges it,
so an outage or a reboot resumes where it stopped. A clip goes only after its event's closing
was acknowledged and while no event waits to be sent: evidence never delays an alert. It is
FLAC (lossless: a judged clip may become training data), in parts that each fit a payload.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import soundfile as sf

from nightear.schema import CLIP_PART_BYTES, SCHEMA_VERSION, ClipMessage, encode, topic
from nightear.sinks.broker import utc_now

CLIPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS mqtt_clips (
    event_id TEXT PRIMARY KEY,
    parts_acked INTEGER NOT NULL,
    parts INTEGER NOT NULL,
    done TEXT
);
"""
MAX_CLIP_PARTS = 64  # 10 MB of FLAC: minutes of audio, past any clip's max_seconds


def flac_of(wav: Path) -> tuple[bytes, int, float]:
    """The clip as FLAC bytes, its sample rate and seconds."""
    data, rate = sf.read(wav, dtype="int16", always_2d=False)
    out = io.BytesIO()
    sf.write(out, data, rate, format="FLAC", subtype="PCM_16")
    return out.getvalue(), int(rate), round(len(data) / rate, 3)


class ClipSender:
    """Sends the store's clips one part at a time, when the forwarder has nothing else to do."""

    def __init__(self, db: sqlite3.Connection, client: mqtt.Client, site: str, node: str,
                 base: Path | None, log: Callable[[str], None]):
        self.db, self.client, self.site, self.node, self.base, self.log = db, client, site, node, base, log
        fresh = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'mqtt_clips'").fetchone() is None
        db.executescript(CLIPS_SCHEMA)
        if fresh:  # a store from before clips were sent: its delivered events keep their clips home
            db.execute("INSERT OR IGNORE INTO mqtt_clips SELECT event_id, 0, 0, 'before clips were sent' "
                       "FROM mqtt_sent WHERE state = 'closed'")
        self.in_flight: int | None = None  # the mid of the part on its way
        self._current: tuple[str, bytes, int, float] | None = None  # event id, FLAC, rate, seconds
        self.sent = 0  # clips whose last part the broker acknowledged

    def connection_lost(self) -> None:
        self.in_flight = None  # the part goes again on the next connection

    def _next(self) -> tuple[str, str, int] | None:
        """(event id, clip path, parts acked) of the oldest clip still to send."""
        row = self.db.execute(
            "SELECT e.id, e.clip, coalesce(c.parts_acked, 0) FROM events e "
            "JOIN mqtt_sent s ON s.event_id = e.id AND s.state = 'closed' "
            "LEFT JOIN mqtt_clips c ON c.event_id = e.id "
            "WHERE e.state = 'closed' AND e.clip IS NOT NULL AND c.done IS NULL "
            "ORDER BY e.start, e.id LIMIT 1").fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def _load(self, event_id: str, clip: str) -> tuple[str, bytes, int, float] | None:
        if self._current is not None and self._current[0] == event_id:
            return self._current
        path = Path(clip)
        if not path.is_file() and self.base is not None and not path.is_absolute():
            path = self.base / path
        try:
            flac, rate, seconds = flac_of(path)
        except (OSError, sf.LibsndfileError, RuntimeError) as exc:  # deleted by the quota, or unreadable
            self.log(f"nightear: warning: clip of event {event_id[:8]} not sent ({path}: {exc})")
            self._mark(event_id, 0, 0, "gone")
            return None
        if len(flac) > MAX_CLIP_PARTS * CLIP_PART_BYTES:
            self.log(f"nightear: warning: clip of event {event_id[:8]} not sent ({len(flac)} bytes)")
            self._mark(event_id, 0, 0, "too long")
            return None
        self._current = (event_id, flac, rate, seconds)
        return self._current

    def _mark(self, event_id: str, acked: int, parts: int, done: str | None) -> None:
        self.db.execute("INSERT OR REPLACE INTO mqtt_clips VALUES (?, ?, ?, ?)",
                        (event_id, acked, parts, done))

    def send(self) -> bool:
        """Publish the next part, if none is on its way; False when there is nothing to send."""
        if self.in_flight is not None:
            return True
        todo = self._next()
        if todo is None:
            return False
        event_id, clip, acked = todo
        loaded = self._load(event_id, clip)
        if loaded is None:
            return True  # marked: the next one
        _, flac, rate, seconds = loaded
        parts = max(1, -(-len(flac) // CLIP_PART_BYTES))
        part = flac[acked * CLIP_PART_BYTES : (acked + 1) * CLIP_PART_BYTES]
        message = ClipMessage(SCHEMA_VERSION, self.node, self.site, utc_now(), event_id, acked, parts,
                              rate, seconds, part)
        info = self.client.publish(topic(self.site, self.node, "clip"), encode(message), qos=1)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self.in_flight = info.mid
            self._mark(event_id, acked, parts, None)
        return True

    def acknowledged(self, mid: int) -> bool:
        """The broker took a part: count it (True when `mid` was ours)."""
        if mid != self.in_flight or self._current is None:
            return False
        self.in_flight = None
        event_id = self._current[0]
        acked, parts = self.db.execute("SELECT parts_acked, parts FROM mqtt_clips WHERE event_id = ?",
                                       (event_id,)).fetchone()
        done = utc_now() if acked + 1 >= parts else None
        self._mark(event_id, acked + 1, parts, done)
        if done:
            self._current = None
            self.sent += 1
        return True
