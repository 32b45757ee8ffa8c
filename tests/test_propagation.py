"""Sound in the open air: ISO 9613-1 absorption, spreading, and a drone at a distance in a night."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="training tests need the 'train' extra")

from nightear_training.propagation import (  # noqa: E402
    a_weighted_rms_db,
    at_distance,
    iso9613_absorption_db_per_m,
    propagate,
    rms_db,
)
from tests.test_augment import RATE, tone  # noqa: E402


@pytest.mark.parametrize(
    "freq_hz,db_per_km",  # ISO 9613-2 table 2 at 20 C, 70% relative humidity
    [(125, 0.3), (250, 1.1), (500, 2.8), (1000, 5.0), (2000, 9.0), (4000, 22.9), (8000, 76.6)],
)
def test_absorption_matches_the_iso_table(freq_hz: float, db_per_km: float) -> None:
    assert iso9613_absorption_db_per_m(np.array([freq_hz]), 20.0, 70.0)[0] * 1000 == pytest.approx(
        db_per_km, rel=0.12)


def test_distance_spreads_6_db_per_doubling_and_absorbs_high_frequencies_more() -> None:
    low, high = tone(200.0), tone(6000.0)
    assert rms_db(propagate(low, 200.0)) - rms_db(propagate(low, 100.0)) == pytest.approx(-6.02, abs=0.1)
    loss_high = rms_db(high) - rms_db(propagate(high, 500.0))
    loss_low = rms_db(low) - rms_db(propagate(low, 500.0))
    assert loss_high - loss_low > 10.0  # 6 kHz loses far more over 500 m than 200 Hz


def test_a_drone_farther_away_is_quieter_in_the_same_night() -> None:
    rng = np.random.default_rng(2)
    drone = tone(200.0) + tone(1200.0)
    night = (0.001 * rng.standard_normal(RATE)).astype(np.float32)
    near, far = at_distance(drone, night, 50.0), at_distance(drone, night, 400.0)
    assert a_weighted_rms_db(near) > a_weighted_rms_db(far) + 10.0

