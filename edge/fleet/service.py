"""`nightear fleet` running: the broker link, the fleet's judgement, its lines and its console.

It subscribes to `nightear/<site>/+/+` (QoS 1, a persistent session: the broker keeps what
arrives while the fleet is away) and writes one line per alert, fix, clip, unit change, clock
warning and change of its own link: short and readable on a terminal, JSON for a pipe (or
`--json`). With a console, every line also goes to the operators' pages.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

from nightear.errors import ConfigError
from nightear.fleet.post import Fleet, Line
from nightear.fleet.settings import FleetSettings
from nightear.fleet.store import FleetStore, parse_utc
from nightear.sinks.broker import BrokerLink, MqttSettings


class LineSink(Protocol):
    def publish(self, line: Line) -> None: ...


def _clock(iso: object) -> str:
    """HH:MM:SS in this host's time zone (the post's), from an ISO time."""
    try:
        return datetime.fromtimestamp(parse_utc(str(iso))).strftime("%H:%M:%S")
    except ValueError:
        return "??:??:??"


def _age(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def human_line(line: Line) -> str:
    """One short line an operator reads at a glance."""
    kind = line["kind"]
    if kind == "alert":
        bearing = (f"  bearing {line['bearing_deg']:.0f}°±{line.get('bearing_spread_deg') or 0:.0f}"
                   if line.get("bearing_deg") is not None else "")
        late = f"  LATE: {_age(line['late_s'])} old" if line.get("late") else ""
        state = "DRONE" if line["state"] == "open" else "ended"
        return (f"{_clock(line['received'])} {state:5} {line['node']}  "
                f"confidence {line['peak_confidence']:.2f}{bearing}{late}  [{str(line['id'])[:8]}]")
    if kind == "fix":
        return (f"{_clock(line['t'])} FIX   {line['lat_deg']:.5f} {line['lon_deg']:.5f}  "
                f"±{line['major_m']:.0f} m (95%)  by {', '.join(line['units'])}")
    if kind == "no_fix":
        return f"{'':8} no fix  {line['reason']}"
    if kind == "unit":
        return f"{_clock(line['at'])} UNIT  {line['node']} {line['state']}: {line['reason']}"
    if kind == "clock":
        return (f"{'':8} CLOCK {line['node']} {line['state']}: offset {line['offset_s']:+.1f} s "
                f"(tolerance {line['tolerance_s']} s)")
    if kind == "link":
        if line["state"] == "up":
            return f"{_clock(line['at'])} FLEET broker {line['broker']} connected"
        return (f"{_clock(line['at'])} FLEET broker {line['broker']} LOST: units' state unknown "
                f"({line['reason']})")
    if kind == "clip":
        return f"{_clock(line['received'])} clip  {line['node']} {line['seconds']:.1f} s [{line['id'][:8]}]"
    return json.dumps(line)


def run(mqtt_settings: MqttSettings, settings: FleetSettings, out: TextIO, log: Callable[[str], None],
        stop: threading.Event, base: Path | None = None,
        clock: Callable[[], float] = time.monotonic, json_lines: bool = True,
        on_ready: Callable[[Fleet], Any] | None = None) -> Fleet:
    """Subscribe to the site and write lines until `stop` is set. `on_ready(fleet)` may return
    a console (anything with `publish(line)`) that receives every line too."""
    if not mqtt_settings.enabled:
        raise ConfigError("nightear fleet needs mqtt.brokers in its config: the broker to subscribe to")
    site = mqtt_settings.site
    store = FleetStore(settings.store if settings.store is None or base is None
                       or Path(settings.store).is_absolute() else base / settings.store)
    fleet = Fleet(settings, store, log, clock)
    link = BrokerLink(mqtt_settings, settings.client_id or f"nightear-fleet-{site}", False, log, base,
                      patience="retrying")
    sink: LineSink | None = on_ready(fleet) if on_ready is not None else None

    def emit(lines: list[Line]) -> None:
        for line in lines:
            out.write((json.dumps(line) if json_lines else human_line(line)) + "\n")
            if sink is not None:
                sink.publish(line)
        if lines:
            out.flush()

    def connected() -> None:
        link.client.subscribe(f"nightear/{site}/+/+", qos=1)
        emit(fleet.link(True, link.where, "connected"))

    link.on_connected = connected
    link.on_lost = lambda reason: emit(fleet.link(False, link.where, reason))
    link.client.on_message = lambda client, userdata, msg: emit(
        fleet.receive(msg.topic, msg.payload, bool(msg.retain)))
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
