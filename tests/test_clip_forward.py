"""A closed event's clip reaches the post through a real Mosquitto: lossless FLAC in parts that
each fit a payload, after the event's alert, kept by the broker while the post is away, even
through the broker's own restart. The post keeps each part as it comes, so its own restart loses none."""

from __future__ import annotations

import io
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np
import pytest
import soundfile as sf

from nightear.schema import CLIP_PART_BYTES
from nightear.sinks.broker import MqttSettings
from nightear.sinks.clip_sender import flac_of
from nightear.sinks.mqtt import EventForwarder
from nightear.sinks.store import EventStore, StoredEvent
from tests.broker import Broker, FleetThread, wait_for
from tests.conftest import FIXTURES


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    yield b
    b.stop()


def long_clip(path: Path, seconds: float = 40.0) -> np.ndarray:
    """A drone pass over night background, as the daemon writes clips (16-bit WAV)."""
    drone, rate = sf.read(FIXTURES / "drone_bebop_16k.flac", dtype="int16")
    samples = np.resize(drone, int(seconds * rate))
    sf.write(path, samples, rate, subtype="PCM_16", format="WAV")
    return samples


def clip_sent(store: Path) -> tuple[int, int] | None:
    """(parts acknowledged, parts) once the unit has the broker's word for the whole clip."""
    with sqlite3.connect(store) as db:
        try:
            return db.execute("SELECT parts_acked, parts FROM mqtt_clips WHERE done IS NOT NULL").fetchone()
        except sqlite3.OperationalError:  # the forwarder has not made its table yet
            return None


def test_a_clip_goes_after_its_alert_in_parts_and_waits_out_the_post_and_a_broker_restart(
        broker: Broker, tmp_path: Path) -> None:
    samples = long_clip(tmp_path / "clip.wav")
    store = tmp_path / "unit.db"
    start = datetime.now(UTC) - timedelta(seconds=40)
    event = StoredEvent(id=str(uuid.uuid4()), node="post-1", state="closed",
                        start=start.isoformat(timespec="milliseconds"),
                        end=(start + timedelta(seconds=37)).isoformat(timespec="milliseconds"),
                        peak_confidence=0.99, mean_confidence=0.9, windows=140, model="m",
                        model_sha256="ab" * 32, clip=str(tmp_path / "clip.wav"))
    db = EventStore(store)
    db.save(event)
    db.close()
    FleetThread(broker.unit_config(tls=False), tmp_path / "fleet.db").close()  # its session stays
    settings = msgspec.convert(broker.unit_config(tls=False), MqttSettings)
    unit = EventForwarder(settings, store, "post-1", None, [].append)
    unit.start()
    try:  # the post is away: the broker keeps the alert and every part for it
        wait_for(lambda: clip_sent(store) is not None, 20, "the clip's parts acknowledged by the broker")
        parts = -(-len(flac_of(tmp_path / "clip.wav")[0]) // CLIP_PART_BYTES)
        assert parts > 2 and clip_sent(store) == (parts, parts)  # 40 s of FLAC: several payloads
        unit.close(1.0)
        broker.stop()  # and is restarted (SIGTERM: it saves what it holds)
        broker.start()
        fleet = FleetThread(broker.unit_config(tls=False), tmp_path / "fleet.db")
        wait_for(lambda: bool(fleet.of("clip")), 30, "the clip at the post")
    finally:
        unit.close(1.0)
    fleet.close()
    kinds = [line["kind"] for line in fleet.lines if line["kind"] in ("alert", "clip")]
    assert kinds == ["alert", "clip"]  # the alert first, the evidence after
    (clip,) = fleet.of("clip")
    assert clip["id"] == event.id and clip["seconds"] == 40.0
    assert int(clip["bytes"]) > 2 * CLIP_PART_BYTES  # type: ignore[call-overload]  # it took parts
    with sqlite3.connect(tmp_path / "fleet.db") as db:
        (flac,) = db.execute("SELECT flac FROM clips WHERE event_id = ?", (event.id,)).fetchone()
    heard, rate = sf.read(io.BytesIO(flac), dtype="int16")
    assert rate == 16000 and np.array_equal(heard, samples)  # lossless, whole, in order


def test_a_store_from_before_clips_were_sent_keeps_its_delivered_clips_home(tmp_path: Path) -> None:
    from nightear.sinks.clip_sender import ClipSender
    from nightear.sinks.mqtt import SENT_SCHEMA

    store = tmp_path / "unit.db"
    long_clip(tmp_path / "clip.wav", 5.0)
    start = datetime(2026, 11, 3, 1, tzinfo=UTC)
    db = EventStore(store)
    for k in range(2):
        at = start + timedelta(minutes=k)
        db.save(StoredEvent(id=f"e-{k}", node="post-1", state="closed", start=at.isoformat(),
                            end=(at + timedelta(seconds=4)).isoformat(), peak_confidence=0.9,
                            mean_confidence=0.9, windows=4, model="m", model_sha256="ab" * 32,
                            clip=str(tmp_path / "clip.wav")))
    db.close()
    with sqlite3.connect(store, isolation_level=None) as raw:
        raw.executescript(SENT_SCHEMA)
        raw.execute("INSERT INTO mqtt_sent VALUES ('e-0', 'closed', '2026-11-03T01:00:05')")  # sent before
        sender = ClipSender(raw, None, "border", "post-1", None, print)  # type: ignore[arg-type]
        assert sender._next() is None  # its clip stays on the unit: no flood after an upgrade
        raw.execute("INSERT INTO mqtt_sent VALUES ('e-1', 'closed', '2026-11-03T01:01:05')")  # after
        assert sender._next() == ("e-1", str(tmp_path / "clip.wav"), 0)


def test_the_post_keeps_its_clips_under_a_quota_judged_ones_last(tmp_path: Path) -> None:
    from nightear.fleet.store import FleetStore

    store = FleetStore(tmp_path / "fleet.db")
    for k in range(4):
        store.save_clip(f"e-{k}", bytes(1000), 1.0, 16000, False, f"2026-11-03T01:0{k}:00.000+00:00")
    store.set_verdict("e-0", "drone", "ops", "2026-11-03T02:00:00.000+00:00")
    assert store.trim_clips(2500) == 2  # the two oldest unjudged went; the judged oldest stayed
    assert store.clip_ids() == {"e-0", "e-3"}
    store.close()
