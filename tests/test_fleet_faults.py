"""What the operator is told must be true, through a real Mosquitto (tests/broker.py) and real
faults: a broker outage is the fleet's own link, not every unit down; units and fleet are back
within seconds of a restarted broker; a fleet restart raises no clock alarm from the broker's
queue and reports old statuses with their own time; late alerts say how late; fixes are stored
and exported apart from the units' positions; a file that is not the fleet's store is refused
without a byte written; TLS mistakes name the file or the listener."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from nightear.errors import ConfigError
from nightear.fleet.service import human_line
from nightear.schema import SCHEMA_VERSION, HeartbeatMessage, UnitPosition
from nightear.sinks.broker import BrokerLink, MqttSettings
from nightear.sinks.mqtt import EventForwarder
from nightear.sinks.store import EventStore, StoredBearing, StoredEvent
from tests.broker import Broker, FleetThread, wait_for
from tests.conftest import run_cli

POST_A, POST_B = UnitPosition(52.1, 14.6, 40.0), UnitPosition(52.1, 14.62, 40.0)
DRONE = UnitPosition(52.11, 14.61, 120.0)


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    yield b
    b.stop()


def unit(broker: Broker, store: Path, node: str = "post-1", position: UnitPosition = POST_A,
         heartbeat_seconds: float = 1.0) -> EventForwarder:
    """A unit's real forwarder (its store, heartbeats and status) on the plain listener."""
    settings = msgspec.convert(broker.unit_config(tls=False, heartbeat_seconds=heartbeat_seconds),
                               MqttSettings)
    EventStore(store).close()

    def beat(pending: int) -> HeartbeatMessage:
        return HeartbeatMessage(SCHEMA_VERSION, node, settings.site, datetime.now(UTC).isoformat(),
                                settings.heartbeat_seconds, 1.0, "0.1.0", "nightear-drone-3.4.0", "ab" * 32,
                                1.0, 2, 5, 0, pending, 0.4, 61.5, 9_000_000_000, 1_000_000, 500_000_000,
                                -48.5, position)

    f = EventForwarder(settings, store, node, beat, [].append, position, 0.0)
    f.start()
    return f


def event(start: datetime, node: str = "post-1", state: str = "closed", seconds: float = 2.0) -> StoredEvent:
    return StoredEvent(id=str(uuid.uuid4()), node=node, state=state,
                       start=start.isoformat(timespec="milliseconds"),
                       end=(start + timedelta(seconds=seconds)).isoformat(timespec="milliseconds"),
                       peak_confidence=0.97, mean_confidence=0.9, windows=8, model="nightear-drone-3.4.0",
                       model_sha256="ab" * 32, bearing_deg=0.0, bearing_spread_deg=4.0)


def test_a_broker_outage_is_the_fleets_own_link_and_everyone_is_back_within_5_s(
        broker: Broker, tmp_path: Path) -> None:
    fleet = FleetThread(broker.unit_config(tls=False), tmp_path / "fleet.db")
    units = [unit(broker, tmp_path / f"{n}.db", n) for n in ("post-1", "post-2")]
    try:
        wait_for(lambda: len([u for u in fleet.of("unit") if u["state"] == "up"]) == 2, 10, "both units up")
        broker.kill()
        time.sleep(10.0)  # three heartbeats three times over
        (lost,) = [x for x in fleet.of("link") if x["state"] == "down"]
        assert lost["state"] == "down" and "connection lost" in str(lost["reason"])
        assert [u for u in fleet.of("unit") if u["state"] == "down"] == []  # nobody blamed
        assert {u["state"] for u in fleet.fleet.health()} == {"unknown"}
        assert "units' state unknown" in human_line(lost)
        broker.start()
        restarted = time.monotonic()
        wait_for(lambda: len(fleet.of("link")) == 3 and all(u.link.connected for u in units), 10,
                 "the fleet and both units back")
        back_s = time.monotonic() - restarted
        assert back_s < 5.0, f"back {back_s:.1f} s after the broker"
        time.sleep(3.5)
        assert [u for u in fleet.of("unit") if u["state"] == "down"] == []
        assert {u["state"] for u in fleet.fleet.health()} == {"up"}
    finally:
        for u in units:
            u.close(1.0)
        fleet.close()


