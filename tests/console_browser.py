"""Headless Chromium for the console's tests and its benchmark: Debian's `chromium` and
`chromium-driver` driven by selenium, started with the flags a closed network needs. Without
them the tests skip saying so; with CI=true (where .ci/run installs them) they fail."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import soundfile as sf

from nightear.fleet.settings import ConsoleSettings
from nightear.schema import SCHEMA_VERSION, HeartbeatMessage, UnitPosition
from nightear.sinks.broker import MqttSettings
from nightear.sinks.mqtt import EventForwarder
from nightear.sinks.store import EventStore, StoredBearing, StoredEvent
from tests.broker import Broker, FleetThread
from tests.conftest import FIXTURES

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
OPERATOR, PASSWORD = "ops", "night-shift-42"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--autoplay-policy=no-user-gesture-required", "--window-size=1400,1000")
POSTS = {"post-a": UnitPosition(52.1, 14.6, 40.0), "post-b": UnitPosition(52.1, 14.62, 40.0)}
DRONE = UnitPosition(52.11, 14.61, 120.0)


def need_browser() -> None:
    """Skip without chromium, chromium-driver or selenium; fail under CI=true."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists() and not shutil.which(Path(p).name)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (the dev extra)")
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {', '.join(missing)} missing (.ci/run installs chromium, "
                        "chromium-driver and the dev extra)")
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install -y chromium chromium-driver; "
                    "pip install -e '.[dev]')")


def browser(downloads: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='nightear-chromium-', dir=downloads)}")
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or CHROMEDRIVER))


def hashed(password: str) -> str:
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def console_settings(export_folder: Path) -> ConsoleSettings:
    return ConsoleSettings(http="127.0.0.1:0", users={OPERATOR: hashed(PASSWORD)},
                           export_folder=str(export_folder))


def drone_at(seconds: float, east_m_per_s: float = 25.0) -> UnitPosition:
    """Where the drone is `seconds` into a pass: flying east from DRONE."""
    east_deg = np.degrees(east_m_per_s * seconds / (6_371_000 * np.cos(np.radians(DRONE.lat_deg))))
    return UnitPosition(DRONE.lat_deg, DRONE.lon_deg + float(east_deg), DRONE.alt_m)


def bearing_to(frm: UnitPosition, to: UnitPosition) -> float:
    east = np.radians(to.lon_deg - frm.lon_deg) * np.cos(np.radians(frm.lat_deg)) * 6_371_000
    north = np.radians(to.lat_deg - frm.lat_deg) * 6_371_000
    return float(np.degrees(np.arctan2(east, north)) % 360.0)


@dataclass
class Unit:
    """A unit's store and its real forwarder (heartbeats, events, clips) on the broker."""

    node: str
    store: Path
    clips: Path
    forwarder: EventForwarder
    events: list[StoredEvent] = field(default_factory=list)

    def hear(self, start: datetime, seconds: float, state: str, event_id: str | None = None) -> StoredEvent:
        """A drone pass heard from here (bearings to the drone flying east), stored as the daemon stores it:
        the alert when it opens; the clip (the bebop fixture, looped) when it closes."""
        position = POSTS[self.node]
        windows = int(seconds * 4)
        bearings = [bearing_to(position, drone_at(0.25 * k)) for k in range(windows)]
        b = bearings[len(bearings) // 2]
        clip = None
        if state == "closed":
            drone, rate = sf.read(FIXTURES / "drone_bebop_16k.flac", dtype="int16")
            clip = self.clips / f"{start:%Y-%m-%dT%H%M%S}-{(event_id or '')[:8]}.wav"
            sf.write(clip, np.resize(drone, int((seconds + 3.0) * rate)), rate, subtype="PCM_16")
        event = StoredEvent(id=event_id or str(uuid.uuid4()), node=self.node, state=state,
                            start=start.isoformat(timespec="milliseconds"),
                            end=(start + timedelta(seconds=seconds)).isoformat(timespec="milliseconds"),
                            peak_confidence=0.98, mean_confidence=0.93, windows=int(seconds * 4),
                            model="nightear-drone-3.4.0", model_sha256="ab" * 32,
                            clip=str(clip) if clip else None, bearing_deg=b, bearing_spread_deg=4.0)
        track = [StoredBearing((start + timedelta(seconds=0.25 * k)).isoformat(timespec="milliseconds"),
                               bearings[k], None, 0.9, 0.95) for k in range(windows)]
        db = EventStore(self.store)
        db.save(event, track)
        db.close()
        self.forwarder.wake()
        return event


def start_unit(broker: Broker, folder: Path, node: str) -> Unit:
    settings = msgspec.convert(broker.unit_config(tls=False, heartbeat_seconds=2.0), MqttSettings)
    store, clips = folder / f"{node}.db", folder / f"{node}-clips"
    clips.mkdir(parents=True, exist_ok=True)
    EventStore(store).close()
    position = POSTS[node]

    def beat(pending: int) -> HeartbeatMessage:
        return HeartbeatMessage(SCHEMA_VERSION, node, settings.site, datetime.now(UTC).isoformat(),
                                settings.heartbeat_seconds, 60.0, "0.1.0", "nightear-drone-3.4.0", "ab" * 32,
                                60.0, 0, 0, 0, pending, 0.3, 58.2, 20_000_000_000, 30_000_000, 500_000_000,
                                -52.0, position)

    forwarder = EventForwarder(settings, store, node, beat, [].append, position, 0.0)
    forwarder.start()
    return Unit(node, store, clips, forwarder)


def start_post(broker: Broker, folder: Path) -> tuple[FleetThread, Any]:
    from nightear.fleet.console.server import start_console

    console = start_console(console_settings(folder / "judged"), None, [].append)
    fleet = FleetThread(broker.unit_config(tls=False), folder / "fleet.db", console=console)
    return fleet, console
