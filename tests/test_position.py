"""Position fixes from bearings: the geometry on exact bearings, the refusals, and a drone
simulated from its true position into three units' array recordings (plane waves with each
unit's bearing and the sound's travel time), heard by the real pipeline, sent as the schema's
payloads and fixed by the fleet."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from nightear.classifier import OnnxClassifier, default_model_path
from nightear.decision import DecisionConfig, DroneEvent
from nightear.fleet.position import Fix, FixRefused, Sighting, from_local, locate, to_local, track
from nightear.fleet.post import Fleet
from nightear.fleet.settings import FleetSettings
from nightear.fleet.store import FleetStore
from nightear.frontend import FrontendConfig
from nightear.geometry import PRESETS, SPEED_OF_SOUND, ArraySettings
from nightear.pipeline import Pipeline
from nightear.schema import UnitPosition
from nightear.sinks.mqtt import event_payload
from nightear.sinks.store import EventStore, StoredBearing, StoredEvent
from nightear.sources import WavSource
from nightear_training.array_eval import array_recording
from tests.conftest import FIXTURES

ORIGIN = UnitPosition(52.1, 14.6, 30.0)
T0 = 1_800_000_000.0


def at(east_m: float, north_m: float, alt_m: float = 30.0) -> UnitPosition:
    lat, lon = from_local(east_m, north_m, ORIGIN)
    return UnitPosition(lat, lon, alt_m)


def bearing_to(unit: UnitPosition, target: UnitPosition) -> float:
    east, north = to_local([target], unit)[0]
    return math.degrees(math.atan2(east, north)) % 360.0


def sightings(units: dict[str, UnitPosition], target: UnitPosition, t_s: float = T0, spread: float = 2.0,
              error_deg: float = 0.0) -> list[Sighting]:
    return [Sighting(name, p, t_s + k * 0.256, bearing_to(p, target) + error_deg * (-1) ** k, spread)
            for name, p in units.items() for k in range(4)]


def miss_m(fix: Fix, truth: UnitPosition) -> float:
    return float(np.hypot(*to_local([truth], UnitPosition(fix.lat_deg, fix.lon_deg))[0]))


def test_exact_bearings_from_two_units_meet_at_the_drone() -> None:
    units = {"west": at(0, 0), "east": at(800, 0)}
    truth = at(300, 450)
    fix = locate(sightings(units, truth))
    assert miss_m(fix, truth) < 0.5 and fix.covers(truth)
    assert fix.units == ("east", "west") and fix.crossing_deg == pytest.approx(
        180 - (bearing_to(units["east"], truth) - bearing_to(units["west"], truth)) % 180, abs=0.1)


def test_the_ellipse_grows_with_range_and_lies_along_the_lines_of_sight() -> None:
    units = {"a": at(0, 0), "b": at(300, 0)}
    near, far = locate(sightings(units, at(150, 400))), locate(sightings(units, at(150, 1500)))
    assert far.major_m > 3 * near.major_m
    assert abs(far.major_bearing_deg - 0.0) < 10 or abs(far.major_bearing_deg - 180.0) < 10  # north-south
    assert far.major_m > 3 * far.minor_m  # shallow crossing: long along the lines, narrow across


def test_near_parallel_bearings_are_refused_saying_why() -> None:
    units = {"a": at(0, 0), "b": at(50, 0)}
    with pytest.raises(FixRefused, match=r"bearings from a \(.* deg\) and b \(.* deg\) cross at "
                                         r"[0-9.]+ deg, under 10: near-parallel"):
        locate(sightings(units, at(20, 3000)))
    with pytest.raises(FixRefused, match="a fix needs two"):
        locate(sightings({"a": at(0, 0)}, at(20, 300)))
    away = [Sighting("a", at(0, 0), T0, 225.0, 2.0), Sighting("b", at(100, 0), T0, 135.0, 2.0)]
    with pytest.raises(FixRefused, match="the bearings meet behind a"):  # their lines cross north
        locate(away)
    toward = [Sighting("a", at(0, 0), T0, 135.0, 2.0), Sighting("b", at(100, 0), T0, 225.0, 2.0)]
    assert miss_m(locate(toward), at(50, -50)) < 0.5  # the same lines, looking the right way


def test_a_track_follows_a_moving_drone() -> None:
    units = {"a": at(0, 0), "b": at(700, 0), "c": at(350, 600)}
    path = [at(100 + 40 * k, 300) for k in range(6)]  # flying east at 20 m/s, one bin each 2 s
    seen = [s for k, p in enumerate(path) for s in sightings(units, p, T0 + 2.0 * k)]
    fixes = track(seen, 2.0)
    assert len(fixes) == 6
    assert max(miss_m(f, p) for f, p in zip(fixes, path, strict=True)) < 1.0


def simulated_unit(name: str, where: UnitPosition, heading_deg: float, drone_at: UnitPosition,
                   drone: np.ndarray, night: np.ndarray, classifier: OnnxClassifier, store: Path,
                   seed: int) -> EventStore:
    """One unit hearing the drone: the plane wave from its bearing, late by the sound's travel,
    through the real pipeline; its events stored as the daemon stores them."""
    east, north = to_local([drone_at], where)[0]
    ground = math.hypot(east, north)
    elevation = math.degrees(math.atan2(drone_at.alt_m - where.alt_m, ground))
    delay = np.zeros(round(math.hypot(ground, drone_at.alt_m - where.alt_m) / SPEED_OF_SOUND * 16000),
                     np.float32)
    azimuth = (bearing_to(where, drone_at) - heading_deg) % 360.0  # in the array's own frame
    recording = array_recording(np.concatenate((delay, drone, np.zeros(8000, np.float32))), night,
                                PRESETS["respeaker-4mic"], azimuth, elevation, 15.0,
                                np.random.default_rng(seed))
    array = ArraySettings(preset="respeaker-4mic", heading_deg=heading_deg)
    pipeline = Pipeline(classifier, DecisionConfig(), 16000, 4, array)
    changes = [c for block in np.array_split(recording, 20) for c in pipeline.push(block).changes]
    changes += pipeline.finish().changes
    (closed,) = [c.event for c in changes if c.kind == "close"]
    events = EventStore(store)
    events.save(*stored(closed, name, classifier))
    return events


def stored(e: DroneEvent, node: str, classifier: OnnxClassifier) -> tuple[StoredEvent, list[StoredBearing]]:
    def iso(t_s: float) -> str:  # the units share a clock (chrony): stream time 0 is T0 for all
        return (datetime.fromtimestamp(T0, UTC) + timedelta(seconds=t_s)).isoformat(timespec="milliseconds")

    info = classifier.info
    event = StoredEvent(f"{node}-1", node, "closed", iso(e.start_s), iso(e.end_s), e.peak_confidence,
                        e.mean_confidence, e.windows, f"{info.name}-{info.version}", info.sha256,
                        bearing_deg=e.bearing_deg, bearing_spread_deg=e.bearing_spread_deg,
                        elevation_deg=e.elevation_deg)
    return event, [StoredBearing(iso(p.t_s), p.bearing_deg, p.elevation_deg, p.coherence, p.p)
                   for p in e.track]


def test_a_drone_heard_by_three_units_is_fixed_within_a_tenth_of_its_range(tmp_path: Path) -> None:
    classifier = OnnxClassifier(default_model_path(), FrontendConfig())
    drone = WavSource(FIXTURES / "drone_bebop_16k.flac", 16000).read_all()
    night = WavSource(FIXTURES / "night_background_16k.flac", 16000).read_all()
    units = {"post-a": (at(0, 0), 0.0), "post-b": (at(650, -50), 90.0), "post-c": (at(250, 550), 215.0)}
    truth = at(380, 180, 110.0)  # a drone 80 m above the posts
    fleet = Fleet(FleetSettings(), FleetStore(None), print)
    lines = []
    for seed, (name, (where, heading)) in enumerate(units.items()):
        store = simulated_unit(name, where, heading, truth, drone, night, classifier, tmp_path / f"{name}.db",
                               seed)
        payload = event_payload(store._db, f"{name}-1", "border", name, where, heading)
        lines += fleet.receive(f"nightear/border/{name}/event", payload)
    fixes = [line for line in lines if line["kind"] == "fix"]
    assert len(fixes) == 2  # the second unit's event gives a fix, the third a better one
    best = fixes[-1]
    fix = Fix(**{**{k: best[k] for k in ("lat_deg", "lon_deg", "alt_m", "major_m", "minor_m",
                                         "major_bearing_deg", "crossing_deg")},
                 "units": tuple(best["units"]), "t_s": 0.0})  # type: ignore[arg-type]
    ranges = [math.hypot(*to_local([truth], where)[0]) for where, _ in units.values()]
    assert miss_m(fix, truth) <= 0.1 * min(ranges), (miss_m(fix, truth), min(ranges))
    assert fix.covers(truth), best
    assert best["units"] == ["post-a", "post-b", "post-c"] and best["track"]
    assert fix.alt_m is not None and abs(fix.alt_m - truth.alt_m) < 60.0  # from coarse elevations