def test_a_fleet_restart_raises_no_clock_alarm_and_old_statuses_keep_their_time(
        broker: Broker, tmp_path: Path) -> None:
    fleet = FleetThread(broker.unit_config(tls=False), tmp_path / "fleet.db")
    units = [unit(broker, tmp_path / f"{n}.db", n) for n in ("post-1", "post-2")]
    wait_for(lambda: len(fleet.of("unit")) == 2, 10, "both units up")
    fleet.close()  # the post goes away; the broker queues the heartbeats for it
    time.sleep(5.0)
    units[1].close(1.0)  # post-2 stops while nobody watches: its offline is retained
    stopped = datetime.now(UTC)
    time.sleep(3.0)
    again = FleetThread(broker.unit_config(tls=False), tmp_path / "fleet.db")
    try:
        time.sleep(4.0)
        assert again.of("clock") == [], again.of("clock")  # 5 s of queued heartbeats: no alarm
        assert [u["node"] for u in again.of("unit") if u["state"] == "up"] == ["post-1"]  # by a live one
        (down,) = [u for u in again.of("unit") if u["node"] == "post-2"]
        assert down["state"] == "down" and str(down["reason"]).startswith("offline")
        said = datetime.fromisoformat(str(down["at"]))
        assert abs((said - stopped).total_seconds()) < 1.5  # when it said so, not now (3 s later)
    finally:
        units[0].close(1.0)
        again.close()


def test_a_late_alert_says_how_late_and_a_live_one_does_not(broker: Broker, tmp_path: Path) -> None:
    store = tmp_path / "unit.db"
    EventStore(store).close()
    old = event(datetime.now(UTC) - timedelta(minutes=30))
    db = EventStore(store)
    db.save(old)
    db.close()
    fleet = FleetThread(broker.unit_config(tls=False), tmp_path / "fleet.db")
    sender = unit(broker, store)
    try:
        wait_for(lambda: len(fleet.of("alert")) == 1, 10, "the late alert")
        (late,) = fleet.of("alert")
        assert late["late"] is True and 1790 < float(late["late_s"]) < 1830  # type: ignore[arg-type]
        assert "LATE: 30 min old" in human_line(late)
        db = EventStore(store)
        db.save(event(datetime.now(UTC) - timedelta(seconds=2.5), state="open"))
        db.close()
        sender.wake()
        wait_for(lambda: len(fleet.of("alert")) == 2, 10, "the live alert")
        live = fleet.of("alert")[1]
        assert live["late"] is False and "LATE" not in human_line(live)
    finally:
        sender.close(1.0)
        fleet.close()


def bearing(frm: UnitPosition, to: UnitPosition) -> float:
    east = math.radians(to.lon_deg - frm.lon_deg) * math.cos(math.radians(frm.lat_deg)) * 6_371_000
    north = math.radians(to.lat_deg - frm.lat_deg) * 6_371_000
    return math.degrees(math.atan2(east, north)) % 360.0


def test_fixes_are_stored_and_exported_apart_from_the_units_positions(broker: Broker, tmp_path: Path) -> None:
    start = datetime.now(UTC) - timedelta(seconds=10)
    fleet = FleetThread(broker.unit_config(tls=False), tmp_path / "fleet.db")
    senders = []
    for node, position in (("post-a", POST_A), ("post-b", POST_B)):
        store = tmp_path / f"{node}.db"
        db = EventStore(store)
        b = bearing(position, DRONE)
        e = event(start, node)
        db.save(StoredEvent(**{**e.__dict__, "bearing_deg": b}),
                [StoredBearing((start + timedelta(seconds=0.25 * k)).isoformat(timespec="milliseconds"),
                               b, None, 0.9, 0.95) for k in range(8)])
        db.close()
        senders.append(unit(broker, store, node, position))
    try:
        wait_for(lambda: bool(fleet.of("fix")), 10, "a fix")
    finally:
        for s in senders:
            s.close(1.0)
        fleet.close()
    fixes = run_cli("fleet", "--db", str(tmp_path / "fleet.db"), "--export", "csv", "--fixes")
    assert fixes.returncode == 0, fixes.stderr
    (row,) = list(csv.DictReader(io.StringIO(fixes.stdout)))
    assert abs(float(row["lat_deg"]) - DRONE.lat_deg) < 1e-4
    assert abs(float(row["lon_deg"]) - DRONE.lon_deg) < 1e-4
    assert float(row["major_m"]) > 0 and row["units"] == "post-a post-b"
    tracks = run_cli("fleet", "--db", str(tmp_path / "fleet.db"), "--export", "json", "--fixes")
    assert json.loads(tracks.stdout.splitlines()[0])["track"]
    events = list(csv.DictReader(io.StringIO(run_cli("fleet", "--db", str(tmp_path / "fleet.db"),
                                                     "--export", "csv").stdout)))
    assert "lat_deg" not in events[0] and {e["unit_lon_deg"] for e in events} == {"14.6", "14.62"}


