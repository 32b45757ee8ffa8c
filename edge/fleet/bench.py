"""`nightear fleet-bench`: a running broker and the real `nightear fleet` under the traffic of
a simulated site, with figures printed as JSON.

- steady: `units` units, one heartbeat each per 10 s (phases spread evenly), and every 5 s a
  burst in which 5% of them open an event at once (closed 2 s later). Reported: messages per
  second, alert latency from the publisher's clock to the fleet's printed line (median, p99),
  the fleet's CPU as a share of one core, and units wrongly reported down;
- sink: once a second during the steady phase a real EventForwarder (the unit's MQTT sink)
  sends an event stored in its SQLite store: the latency the broker and the fleet add to an
  alert, from the store's write to the fleet's line;
- ceiling: a flood of heartbeats and then one marker event, published as fast as the
  publishers can: messages per second the fleet gets through (the broker included).

Publishers share a few connections (each carries many units' topics), so the figures are the
broker's and the fleet's, not the benchmark's connection count.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import msgspec
import numpy as np
import paho.mqtt.client as mqtt

from nightear.fleet.store import utc_iso
from nightear.schema import SCHEMA_VERSION, EventMessage, HeartbeatMessage, encode, topic
from nightear.sinks.broker import MqttSettings
from nightear.sinks.mqtt import EventForwarder
from nightear.sinks.store import EventStore, StoredEvent

SITE = "bench"
CONNECTIONS = 8
HEARTBEAT_S = 10.0
BURST_EVERY_S = 5.0
BURST_SHARE = 0.05
FLOOD_MESSAGES = 20_000


def _iso(t: float) -> str:
    return utc_iso(t)


def _heartbeat(node: str) -> bytes:
    return encode(HeartbeatMessage(SCHEMA_VERSION, node, SITE, _iso(time.time()), HEARTBEAT_S, 100.0,
                                   "bench", "nightear-drone-2.0.0", "0" * 64, 100.0, 0, 0, 0, 0))


def _event(node: str, event_id: str, state: str) -> bytes:
    now = time.time()
    return encode(EventMessage(SCHEMA_VERSION, event_id, node, SITE, state, _iso(now - 1.0), _iso(now),  # type: ignore[arg-type]
                               _iso(now), 0.999, 0.998, 4, "nightear-drone-2.0.0", "0" * 64,
                               bearing_deg=123.0, bearing_spread_deg=2.0))


class FleetUnderTest:
    """`nightear fleet` in its own process; every stdout line stamped as it arrives."""

    def __init__(self, link: MqttSettings, folder: Path):
        broker = link.brokers[0]
        config = folder / "fleet.yaml"
        config.write_text(msgspec.yaml.encode({"mqtt": link,
                                               "fleet": {"store": str(folder / "fleet.db")}}).decode())
        self.proc = subprocess.Popen([sys.executable, "-m", "nightear", "fleet", "--config", str(config)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, dict[str, object]]] = []
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()  # type: ignore[arg-type]
        deadline = time.monotonic() + 30
        while not any("mqtt connected" in line for line in self.log):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nightear fleet did not connect to {broker}: {''.join(self.log)}")
            time.sleep(0.05)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.time(), json.loads(line)))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alerts(self) -> dict[tuple[str, str], float]:
        """(id, state) -> when its line arrived."""
        return {(str(d["id"]), str(d["state"])): t for t, d in list(self.lines) if d["kind"] == "alert"}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def _publishers(link: MqttSettings, count: int = CONNECTIONS) -> list[mqtt.Client]:
    ((host, port),) = link.addresses()
    clients = []
    for k in range(count):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{k}-{uuid.uuid4().hex[:6]}")
        if link.username is not None:
            c.username_pw_set(link.username, link.password)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.connect(host, port)
        c.loop_start()
        clients.append(c)
    return clients


def _percentiles(values_s: list[float]) -> dict[str, float]:
    ms = np.array(values_s) * 1000.0
    return {"n": len(ms), "median": round(float(np.median(ms)), 1),
            "p99": round(float(np.percentile(ms, 99)), 1)}


def _burst(clients: list[mqtt.Client], nodes: list[str], sent: dict[tuple[str, str], float],
           due_close: list[tuple[float, str, str]]) -> int:
    """BURST_SHARE of the units open an event at once; each closes 2 s later."""
    burst = nodes[: max(1, int(BURST_SHARE * len(nodes)))]
    for k, node in enumerate(burst):
        event_id = uuid.uuid4().hex
        sent[(event_id, "open")] = time.time()
        clients[k % CONNECTIONS].publish(topic(SITE, node, "event"), _event(node, event_id, "open"), qos=1)
        due_close.append((time.time() + 2.0, node, event_id))
    return len(burst)


def _steady(clients: list[mqtt.Client], fleet: FleetUnderTest, nodes: list[str], seconds: float,
            sink: tuple[EventForwarder, EventStore]) -> dict[str, object]:
    """The site's everyday traffic for `seconds`; the sink's events once a second."""
    sent: dict[tuple[str, str], float] = {}
    sink_sent: dict[tuple[str, str], float] = {}
    forwarder, store = sink
    messages, start = 0, time.time()
    cpu0, t0 = fleet.cpu_seconds(), time.monotonic()
    step = HEARTBEAT_S / len(nodes)
    due_close: list[tuple[float, str, str]] = []
    next_burst, next_sink, i = start + 1.0, start + 0.5, 0
    while (now := time.time()) < start + seconds:
        while i * step <= now - start:  # heartbeats, evenly spread
            node = nodes[i % len(nodes)]
            clients[i % CONNECTIONS].publish(topic(SITE, node, "heartbeat"), _heartbeat(node), qos=1)
            messages, i = messages + 1, i + 1
        if now >= next_burst:
            messages += _burst(clients, nodes, sent, due_close)
            next_burst += BURST_EVERY_S
        for entry in [d for d in due_close if d[0] <= now]:
            due_close.remove(entry)
            sent[(entry[2], "closed")] = time.time()
            clients[0].publish(topic(SITE, entry[1], "event"), _event(entry[1], entry[2], "closed"), qos=1)
            messages += 1
        if now >= next_sink:
            event_id = uuid.uuid4().hex
            store.save(StoredEvent(event_id, "sink", "open", _iso(now - 1), _iso(now), 0.99, 0.99, 2, "m",
                                   "0" * 64))
            sink_sent[(event_id, "open")] = time.time()
            forwarder.wake()
            next_sink += 1.0
        time.sleep(0.002)
    elapsed = time.time() - start
    deadline = time.time() + 10
    while time.time() < deadline and not set(sent) | set(sink_sent) <= set(fleet.alerts()):
        time.sleep(0.1)
    cpu = (fleet.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    arrived = fleet.alerts()
    downs = [f"{d['node']}: {d['reason']}" for _, d in fleet.lines
             if d["kind"] == "unit" and d["state"] == "down"]
    return {
        "seconds": round(elapsed, 1), "messages": messages, "messages_per_s": round(messages / elapsed, 1),
        "alerts_lost": len(set(sent) - set(arrived)),
        "alert_latency_ms": _percentiles([arrived[k] - t for k, t in sent.items() if k in arrived]),
        "fleet_cpu_share_of_one_core": round(cpu, 3), "units_reported_down": len(downs),
        "downs": downs[:5],
        "sink": {"alert_latency_ms": _percentiles([arrived[k] - t for k, t in sink_sent.items()
                                                   if k in arrived]),
                 "lost": len(set(sink_sent) - set(arrived))},
    }


def _ceiling(clients: list[mqtt.Client], fleet: FleetUnderTest, nodes: list[str],
             flood: int) -> dict[str, object]:
    """Heartbeats as fast as the publishers go, then one marker event: when the fleet prints
    the marker it has taken every message before it (one connection keeps its order)."""
    start = time.time()
    for k in range(flood):
        node = nodes[k % len(nodes)]
        clients[0].publish(topic(SITE, node, "heartbeat"), _heartbeat(node), qos=1)
    marker = uuid.uuid4().hex
    clients[0].publish(topic(SITE, nodes[0], "event"), _event(nodes[0], marker, "open"), qos=1)
    deadline = time.time() + 300
    while (marker, "open") not in fleet.alerts() and time.time() < deadline:
        time.sleep(0.02)
    elapsed = fleet.alerts().get((marker, "open"), float("nan")) - start
    return {"messages": flood + 1, "seconds": round(elapsed, 2),
            "messages_per_s": round((flood + 1) / elapsed, 0)}


def main(broker: str, units: int, seconds: float, flood: int = FLOOD_MESSAGES,
         username: str | None = None, password: str | None = None) -> int:
    """Run the benchmark against `broker` (host:port, no TLS) and print the report."""
    link = MqttSettings(brokers=[broker], site=SITE, username=username, password=password)
    nodes = [f"unit-{k:04d}" for k in range(units)]
    with tempfile.TemporaryDirectory(prefix="nightear-fleet-bench-") as tmp:
        folder = Path(tmp)
        fleet = FleetUnderTest(link, folder)
        clients = _publishers(link)
        store = EventStore(folder / "sink.db")
        sink = f"sink-{uuid.uuid4().hex[:6]}"
        forwarder = EventForwarder(link, folder / "sink.db", sink, None, lambda line: None)
        forwarder.start()
        try:
            report: dict[str, object] = {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                "broker": broker, "units": units, "heartbeat_s": HEARTBEAT_S,
                "bursts": f"{BURST_SHARE:.0%} of units open an event every {BURST_EVERY_S:.0f} s, "
                          "close 2 s later",
            }
            report["steady"] = _steady(clients, fleet, nodes, seconds, (forwarder, store))
            report["ceiling"] = _ceiling(clients, fleet, nodes, flood)
        finally:
            forwarder.close(1.0)
            for c in clients:
                c.loop_stop()
                c.disconnect()
            fleet.stop()
            # leave the broker as it was: no retained status of the benchmark's unit
            (cleaner,) = _publishers(link, 1)
            cleaner.publish(topic(SITE, sink, "status"), b"", qos=1, retain=True).wait_for_publish(5)
            cleaner.loop_stop()
            cleaner.disconnect()
    print(json.dumps(report, indent=2))
    return 0
