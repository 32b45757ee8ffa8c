"""`nightear fleet`'s judgement: what the units' messages mean for the operator.

Every event is stored by id (a message delivered twice, or re-sent after an outage, is stored
and told once), each unit's last heartbeat is kept whole (its health), each event's clip is
kept, and the lines an operator reads are returned: alerts (with how late they came), unit
changes, clock warnings, the fleet's own link to the broker, and position fixes (stored).

What the operator is told must be true. While the fleet has lost the broker, it knows nothing
of the units: their state is unknown, and nobody is called down for a silence that is the
fleet's own. Heartbeats the broker queued while the fleet was away arrive in a burst after it
reconnects; they prove a unit was alive but say nothing of its clock, which is judged on live
heartbeats only. A retained status is reported with the time the unit sent it.

`Fleet` holds the logic without any I/O but the store, so tests and the benchmark drive it
with payloads and clocks of their own; `nightear.fleet.service` wires it to a broker.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec

from nightear.fleet.position import Fix, FixRefused, Sighting, locate, track
from nightear.fleet.settings import FleetSettings
from nightear.fleet.store import FleetStore, parse_utc, utc_iso
from nightear.schema import (
    ClipMessage,
    EventMessage,
    HeartbeatMessage,
    PayloadError,
    StatusMessage,
    decode,
    encode,
)

FIX_SLACK_SECONDS = 3.0  # sound takes ~3 s to cross a kilometre: events this far apart overlap
CLOCK_SAMPLES = 5  # heartbeats behind a unit's clock offset
HEARTBEAT_SAVE_SECONDS = 60.0  # a unit's last heartbeat is kept in the store this often
QUEUED_BURST_SECONDS = 1.0  # messages this soon after (re)connecting are the broker's queue
HEALTH_FIELDS = ("uptime_s", "nightear_version", "model", "pending_events", "input_overflows",
                 "dropped_frames", "events", "load_1m", "soc_temp_c", "disk_free_bytes", "clips_bytes",
                 "clips_quota_bytes", "low_freq_dbfs", "position", "heading_deg", "interval_s")
Line = dict[str, Any]


@dataclass
class UnitHealth:
    """What the fleet knows of one unit."""

    up: bool | None = None
    heartbeat_at: float | None = None  # the fleet's clock at its last heartbeat
    heartbeat_wall: float | None = None  # the receipt time of its last heartbeat
    interval_s: float = 10.0
    offsets: deque[float] = field(default_factory=lambda: deque(maxlen=CLOCK_SAMPLES))
    clock_off: bool = False
    last: HeartbeatMessage | None = None
    saved_at: float | None = None  # when its heartbeat was last written to the store


class Fleet:
    """Payloads in, lines out (see the module docstring). `clock` times heartbeats
    (monotonic), `wall` is the receipt time that units' clocks are checked against."""

    def __init__(self, settings: FleetSettings, store: FleetStore, log: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.settings, self.store, self.log, self.clock, self.wall = settings, store, log, clock, wall
        self.units: dict[tuple[str, str], UnitHealth] = {}
        self.ignored = 0  # payloads refused by the schema
        self.duplicates = 0  # events heard again with nothing new
        self.link_up: bool | None = None  # None: no broker involved (tests, the benchmark)
        self.connected_at: float | None = None
        for site, node, _, beat in store.heartbeats():  # what the last run knew, state unknown
            try:
                self._unit(site, node).last = msgspec.json.decode(beat, type=HeartbeatMessage)
            except msgspec.DecodeError:
                continue

    def link(self, up: bool, broker: str, reason: str) -> list[Line]:
        """The fleet's own connection to the broker changed."""
        if up == self.link_up:
            return []
        self.link_up = up
        if up:
            self.connected_at = self.clock()
            for unit in self.units.values():  # their silence is counted from now
                if unit.heartbeat_at is not None:
                    unit.heartbeat_at = self.connected_at
        return [{"kind": "link", "state": "up" if up else "down", "broker": broker, "reason": reason,
                 "at": utc_iso(self.wall())}]

    def receive(self, topic_name: str, payload: bytes, retained: bool = False) -> list[Line]:
        """One MQTT message: the lines it gives (none for a duplicate or most heartbeats)."""
        received = self.wall()
        try:
            message = decode(topic_name, payload)
        except PayloadError as exc:
            self.ignored += 1
            self.log(f"nightear: warning: ignored a message on {topic_name[:120]}: {str(exc)[:200]}")
            return []
        if isinstance(message, HeartbeatMessage):
            unit = self._unit(message.site, message.node)
            unit.interval_s = message.interval_s
            if not self._live(unit, received):  # from the broker's queue: health, not news
                unit.heartbeat_wall, unit.last = received, message
                return []
            return self._check_clock(message, received) + self._heartbeat(message, received)
        if isinstance(message, StatusMessage):
            return self._status(message, retained)
        if isinstance(message, ClipMessage):
            return self._clip(message, received)
        return self._event(message, received)

    def tick(self) -> list[Line]:
        """Call every second or so: units silent for too many heartbeats go down (while the
        fleet hears the broker: a silence of its own blames nobody)."""
        lines: list[Line] = []
        if self.link_up is False:
            return lines
        now = self.clock()
        for (site, node), unit in list(self.units.items()):
            if unit.up and unit.heartbeat_at is not None:
                silent = now - unit.heartbeat_at
                if silent > self.settings.down_after_heartbeats * unit.interval_s:
                    lines += self._set_up(site, node, False, f"silent for {silent:.0f} s "
                                          f"({self.settings.down_after_heartbeats} heartbeats)")
        return lines

    def health(self) -> list[Line]:
        """Every unit's state (up, down, or unknown while the fleet has lost the broker), the
        age of its last heartbeat and that heartbeat's measurements."""
        out = []
        now = self.clock()
        for (site, node), unit in sorted(list(self.units.items())):
            state = ("unknown" if self.link_up is False or unit.up is None else "up" if unit.up else "down")
            row: Line = {"site": site, "node": node, "state": state, "clock_off": unit.clock_off,
                         "clock_offset_s": round(max(unit.offsets), 3) if unit.offsets else None,
                         "heartbeat_age_s": None if unit.heartbeat_at is None
                         else round(now - unit.heartbeat_at, 1)}
            if unit.last is not None:
                beat = msgspec.structs.asdict(unit.last)
                row.update({k: beat[k] for k in HEALTH_FIELDS})
                if unit.last.position is not None:
                    row["position"] = msgspec.structs.asdict(unit.last.position)
                row["heartbeat_sent"] = unit.last.sent
            out.append(row)
        return out

    def _unit(self, site: str, node: str) -> UnitHealth:
        return self.units.setdefault((site, node), UnitHealth())

    def _set_up(self, site: str, node: str, up: bool, reason: str, at: str | None = None) -> list[Line]:
        unit = self._unit(site, node)
        if unit.up == up:
            return []
        unit.up = up
        return [{"kind": "unit", "site": site, "node": node, "state": "up" if up else "down",
                 "reason": reason, "at": at or utc_iso(self.wall())}]

    def _status(self, message: StatusMessage, retained: bool) -> list[Line]:
        """A unit's own word: reported with the time it was said (a retained one may be old)."""
        reason = "online" if message.state == "online" else "offline (its last will or a clean stop)"
        if retained:
            reason += ", retained by the broker"
        unit = self._unit(message.site, message.node)
        if message.state == "online" and unit.heartbeat_at is not None:
            unit.heartbeat_at = self.clock()  # back: its silence is counted from now
        return self._set_up(message.site, message.node, message.state == "online", reason, message.sent)

    def _heartbeat(self, beat: HeartbeatMessage, received: float) -> list[Line]:
        unit = self._unit(beat.site, beat.node)
        unit.heartbeat_at, unit.heartbeat_wall, unit.interval_s = self.clock(), received, beat.interval_s
        unit.last = beat
        if unit.saved_at is None or unit.heartbeat_at - unit.saved_at >= HEARTBEAT_SAVE_SECONDS:
            unit.saved_at = unit.heartbeat_at  # for the next start's picture: not each one
            self.store.save_heartbeat(beat.site, beat.node, utc_iso(received), encode(beat))
        return self._set_up(beat.site, beat.node, True, "heartbeat")

    def _live(self, unit: UnitHealth, received: float) -> bool:
        """Whether a heartbeat arrived as it was sent, not from the broker's queue: not in the
        burst after the fleet (re)connected, not hard on the heels of the unit's previous one."""
        if self.connected_at is not None and self.clock() - self.connected_at < QUEUED_BURST_SECONDS:
            return False
        return unit.heartbeat_wall is None or received - unit.heartbeat_wall >= unit.interval_s / 2

    def _check_clock(self, message: HeartbeatMessage, received: float) -> list[Line]:
        """A unit's clock against the receipt time of a live heartbeat: the sample nearest
        to zero latency (the largest sent - received) over the last few."""
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

    def _clip(self, clip: ClipMessage, received: float) -> list[Line]:
        """A part of an event's clip; the clip is kept when its last part is in."""
        flac = self.store.save_clip_part(clip.id, clip.part, clip.parts, clip.flac)
        if flac is None:
            return []
        if not self.store.save_clip(clip.id, flac, clip.seconds, clip.sample_rate, False, utc_iso(received)):
            return []
        if gone := self.store.trim_clips(self.settings.clips_quota_bytes):
            self.log(f"nightear: fleet: {gone} oldest unjudged clips deleted (fleet.clips_quota_bytes)")
        return [{"kind": "clip", "id": clip.id, "site": clip.site, "node": clip.node,
                 "seconds": clip.seconds, "bytes": len(flac), "received": utc_iso(received)}]

    def _event(self, event: EventMessage, received: float) -> list[Line]:
        if not self.store.save(event, utc_iso(received)):
            self.duplicates += 1
            return []
        alert: Line = {"kind": "alert", **{k: v for k, v in msgspec.structs.asdict(
            event).items() if k not in ("track", "schema") and v is not None}}
        if event.position is not None:
            alert["position"] = msgspec.structs.asdict(event.position)
        late_s = round(received - parse_utc(event.end), 1)  # the alert's age when it came
        alert.update(received=utc_iso(received), late_s=late_s,
                     late=late_s > self.settings.late_after_seconds)
        return [alert, *self._fix(event, received)]

    def _fix(self, event: EventMessage, received: float) -> list[Line]:
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
        line: Line = {"kind": "fix", "events": ids, **_fix_json(fix),
                      "track": [{"t": utc_iso(f.t_s), "lat_deg": f.lat_deg, "lon_deg": f.lon_deg,
                                 "major_m": f.major_m} for f in path]}
        self.store.save_fix(line, utc_iso(received))
        return [line]


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


def _fix_json(fix: Fix) -> Line:
    out = asdict(fix)
    out["t"] = utc_iso(out.pop("t_s"))
    out["units"] = list(fix.units)
    return out
