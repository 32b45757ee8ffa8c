"""Store-and-forward against a real Mosquitto on loopback (tests/broker.py): a broker killed in
the middle of a stream, a unit restarted with events pending, a ten-minute network cut with
time moved instead of waited, and the send rate bound. The fleet end is nightear.fleet.service.run."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from nightear.schema import SCHEMA_VERSION, HeartbeatMessage, UnitPosition
from nightear.sinks.broker import MqttSettings
from nightear.sinks.mqtt import EventForwarder
from nightear.sinks.store import EventStore, StoredEvent
from tests.broker import Broker, CuttableLink, FleetThread, MovedClock, wait_for

T0 = datetime(2026, 11, 3, 1, 0, tzinfo=UTC)
POST = UnitPosition(52.1, 14.6, 40.0)


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    yield b
    b.stop()


def stored(i: int, state: str = "closed", node: str = "post-1") -> StoredEvent:
    start = T0 + timedelta(seconds=5 * i)
    return StoredEvent(id=str(uuid.UUID(int=i + 1)), node=node, state=state,
                       start=start.isoformat(timespec="milliseconds"),
                       end=(start + timedelta(seconds=2)).isoformat(timespec="milliseconds"),
                       peak_confidence=0.999, mean_confidence=0.998, windows=6, model="nightear-drone-2.0.0",
                       model_sha256="ab" * 32)


def forwarder(config: dict[str, object], store: Path, log: list[str], node: str = "post-1",
              clock: Callable[[], float] = time.monotonic, heartbeats: bool = False) -> EventForwarder:
    settings = msgspec.convert(config, MqttSettings)

    def beat(pending: int) -> HeartbeatMessage:
        return HeartbeatMessage(SCHEMA_VERSION, node, settings.site, datetime.now(UTC).isoformat(),
                                settings.heartbeat_seconds, 1.0, "0.1.0", "m", "ab" * 32, 1.0, 0, 0, 0,
                                pending)

    f = EventForwarder(settings, store, node, beat if heartbeats else None, log.append, POST, 90.0,
                       clock=clock)
    f.start()
    return f


def closed_ids_in_order(fleet: FleetThread) -> list[str]:
    return [str(a["id"]) for a in fleet.of("alert") if a["state"] == "closed"]


def assert_once_and_in_order(fleet: FleetThread, expected: list[str]) -> None:
    alerts = [(a["id"], a["state"]) for a in fleet.of("alert")]
    assert len(alerts) == len(set(alerts)), "an event state reached the fleet twice"
    first_seen = list(dict.fromkeys(str(a) for a, _ in alerts))
    assert first_seen == expected  # oldest first, each once
    assert closed_ids_in_order(fleet) == expected


def test_broker_killed_mid_stream_every_event_arrives_once_in_order(broker: Broker, tmp_path: Path) -> None:
    fleet = FleetThread(broker.unit_config(), tmp_path / "fleet.db")
    store, log = EventStore(tmp_path / "unit.db"), []  # type: ignore[var-annotated]
    unit = forwarder(broker.unit_config(), store.path, log)
    try:
        ids = []
        for i in range(60):
            event = stored(i, "open")
            store.save(event)
            unit.wake()
            store.save(replace(event, state="closed"))
            unit.wake()
            ids.append(event.id)
            if i == 20:
                broker.kill()  # events 21-39 are stored while no broker listens
            if i == 40:
                broker.start()
            time.sleep(0.03)
        wait_for(lambda: len(closed_ids_in_order(fleet)) >= 60, 30, "all 60 events at the fleet")
        time.sleep(0.5)  # anything sent twice would arrive by now
        assert_once_and_in_order(fleet, ids)
        assert any("connection lost" in line for line in log)
        assert unit.acked >= 60
    finally:
        unit.close()
        fleet.close()
    fleet_db = sqlite3.connect(tmp_path / "fleet.db")
    assert fleet_db.execute("SELECT count(*), count(DISTINCT id) FROM events WHERE state = 'closed'"
                            ).fetchone() == (60, 60)
    unit_db = sqlite3.connect(store.path)
    assert unit_db.execute("SELECT count(*) FROM mqtt_sent WHERE state = 'closed'").fetchone() == (60,)


def test_a_unit_restarted_with_events_pending_sends_them_at_a_bounded_rate(broker: Broker,
                                                                          tmp_path: Path) -> None:
    broker.stop()
    store, log = EventStore(tmp_path / "unit.db"), []  # type: ignore[var-annotated]
    config = broker.unit_config(max_events_per_second=20.0)
    before = forwarder(config, store.path, log)
    ids = []
    for i in range(40):
        store.save(replace(stored(i), interrupted=i == 7))  # the 8th closed at a restart
        before.wake()
        ids.append(stored(i).id)
    # it says the broker is down (however busy the machine, its first try may come late) ...
    wait_for(lambda: any("cannot reach it" in line for line in log), 10, "the unit to find no broker")
    before.close(timeout_s=0.5)  # ... and stops (a reboot) with all 40 unsent
    broker.start()
    fleet = FleetThread(broker.unit_config(), tmp_path / "fleet.db")
    after = forwarder(config, store.path, log)
    try:
        wait_for(lambda: len(closed_ids_in_order(fleet)) >= 40, 30, "the 40 pending events")
        assert_once_and_in_order(fleet, ids)
        assert [a["interrupted"] for a in fleet.of("alert")] == [i == 7 for i in range(40)]
        received = [datetime.fromisoformat(str(a["received"])) for a in fleet.of("alert")]
        assert (received[-1] - received[0]).total_seconds() >= 1.5  # 20 per second, not all at once
    finally:
        after.close()
        fleet.close()
    assert sqlite3.connect(store.path).execute("SELECT count(*) FROM mqtt_sent").fetchone() == (40,)


def test_a_ten_minute_network_cut_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    clock = MovedClock()  # unit and fleet both: ten minutes pass without waiting them
    fleet = FleetThread(broker.unit_config(tls=False), tmp_path / "fleet.db", clock=clock)
    link = CuttableLink(broker.plain_port)
    store, log = EventStore(tmp_path / "unit.db"), []  # type: ignore[var-annotated]
    config = broker.unit_config(tls=False, brokers=[f"127.0.0.1:{link.port}"])
    unit = forwarder(config, store.path, log, clock=clock, heartbeats=True)
    try:
        wait_for(lambda: any(u["state"] == "up" for u in fleet.of("unit")), what="the unit up")
        link.cut()
        ids = []
        for i in range(120):  # an event every 5 s for 10 minutes, all into the store
            clock.offset_s += 5.0
            store.save(stored(i))
            unit.wake()
            ids.append(stored(i).id)
        wait_for(lambda: any(u["state"] == "down" for u in fleet.of("unit")), what="the unit down")
        assert closed_ids_in_order(fleet) == []
        link.restore()
        wait_for(lambda: len(closed_ids_in_order(fleet)) >= 120, 40, "the 120 events after the cut")
        wait_for(lambda: fleet.of("unit")[-1]["state"] == "up", what="the unit up again")
        time.sleep(0.5)
        assert_once_and_in_order(fleet, ids)
        assert [u["state"] for u in fleet.of("unit")] == ["up", "down", "up"]
    finally:
        unit.close()
        fleet.close()
        link.close()


def test_mqtt_without_a_store_is_refused_with_the_keys_to_set(tmp_path: Path) -> None:
    from nightear.errors import ConfigError

    settings = MqttSettings(brokers=["127.0.0.1:1"])
    with pytest.raises(ConfigError, match="mqtt.brokers needs store.path"):
        EventForwarder(settings, None, "post-1", None, print)
    with pytest.raises(msgspec.ValidationError, match="'127.0.0.1:http' is not host or host:port"):
        msgspec.convert({"brokers": ["127.0.0.1:http"]}, MqttSettings)
    with pytest.raises(msgspec.ValidationError, match="mqtt.cert_file and mqtt.key_file go together"):
        msgspec.convert({"brokers": ["h"], "ca_file": "ca.crt", "cert_file": "c.crt"}, MqttSettings)


def test_the_heartbeat_low_frequency_level_hears_wind_not_rotors() -> None:
    import numpy as np

    from nightear.sinks.heartbeat import LowFrequencyMeter

    t = np.arange(16000 * 3) / 16000
    gust = LowFrequencyMeter(16000)  # a full-scale 60 Hz rumble, in blocks of 0.1 s
    for block in np.split(np.sin(2 * np.pi * 60 * t).astype(np.float32), 30):
        gust.push(block)
    hum = LowFrequencyMeter(16000)  # a rotor harmonic at 400 Hz, just as loud
    hum.push((np.sin(2 * np.pi * 400 * t)).astype(np.float32))
    assert LowFrequencyMeter(16000).dbfs is None  # nothing heard yet
    assert gust.dbfs == pytest.approx(0.0, abs=0.2)
    assert hum.dbfs is not None and hum.dbfs < -60.0


def test_a_broker_that_wants_a_client_certificate_takes_the_units_own(broker: Broker, tmp_path: Path) -> None:
    fleet = FleetThread(broker.unit_config(), tmp_path / "fleet.db")
    store, log = EventStore(tmp_path / "unit.db"), []  # type: ignore[var-annotated]
    store.save(stored(0))
    mtls = [f"127.0.0.1:{broker.mtls_port}"]
    without = forwarder(broker.unit_config(brokers=mtls), store.path, log)
    try:
        wait_for(lambda: any("mqtt broker" in line for line in log), what="the broker's refusal")
        assert log[0].startswith(f"nightear: error: mqtt broker 127.0.0.1:{broker.mtls_port} closed the "
                                 "connection before accepting it (a broker that wants a client certificate "
                                 "does this: set mqtt.cert_file and key_file)"), log
        assert closed_ids_in_order(fleet) == []
    finally:
        without.close(timeout_s=0.2)
    with_cert = forwarder(broker.unit_config(brokers=mtls, cert_file=str(broker.folder / "client.crt"),
                                             key_file=str(broker.folder / "client.key")), store.path, log)
    try:
        wait_for(lambda: closed_ids_in_order(fleet) == [stored(0).id], what="the event over mutual TLS")
    finally:
        with_cert.close()
        fleet.close()


def test_the_sender_waits_for_a_store_the_daemon_could_not_open_and_then_sends_it(
        broker: Broker, tmp_path: Path) -> None:
    """A full disk kept the daemon from opening its store at start: the sender writes nothing
    into the file meanwhile (its table would make it no store nightear recognises), and sends
    the events once the daemon has opened the store and written them."""
    fleet = FleetThread(broker.unit_config(), tmp_path / "fleet.db")
    path, log = tmp_path / "unit.db", []  # type: ignore[var-annotated]
    unit = forwarder(broker.unit_config(), path, log)
    try:
        time.sleep(1.0)
        if path.exists():
            with sqlite3.connect(path) as db:
                assert db.execute("SELECT name FROM sqlite_master").fetchall() == []
            db.close()
        store = EventStore(path)  # the daemon's retry succeeds once space is back
        event = stored(0)
        store.save(event)
        unit.wake()
        wait_for(lambda: closed_ids_in_order(fleet) == [event.id], 30, "the kept event at the fleet")
        assert any("not opened by the daemon yet" in line for line in log)
    finally:
        unit.close()
        fleet.close()
