"""Position fixes: where bearings from two or more units meet, and how sure that is.

Each scored window of an event gives a compass bearing from a unit whose position is known.
A bearing is a line on the ground; the fix is the weighted least-squares point nearest to all
the lines (in a local east/north plane in metres around the units, flat to well under a metre
over a few kilometres). A bearing's error grows across its line with range, so each row is
weighted by 1 / (range x spread)^2, range taken from the previous solution (three rounds).

One unit's windows share their errors (the same array, the same reflections), so a unit's
windows together carry the weight of one bearing with the event's spread; twenty windows
from one unit do not make its bearing twenty times surer. The uncertainty ellipse is the 95%
region of the solution's covariance. Two lines that meet at a shallow angle fix nothing along
them: such bearings are refused, as are bearings that meet behind a unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nightear.schema import UnitPosition

EARTH_RADIUS_M = 6_371_000.0
MIN_CROSSING_DEG = 10.0  # bearings closer to parallel than this give no fix
BEARING_FLOOR_DEG = 3.0  # no array is surer than this outdoors (reflections, wind, mounting)
CHI2_2DOF_95 = 5.991  # the 95% ellipse of a 2-D normal spans sqrt(5.991) standard deviations
ROUNDS = 3  # reweighting rounds of the least-squares solution


class FixRefused(ValueError):
    """No position from these bearings; the message says why."""


@dataclass(frozen=True)
class Sighting:
    """One window's bearing from one unit."""

    unit: str
    position: UnitPosition
    t_s: float  # UTC seconds since the epoch: the window's start
    bearing_deg: float  # compass, clockwise from north
    spread_deg: float  # the event's circular deviation of bearings
    elevation_deg: float | None = None


@dataclass(frozen=True)
class Fix:
    """A position with its 95% uncertainty ellipse."""

    lat_deg: float
    lon_deg: float
    alt_m: float | None  # from the elevations, where the arrays measure them
    major_m: float  # semi-axes of the 95% ellipse
    minor_m: float
    major_bearing_deg: float  # compass bearing of the major axis (0-180)
    crossing_deg: float  # the widest angle between two units' bearings
    units: tuple[str, ...]
    t_s: float  # mid-time of the sightings used

    def covers(self, position: UnitPosition) -> bool:
        """Whether `position` lies inside the ellipse."""
        origin = UnitPosition(self.lat_deg, self.lon_deg)
        east, north = to_local([position], origin)[0]
        a = math.radians(self.major_bearing_deg)
        along, across = east * math.sin(a) + north * math.cos(a), east * math.cos(a) - north * math.sin(a)
        return (along / self.major_m) ** 2 + (across / self.minor_m) ** 2 <= 1.0


def to_local(points: Sequence[UnitPosition], origin: UnitPosition) -> np.ndarray:
    """(n, 2) east and north metres of `points` from `origin` (equirectangular)."""
    lat = np.radians([p.lat_deg for p in points])
    lon = np.radians([p.lon_deg for p in points])
    lat0, lon0 = math.radians(origin.lat_deg), math.radians(origin.lon_deg)
    return np.stack(((lon - lon0) * math.cos(lat0) * EARTH_RADIUS_M,
                     (lat - lat0) * EARTH_RADIUS_M), axis=1)


def from_local(east_m: float, north_m: float, origin: UnitPosition) -> tuple[float, float]:
    """(lat_deg, lon_deg) of a point `east_m`, `north_m` from `origin`."""
    lat0 = math.radians(origin.lat_deg)
    return (origin.lat_deg + math.degrees(north_m / EARTH_RADIUS_M),
            origin.lon_deg + math.degrees(east_m / (EARTH_RADIUS_M * math.cos(lat0))))


def distance_m(a: UnitPosition, b: UnitPosition) -> float:
    """Ground distance between two positions, metres."""
    east, north = to_local([b], a)[0]
    return float(math.hypot(east, north))


def _mean_bearing(degrees: Sequence[float]) -> float:
    r = np.radians(degrees)
    return math.degrees(math.atan2(np.sin(r).sum(), np.cos(r).sum())) % 360.0


def _widest_crossing(means: dict[str, float]) -> tuple[float, str, str]:
    """The widest angle (0-90 degrees) between two units' mean bearing lines."""
    best = (-1.0, "", "")
    names = sorted(means)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            angle = abs((means[a] - means[b]) % 180.0)
            best = max(best, (min(angle, 180.0 - angle), a, b))
    return best


