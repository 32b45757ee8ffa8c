"""What the console's page shows, as JSON: the latest alerts with their operator's marks, the
units' health, and the plan in metres (east, north) around the units, so the page draws
without map tiles; and an event's spectrogram as a picture."""

from __future__ import annotations

import io
import time
from typing import Any

import msgspec
import numpy as np
import soundfile as sf

from nightear.fleet.position import to_local
from nightear.fleet.post import Fleet
from nightear.fleet.store import parse_utc
from nightear.schema import EventMessage, UnitPosition

ALERTS_SHOWN = 200  # the page lists this many latest events
FIXES_SHOWN = 50
RAY_SECONDS = 120.0  # a closed event's bearing ray stays on the plan this long
RAY_LENGTH_M = 3000.0
SPECTROGRAM_FFT = 512  # 31 Hz a row: rotor harmonics stay apart
SPECTROGRAM_HOP = 256
MAX_SHOWN_HZ = 8000.0
FLOOR_DB, CEILING_DB = -100.0, -20.0
COLOURS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]])


def alerts(fleet: Fleet) -> list[dict[str, Any]]:
    """The latest events, newest first, with acknowledgement, verdict and whether the clip is in."""
    store = fleet.store
    acks, verdicts, clips = store.acks(), store.verdicts(), store.clip_ids()
    out = []
    for event, received in store.recent(ALERTS_SHOWN):
        late_s = round(parse_utc(received) - parse_utc(event.end), 1)
        ack, verdict = acks.get(event.id), verdicts.get(event.id)
        out.append({"id": event.id, "node": event.node, "state": event.state, "start": event.start,
                    "end": event.end, "received": received, "late_s": late_s,
                    "late": late_s > fleet.settings.late_after_seconds,
                    "peak_confidence": event.peak_confidence, "bearing_deg": event.bearing_deg,
                    "bearing_spread_deg": event.bearing_spread_deg, "interrupted": event.interrupted,
                    "ack": None if ack is None else {"by": ack[0], "at": ack[1]},
                    "verdict": None if verdict is None else {"verdict": verdict[0], "by": verdict[1],
                                                              "at": verdict[2]},
                    "clip": event.id in clips})
    return out


def _metres(points: list[UnitPosition], origin: UnitPosition) -> list[tuple[float, float]]:
    if not points:
        return []
    return [(round(float(e), 1), round(float(n), 1)) for e, n in to_local(points, origin)]


def plan(fleet: Fleet, now_s: float | None = None) -> dict[str, Any]:
    """Units, bearing rays of open (and just closed) events, fixes with ellipses and tracks,
    all in metres east and north of the units' centre."""
    now_s = time.time() if now_s is None else now_s
    units = {row["node"]: row for row in fleet.health() if row.get("position")}
    recent = fleet.store.recent(ALERTS_SHOWN)
    for event, _ in recent:  # a unit heard only through its events still stands somewhere
        if event.position is not None and event.node not in units:
            units[event.node] = {"node": event.node, "position": msgspec.structs.asdict(event.position),
                                 "heading_deg": event.heading_deg, "state": "unknown"}
    if not units:
        return {"origin": None, "units": [], "rays": [], "fixes": []}
    positions = [UnitPosition(**u["position"]) for u in units.values()]
    origin = UnitPosition(float(np.mean([p.lat_deg for p in positions])),
                          float(np.mean([p.lon_deg for p in positions])))
    where = dict(zip(units, _metres(positions, origin), strict=True))
    rays = [_ray(event, where) for event, _ in recent if _ray_shown(event, now_s) and event.node in where]
    fixes = []
    for fix in fleet.store.fixes()[-FIXES_SHOWN:]:
        centre = _metres([UnitPosition(fix["lat_deg"], fix["lon_deg"])], origin)[0]
        track = _metres([UnitPosition(p["lat_deg"], p["lon_deg"]) for p in fix["track"]], origin)
        fixes.append({"t": fix["t"], "east": centre[0], "north": centre[1], "major_m": fix["major_m"],
                      "minor_m": fix["minor_m"], "major_bearing_deg": fix["major_bearing_deg"],
                      "units": fix["units"], "events": fix["events"], "lat_deg": fix["lat_deg"],
                      "lon_deg": fix["lon_deg"], "track": [{"east": e, "north": n} for e, n in track]})
    return {"origin": {"lat_deg": origin.lat_deg, "lon_deg": origin.lon_deg},
            "units": [{"node": node, "east": where[node][0], "north": where[node][1],
                       "heading_deg": u.get("heading_deg"), "state": u.get("state")}
                      for node, u in units.items()],
            "rays": rays, "fixes": fixes}


def _ray_shown(event: EventMessage, now_s: float) -> bool:
    return event.bearing_deg is not None and (
        event.state == "open" or now_s - parse_utc(event.end) < RAY_SECONDS)


def _ray(event: EventMessage, where: dict[str, tuple[float, float]]) -> dict[str, Any]:
    east, north = where[event.node]
    return {"id": event.id, "node": event.node, "state": event.state, "east": east, "north": north,
            "bearing_deg": event.bearing_deg, "spread_deg": event.bearing_spread_deg,
            "mirror_deg": event.bearing_mirror_deg, "length_m": RAY_LENGTH_M}


def spectrogram_jpeg(flac: bytes) -> bytes:
    """The clip's spectrogram (0-8 kHz, log power): time left to right, low at the bottom.
    A JPEG: a tenth of the PNG's bytes for a picture of noise-like texture."""
    from PIL import Image

    y, rate = sf.read(io.BytesIO(flac), dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if len(y) < SPECTROGRAM_FFT:
        y = np.pad(y, (0, SPECTROGRAM_FFT - len(y)))
    frames = np.lib.stride_tricks.sliding_window_view(y, SPECTROGRAM_FFT)[::SPECTROGRAM_HOP]
    power = np.abs(np.fft.rfft(frames * np.hanning(SPECTROGRAM_FFT), axis=1)) ** 2 / SPECTROGRAM_FFT
    shown = np.fft.rfftfreq(SPECTROGRAM_FFT, 1.0 / rate) <= MAX_SHOWN_HZ
    db = 10.0 * np.log10(power[:, shown].T[::-1] + 1e-12)
    scaled = np.clip((db - FLOOR_DB) / (CEILING_DB - FLOOR_DB), 0.0, 1.0)
    anchors = np.linspace(0.0, 1.0, len(COLOURS))
    rgb = np.stack([np.interp(scaled, anchors, COLOURS[:, c]) for c in range(3)], axis=-1)
    out = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(out, format="JPEG", quality=85)
    return out.getvalue()
