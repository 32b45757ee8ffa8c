"""`nightear fleet` with real units: `nightear listen` through the ALSA file device publishing to
a real Mosquitto (tests/broker.py), refused credentials, a unit that dies, payloads the schema
refuses, unit health and clocks on a moved clock, and the export."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import paho.mqtt.client as mqtt
import pytest

from nightear.fleet.post import Fleet
from nightear.fleet.settings import FleetSettings
from nightear.fleet.store import FleetStore
from nightear.schema import MAX_PAYLOAD_BYTES, SCHEMA_VERSION, HeartbeatMessage, StatusMessage, encode
from tests.broker import PASSWORD, USER, Broker, FleetThread, MovedClock, wait_for
from tests.conftest import CLEARS_BEBOP, FIXTURES, REPO, listen, run_cli

BEBOP = FIXTURES / "drone_bebop_16k.flac"  # one event per 4.5 s listen


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    yield b
    b.stop()


def unit_yaml(path: Path, node: str, store: Path, mqtt_section: dict[str, object],
              clips: Path | None = None) -> Path:
    path.write_text(msgspec.yaml.encode({
        "node": node, "store": {"path": str(store)}, "mqtt": mqtt_section,
        "position": {"lat_deg": 52.1, "lon_deg": 14.6, "alt_m": 40.0},
        **msgspec.yaml.decode(CLEARS_BEBOP),  # the bebop fixture as one pass
        **({"clips": {"folder": str(clips)}} if clips else {})}).decode())
    return path


class FleetProcess:
    """The real `nightear fleet` CLI, its stdout lines read as they come."""

    def __init__(self, config: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "nightear", "fleet", "--config", str(config)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        self.lines: list[dict[str, object]] = []
        threading.Thread(target=lambda: self.lines.extend(json.loads(x) for x in self.proc.stdout),  # type: ignore[union-attr]
                         daemon=True).start()

    def of(self, kind: str) -> list[dict[str, object]]:
        return [line for line in list(self.lines) if line["kind"] == kind]

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(20) == 0
        return self.proc.stderr.read()  # type: ignore[union-attr]


@pytest.fixture()
def fleet_process() -> Iterator[type[FleetProcess]]:
    """FleetProcess, with every one started killed at the end, whatever the test did."""
    started: list[FleetProcess] = []

    class Tracked(FleetProcess):
        def __init__(self, config: Path):
            super().__init__(config)
            started.append(self)

    yield Tracked
    for fleet in started:
        if fleet.proc.poll() is None:
            fleet.proc.kill()
            fleet.proc.wait(10)


def test_listen_units_report_to_nightear_fleet_and_refused_credentials_cost_nothing(
        fake_mic, broker: Broker, fleet_process: type[FleetProcess],  # noqa: F811
        tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = fake_mic(BEBOP)
    fleet_db = tmp_path / "fleet.db"
    fleet_config = tmp_path / "fleet.yaml"
    fleet_config.write_text(msgspec.yaml.encode({"mqtt": broker.unit_config(),
                                                 "fleet": {"store": str(fleet_db)}}).decode())
    fleet = fleet_process(fleet_config)
    store_a, store_b = tmp_path / "a.db", tmp_path / "b.db"
    bad_password = unit_yaml(tmp_path / "bad-pw.yaml", "post-a", store_a,
                             broker.unit_config(password="guess"))
    wrong_ca = unit_yaml(tmp_path / "wrong-ca.yaml", "post-a", store_a,
                         broker.unit_config(ca_file=str(broker.folder / "other-ca.crt")))
    for config, said in ((bad_password, "refused nightear-border-post-a (Not authorized; user 'unit': "
                                        "check mqtt.username and mqtt.password or password_file)"),
                         (wrong_ca, "the broker's TLS certificate is not trusted (")):
        result = listen(env, "--config", str(config), "--duration", "4.5")
        assert result.returncode == 0, result.stderr  # the unit goes on: it detects and stores
        assert [json.loads(x)["state"] for x in result.stdout.splitlines()] == ["open", "closed"]
        (line,) = {x for x in result.stderr.splitlines() if "mqtt broker" in x}
        assert line.startswith(f"nightear: error: mqtt broker 127.0.0.1:{broker.tls_port} ") and said in line
        assert config == bad_password or f"check mqtt.ca_file {broker.folder / 'other-ca.crt'})" in line
        assert "events stay in the store" in line and "Traceback" not in result.stderr
    assert len(run_cli("events", "--db", str(store_a)).stdout.splitlines()) == 2
    # both units right: the two pending events of post-a go out, then the new ones
    good_a = unit_yaml(tmp_path / "a.yaml", "post-a", store_a, broker.unit_config())
    good_b = unit_yaml(tmp_path / "b.yaml", "post-b", store_b, broker.unit_config())
    runs = [subprocess.Popen([sys.executable, "-m", "nightear", "listen", "--config", str(c), "--duration",
                              "4.5"], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for c in (good_a, good_b)]
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0 and "mqtt connected to 127.0.0.1" in err, err
    wait_for(lambda: len([a for a in fleet.of("alert") if a["state"] == "closed"]) >= 4, 20,
             "four closed events at the fleet")
    wait_for(lambda: {(u["node"], u["state"]) for u in fleet.of("unit")} >= {
        ("post-a", "down"), ("post-b", "down")}, 20, "both units offline after a clean stop")
    errors = fleet.stop()
    alerts = fleet.of("alert")
    by_node = {n: [a["id"] for a in alerts if a["node"] == n and a["state"] == "closed"]
               for n in ("post-a", "post-b")}
    assert len(by_node["post-a"]) == 3 and len(set(by_node["post-a"])) == 3 and len(by_node["post-b"]) == 1
    assert all(a["position"] == {"lat_deg": 52.1, "lon_deg": 14.6, "alt_m": 40.0} for a in alerts)
    assert all(len(str(a["model_sha256"])) == 64 and a["site"] == "border" for a in alerts)
    assert "Traceback" not in errors
    exported = run_cli("fleet", "--db", str(fleet_db), "--export", "csv")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert sorted(r["id"] for r in rows) == sorted(by_node["post-a"] + by_node["post-b"])
    assert {r["state"] for r in rows} == {"closed"} and rows[0]["unit_lat_deg"] == "52.1"
    as_json = [json.loads(x) for x in
               run_cli("fleet", "--db", str(fleet_db), "--export", "json").stdout.splitlines()]
    assert [e["id"] for e in as_json] == [r["id"] for r in rows] and "track" in as_json[0]


def test_a_unit_that_dies_shows_offline_at_once_and_its_heartbeat_says_how_it_is(
        fake_mic, broker: Broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    env = fake_mic(BEBOP)  # the file device repeats: a drone forever
    fleet = FleetThread(broker.unit_config(), tmp_path / "fleet.db")
    beats: list[dict[str, object]] = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    watcher.username_pw_set(USER, PASSWORD)
    watcher.on_message = lambda c, u, m: beats.append(json.loads(m.payload))
    watcher.connect("127.0.0.1", broker.plain_port)
    watcher.subscribe("nightear/border/+/heartbeat", qos=1)
    watcher.loop_start()
    config = unit_yaml(tmp_path / "unit.yaml", "post-9", tmp_path / "unit.db",
                       broker.unit_config(heartbeat_seconds=1.0))
    unit = subprocess.Popen([sys.executable, "-m", "nightear", "listen", "--config", str(config)], env=env,
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: len(beats) >= 2 and bool(fleet.of("alert")), 60, "heartbeats and an alert")
        beat = beats[-1]
        assert beat["schema"] == SCHEMA_VERSION and beat["node"] == "post-9" and beat["interval_s"] == 1.0
        assert len(str(beat["model_sha256"])) == 64 and beat["nightear_version"]
        assert isinstance(beat["low_freq_dbfs"], float) and beat["low_freq_dbfs"] < 0  # type: ignore[operator]
        assert isinstance(beat["disk_free_bytes"], int) and beat["uptime_s"] > 0  # type: ignore[operator]
        assert beat["position"] == {"lat_deg": 52.1, "lon_deg": 14.6, "alt_m": 40.0}
        assert fleet.of("unit")[-1]["state"] == "up"
        wait_for(lambda: fleet.fleet.health()[0]["heartbeat_age_s"] is not None, 5, "a live heartbeat")
        health = {u["node"]: u for u in fleet.fleet.health()}["post-9"]  # what the console shows
        assert health["state"] == "up" and 0 <= health["heartbeat_age_s"] < 3.0
        assert isinstance(health["low_freq_dbfs"], float) and isinstance(health["disk_free_bytes"], int)
        assert isinstance(health["pending_events"], int) and isinstance(health["input_overflows"], int)
        assert health["model"] == beat["model"] and health["position"] == beat["position"]
        unit.send_signal(signal.SIGKILL)  # no goodbye: the broker's last will speaks for it
        killed = time.monotonic()
        wait_for(lambda: fleet.of("unit")[-1]["state"] == "down", 10, "the unit down")
        assert time.monotonic() - killed < 3.0  # at once, not after three missed heartbeats
        assert fleet.of("unit")[-1]["reason"].startswith("offline")  # type: ignore[union-attr]
    finally:
        unit.kill()
        unit.wait()
        watcher.loop_stop()
        fleet.close()


def test_malformed_oversized_and_unknown_version_messages_are_ignored_with_a_log_line(
        broker: Broker, tmp_path: Path) -> None:
    fleet = FleetThread(broker.unit_config(), tmp_path / "fleet.db")
    sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sender.username_pw_set(USER, PASSWORD)
    sender.connect("127.0.0.1", broker.plain_port)
    sender.loop_start()
    beat = HeartbeatMessage(SCHEMA_VERSION, "post-1", "border", "2026-11-03T01:00:00.000+00:00", 10.0, 1.0,
                            "0.1.0", "m", "ab" * 32, 1.0, 0, 0, 0, 0)
    bad = [
        ("nightear/border/post-1/event", b"{not json"),
        ("nightear/border/post-1/heartbeat", b"x" * (MAX_PAYLOAD_BYTES + 1)),
        ("nightear/border/post-1/heartbeat", encode(beat).replace(b'"schema":1', b'"schema":2')),
        ("nightear/border/post-1/event", b'{"schema": 1, "kind": "event", "id": 7}'),
        ("nightear/border/post-2/heartbeat", encode(beat)),  # post-1's heartbeat on post-2's topic
    ]
    try:
        for name, payload in bad:
            sender.publish(name, payload, qos=1).wait_for_publish(5)
        status = StatusMessage(SCHEMA_VERSION, "post-1", "border", "online", "2026-11-03T01:00:00.000+00:00")
        sender.publish("nightear/border/post-1/status", encode(status), qos=1).wait_for_publish(5)
        wait_for(lambda: bool(fleet.of("unit")), what="the fleet to go on after the bad messages")
        ignored = [line for line in fleet.log if "ignored a message" in line]
        assert len(ignored) == 5
        assert "not a nightear payload" in ignored[0]
        assert f"over the {MAX_PAYLOAD_BYTES}-byte limit" in ignored[1]
        assert "schema version 2, this nightear reads 1" in ignored[2]
        assert "Expected `str`, got `int` - at `$.id`" in ignored[3]
        assert "belongs on nightear/border/post-1/heartbeat" in ignored[4]
        assert fleet.of("unit") == [{**fleet.of("unit")[0], "node": "post-1", "state": "up"}]
    finally:
        sender.loop_stop()
        fleet.close()


def heartbeat(node: str, sent: float, interval_s: float = 10.0) -> bytes:
    from nightear.fleet.store import utc_iso

    return encode(HeartbeatMessage(SCHEMA_VERSION, node, "border", utc_iso(sent), interval_s, 1.0, "0.1.0",
                                   "m", "ab" * 32, 1.0, 0, 0, 0, 0))


def test_a_unit_silent_for_three_heartbeats_is_down_and_up_again_and_its_clock_is_checked() -> None:
    clock, wall = MovedClock(), [1_800_000_000.0]
    fleet = Fleet(FleetSettings(), FleetStore(None), print, clock, lambda: wall[0])
    topic = "nightear/border/post-1/heartbeat"
    assert [line["state"] for line in fleet.receive(topic, heartbeat("post-1", wall[0] - 0.05))] == ["up"]
    clock.offset_s += 29.0
    assert fleet.tick() == []  # two heartbeats missed: not yet
    clock.offset_s += 2.0
    (down,) = fleet.tick()
    assert (down["state"], down["reason"]) == ("down", "silent for 31 s (3 heartbeats)")
    assert fleet.tick() == []  # said once
    wall[0] += 31.0
    lines = fleet.receive(topic, heartbeat("post-1", wall[0] + 2.5))  # its clock 2.5 s fast
    assert [(x["kind"], x["state"]) for x in lines] == [("clock", "off"), ("unit", "up")]
    assert lines[0]["offset_s"] == pytest.approx(2.5, abs=0.01)
    for _ in range(5):  # chrony puts it right
        wall[0] += 10.0
        lines = fleet.receive(topic, heartbeat("post-1", wall[0] - 0.02))
    assert fleet.units[("border", "post-1")].clock_off is False
    assert fleet.receive(topic, heartbeat("post-1", wall[0] + 1)) == []  # +1 s: within tolerance


def test_the_fleet_store_is_idempotent_by_event_id(tmp_path: Path) -> None:
    from nightear.schema import EventMessage

    def event(state: str) -> bytes:
        return encode(EventMessage(SCHEMA_VERSION, "e-1", "post-1", "border", state,  # type: ignore[arg-type]
                                   "2026-11-03T01:00:00.000+00:00", "2026-11-03T01:00:02.000+00:00",
                                   "2026-11-03T01:00:02.100+00:00", 0.99, 0.98, 6, "m", "ab" * 32))

    store = FleetStore(tmp_path / "fleet.db")
    assert oct((tmp_path / "fleet.db").stat().st_mode & 0o777) == "0o640"  # positions: private
    fleet = Fleet(FleetSettings(), store, print)
    topic = "nightear/border/post-1/event"
    states = [[line["state"] for line in fleet.receive(topic, event(s))]
              for s in ("open", "open", "closed", "closed", "open")]
    assert states == [["open"], [], ["closed"], [], []]  # a late open never undoes the close
    assert store.count() == 1 and fleet.duplicates == 3
    store.close()
    again = Fleet(FleetSettings(), FleetStore(tmp_path / "fleet.db"), print)  # the fleet restarted
    assert again.receive(topic, event("closed")) == []


def test_fleet_without_a_broker_or_store_is_one_clear_line(tmp_path: Path) -> None:
    result = run_cli("fleet")
    assert result.returncode == 2 and result.stderr.strip() == (
        "nightear: error: nightear fleet needs mqtt.brokers in its config: the broker to subscribe to")
    missing = run_cli("fleet", "--db", str(tmp_path / "none.db"), "--export", "csv")
    assert missing.returncode == 2 and "none.db: no such fleet store" in missing.stderr
    assert not os.path.exists(tmp_path / "none.db")


def test_fleet_bench_loads_the_real_fleet_and_reports_what_it_measured(broker: Broker) -> None:
    result = run_cli("fleet-bench", "--broker", f"127.0.0.1:{broker.plain_port}", "--units", "40",
                     "--seconds", "4", "--flood", "400", "--username", USER, "--password", PASSWORD)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    steady = report["steady"]
    assert steady["messages"] >= 16 and steady["alerts_lost"] == 0 and steady["units_reported_down"] == 0
    assert steady["alert_latency_ms"]["n"] == 4 and 0 < steady["alert_latency_ms"]["median"] < 5000
    assert steady["sink"]["lost"] == 0 and steady["sink"]["alert_latency_ms"]["n"] == 4
    assert report["ceiling"]["messages"] == 401 and report["ceiling"]["messages_per_s"] > 0


def test_check_tries_the_broker_as_the_unit_will(fake_mic, broker: Broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    env = fake_mic(BEBOP)
    store = tmp_path / "unit.db"

    def check(name: str, **mqtt_section: object) -> subprocess.CompletedProcess[str]:
        config = unit_yaml(tmp_path / f"{name}.yaml", "post-4", store, broker.unit_config(**mqtt_section))
        return subprocess.run([sys.executable, "-m", "nightear", "check", "--config", str(config)],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=120)

    good = check("good")
    assert good.returncode == 0, good.stderr
    assert f"mqtt: ok (127.0.0.1:{broker.tls_port}, TLS, user 'unit', site border)" in good.stdout
    bad = check("bad", password="guess")
    assert bad.returncode == 2 and "audio device: ok" in bad.stdout  # every part is still tried
    (line,) = [x for x in bad.stderr.splitlines() if "mqtt" in x]
    assert line == (f"nightear: error: mqtt broker 127.0.0.1:{broker.tls_port} refused "
                    "nightear-check-border-post-4 (Not authorized; user 'unit': check mqtt.username and "
                    "mqtt.password or password_file)")


def test_the_hardened_unit_reaches_the_broker_with_its_network_dropin_and_only_with_it(
        mic_home: Path, broker: Broker, tmp_path: Path) -> None:
    from tests.test_hardening import UNIT, sandboxed

    with_network = tmp_path / "nightear.service"  # the unit as systemd merges it with the drop-in
    with_network.write_text(UNIT.read_text() + (REPO / "deploy" / "network.conf").read_text())
    fleet = FleetThread(broker.unit_config(), tmp_path / "fleet.db")
    config = unit_yaml(tmp_path / "unit.yaml", "post-h", tmp_path / "unit.db", broker.unit_config(),
                       clips=tmp_path / "clips")

    def listen_under(unit: Path, seconds: str = "4.5") -> subprocess.CompletedProcess[str]:
        return subprocess.run([*sandboxed(unit), sys.executable, "-m", "nightear", "listen", "--config",
                               str(config), "--duration", seconds], capture_output=True, text=True, cwd=REPO,
                              timeout=120, env={**os.environ, "HOME": str(mic_home)})

    try:
        sealed = listen_under(UNIT)  # no IP sockets: detection goes on, the event waits in the store
        assert sealed.returncode == 0 and len(sealed.stdout.splitlines()) == 2, sealed.stderr
        assert (f"nightear: error: mqtt broker 127.0.0.1:{broker.tls_port} cannot be reached: IP sockets "
                "are not permitted here (under systemd the unit needs its network drop-in") in sealed.stderr
        # clips go after alerts and not while the unit stops: connected long enough for one part
        opened = listen_under(with_network, "60")
        assert opened.returncode == 0 and "mqtt connected" in opened.stderr, opened.stderr
        wait_for(lambda: len([a for a in fleet.of("alert") if a["state"] == "closed"]) == 2, 20,
                 "both events, the one that waited included")
        # the waiting event's clip followed it, read and FLAC-encoded under the unit's rules
        wait_for(lambda: [c["node"] for c in fleet.of("clip")][:1] == ["post-h"], 10, "its clip")
    finally:
        fleet.close()