def locate(sightings: Sequence[Sighting]) -> Fix:
    """The fix from the sightings of two or more units; FixRefused says why there is none."""
    units = sorted({s.unit for s in sightings})
    if len(units) < 2:
        raise FixRefused(f"bearings from {len(units)} unit{'s' * (len(units) != 1)}; a fix needs two")
    means = {u: _mean_bearing([s.bearing_deg for s in sightings if s.unit == u]) for u in units}
    crossing, a, b = _widest_crossing(means)
    if crossing < MIN_CROSSING_DEG:
        raise FixRefused(f"bearings from {a} ({means[a]:.1f} deg) and {b} ({means[b]:.1f} deg) "
                         f"cross at {crossing:.1f} deg, under {MIN_CROSSING_DEG:.0f}: near-parallel "
                         "lines do not fix a position along them")
    first = {s.unit: s.position for s in sightings}
    origin = UnitPosition(float(np.mean([p.lat_deg for p in first.values()])),
                          float(np.mean([p.lon_deg for p in first.values()])))
    where = to_local([s.position for s in sightings], origin)
    theta = np.radians([s.bearing_deg for s in sightings])
    normal = np.stack((np.cos(theta), -np.sin(theta)), axis=1)  # across each line (east, north)
    target = (normal * where).sum(axis=1)
    count = {u: sum(s.unit == u for s in sightings) for u in units}
    sigma = np.radians([max(s.spread_deg, BEARING_FLOOR_DEG) for s in sightings])
    base = 1.0 / (sigma**2 * np.array([count[s.unit] for s in sightings]))
    point, rng = np.zeros(2), np.ones(len(sightings))
    for _ in range(ROUNDS):
        info = (normal * (base / rng**2)[:, None]).T @ normal
        point = np.linalg.solve(info, (normal * (base / rng**2)[:, None]).T @ target)
        rng = np.maximum(np.hypot(*(point - where).T), 1.0)
    for u in units:
        mine = [i for i, s in enumerate(sightings) if s.unit == u]
        ahead = (point - where[mine[0]]) @ np.array([math.sin(math.radians(means[u])),
                                                     math.cos(math.radians(means[u]))])
        if ahead <= 0.0:
            raise FixRefused(f"the bearings meet behind {u}: they do not point at one place")
    return _fix(point, np.linalg.inv(info), origin, sightings, rng, crossing, tuple(units))


def _fix(point: np.ndarray, cov: np.ndarray, origin: UnitPosition, sightings: Sequence[Sighting],
         rng: np.ndarray, crossing: float, units: tuple[str, ...]) -> Fix:
    values, vectors = np.linalg.eigh(cov)  # ascending
    major = vectors[:, 1]
    lat, lon = from_local(float(point[0]), float(point[1]), origin)
    heights = [s.position.alt_m + r * math.tan(math.radians(s.elevation_deg))
               for s, r in zip(sightings, rng, strict=True) if s.elevation_deg is not None]
    return Fix(
        lat_deg=round(lat, 7), lon_deg=round(lon, 7),
        alt_m=round(float(np.median(heights)), 1) if heights else None,
        major_m=round(math.sqrt(values[1] * CHI2_2DOF_95), 1),
        minor_m=round(math.sqrt(max(values[0], 0.0) * CHI2_2DOF_95), 1),
        major_bearing_deg=round(math.degrees(math.atan2(major[0], major[1])) % 180.0, 1),
        crossing_deg=round(crossing, 1), units=units,
        t_s=round(float(np.mean([s.t_s for s in sightings])), 3),
    )


def track(sightings: Sequence[Sighting], bin_seconds: float) -> list[Fix]:
    """Fixes for successive `bin_seconds` spans (a moving drone's path); spans that give no
    fix (one unit heard it, or the lines were near-parallel) are left out."""
    if not sightings:
        return []
    first = min(s.t_s for s in sightings)
    bins: dict[int, list[Sighting]] = {}
    for s in sightings:
        bins.setdefault(int((s.t_s - first) // bin_seconds), []).append(s)
    fixes = []
    for key in sorted(bins):
        try:
            fixes.append(locate(bins[key]))
        except FixRefused:
            continue
    return fixes