def test_fleet_export_refuses_a_units_store_and_a_foreign_file_without_writing_a_byte(tmp_path: Path) -> None:
    import sqlite3

    unit_store = tmp_path / "unit.db"
    db = EventStore(unit_store)
    db.save(event(datetime(2026, 11, 3, 1, tzinfo=UTC)))
    db.close()
    (tmp_path / "unit.db-wal").unlink(missing_ok=True)
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as other:
        other.execute("CREATE TABLE events (id INTEGER, what TEXT)")
    for path, what in ((unit_store, "a unit's event store"), (foreign, "another program's SQLite file")):
        before = hashlib.sha256(path.read_bytes()).hexdigest()
        files = sorted(tmp_path.iterdir())
        result = run_cli("fleet", "--db", str(path), "--export", "csv")
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.strip() == (f"nightear: error: {path}: not a nightear fleet store ({what}"
                                          + (": `nightear events` reads it" if path == unit_store else "")
                                          + "); nothing was changed")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before and sorted(tmp_path.iterdir()) == files


def test_tls_to_a_plain_listener_and_a_bad_key_say_which_and_name_the_file(broker: Broker,
                                                                          tmp_path: Path) -> None:
    import threading

    said: list[str] = []
    plain = msgspec.convert(broker.unit_config(tls=True, brokers=[f"127.0.0.1:{broker.plain_port}"]),
                            MqttSettings)
    link = BrokerLink(plain, "nightear-test", True, said.append)
    stop = threading.Event()
    wait_for(lambda: link.service(stop) is None and bool(said), 10, "the refusal")
    assert "plain-text listener" in said[0] and f"mqtt.ca_file {broker.folder / 'ca.crt'}" in said[0]
    bad_key = tmp_path / "unit.key"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    for key, message in ((bad_key, f"mqtt.key_file {bad_key} or cert_file"),
                         (broker.folder / "ca.key", f"mqtt.key_file {broker.folder / 'ca.key'}: not the "
                          f"key of mqtt.cert_file {broker.folder / 'client.crt'}")):
        settings = msgspec.convert(broker.unit_config(cert_file=str(broker.folder / "client.crt"),
                                                      key_file=str(key)), MqttSettings)
        with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
            BrokerLink(settings, "nightear-test", True, said.append)
    link.close()


def test_a_fleet_store_from_before_fixes_were_kept_exports_as_it_is(tmp_path: Path) -> None:
    import sqlite3

    old = tmp_path / "fleet.db"
    with sqlite3.connect(old) as db:  # the first release's fleet store: events only, unmarked
        db.execute("CREATE TABLE events (id TEXT PRIMARY KEY, site TEXT NOT NULL, node TEXT NOT NULL, "
                   "state TEXT NOT NULL, start TEXT NOT NULL, end TEXT NOT NULL, received TEXT NOT NULL, "
                   "payload TEXT NOT NULL)")
    before = hashlib.sha256(old.read_bytes()).hexdigest()
    fixes = run_cli("fleet", "--db", str(old), "--export", "csv", "--fixes")
    assert fixes.returncode == 0 and fixes.stdout.splitlines() == [",".join(
        ("t", "lat_deg", "lon_deg", "alt_m", "major_m", "minor_m", "major_bearing_deg", "crossing_deg",
         "units", "events", "received"))]
    assert run_cli("fleet", "--db", str(old), "--export", "json").returncode == 0
    assert hashlib.sha256(old.read_bytes()).hexdigest() == before
