"""Forecast intervals of the potential model (segml.models.intervals) and the grade range in the grades."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from segml.models.intervals import INTERVAL_LEVELS, coverage, fit_intervals, interval_bounds


def _fold(n: int, seed: int, base_orders: float = 0.0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Customers with a known spend rate; realised spend is a Poisson count of orders of a gamma size. With
    ``base_orders`` 0 many customers buy nothing in the window (their P10 is 0); with a few base orders
    almost everyone buys."""
    rng = np.random.default_rng(seed)
    rate = base_orders + rng.gamma(1.5, 1.0, n)  # orders per window
    size = 50.0
    orders = rng.poisson(rate)
    actual = np.array([rng.gamma(4.0, size / 4.0, k).sum() for k in orders])
    forecast = rate * size
    features = pd.DataFrame(
        {"customer_id": [f"C{i:06d}" for i in range(n)], "has_purchases": np.ones(n, dtype=bool)}
    )
    return features, actual, forecast


def test_intervals_cover_about_eighty_percent_of_new_customers():
    features, actual, forecast = _fold(20_000, 1, base_orders=6.0)
    state = fit_intervals(features, actual, forecast, 90)
    assert state is not None
    assert state["levels"] == list(INTERVAL_LEVELS)
    json.dumps(state)  # JSON, no pickle
    # cross-fitted coverage on the fold, and on fresh customers drawn the same way
    assert 0.76 <= state["check"]["inside"] <= 0.84
    fresh, fresh_actual, fresh_forecast = _fold(20_000, 2, base_orders=6.0)
    low, high = interval_bounds(state, fresh_forecast, 90)
    got = coverage(fresh_actual, low, high)
    assert got["rows"] == 20_000
    assert 0.76 <= got["inside"] <= 0.84
    assert 0.07 <= got["below"] <= 0.13 and 0.07 <= got["above"] <= 0.13


def test_zero_inflated_spend_gets_a_zero_p10_and_a_calibrated_p90():
    """When more than a tenth of similar customers buy nothing, the P10 is 0 and the interval covers more than
    80 %: what is calibrated is each bound, so about a tenth realise above the P90 and at most a tenth below
    the P10."""
    features, actual, forecast = _fold(20_000, 7)
    state = fit_intervals(features, actual, forecast, 90)
    fresh, fresh_actual, fresh_forecast = _fold(20_000, 8)
    low, high = interval_bounds(state, fresh_forecast, 90)
    got = coverage(fresh_actual, low, high)
    assert state["lower"][0] == 0.0
    assert got["below"] <= 0.10, "a P10 of 0 can never be undershot"
    assert 0.07 <= got["above"] <= 0.13


def test_bounds_bracket_the_point_and_never_fall_as_the_forecast_grows():
    features, actual, forecast = _fold(20_000, 3)
    state = fit_intervals(features, actual, forecast, 90)
    point = np.geomspace(0.5, 2_000.0, 400)
    low, high = interval_bounds(state, point, 90)
    assert np.all(low <= point + 1e-9) and np.all(high >= point - 1e-9)
    assert np.all(np.diff(low) >= -1e-9) and np.all(np.diff(high) >= -1e-9)
    assert low[0] == 0.0, "a small forecast's P10 is nothing: most such customers buy nothing in the window"


def test_intervals_follow_the_forecast_per_day_across_window_lengths():
    """The bands are on forecast per day: a horizon twice the fold's window gets the same multipliers for
    the same daily rate."""
    features, actual, forecast = _fold(20_000, 4)
    state = fit_intervals(features, actual, forecast, 90)
    low_90, high_90 = interval_bounds(state, np.array([100.0]), 90)
    low_180, high_180 = interval_bounds(state, np.array([200.0]), 180)
    assert low_180[0] == pytest.approx(2 * low_90[0]) and high_180[0] == pytest.approx(2 * high_90[0])


def test_a_level_off_fold_moves_no_multiplier():
    """A fold whose forecast is off by the same factor for everyone (a holiday in the window) gives the same
    multipliers: the forecast is scaled to the fold's realised total first."""
    features, actual, forecast = _fold(10_000, 5)
    base = fit_intervals(features, actual, forecast, 90)
    off = fit_intervals(features, actual, forecast * 1.7, 90)
    assert np.allclose(base["lower"], off["lower"]) and np.allclose(base["upper"], off["upper"])


def test_missing_and_empty_rows_get_no_interval():
    features, actual, forecast = _fold(5_000, 6)
    state = fit_intervals(features, actual, forecast, 90)
    low, high = interval_bounds(state, np.array([np.nan, 0.0, 10.0]), 90)
    assert np.isnan(low[:2]).all() and np.isnan(high[:2]).all()
    assert np.isfinite(low[2]) and np.isfinite(high[2])
    low, high = interval_bounds(None, np.array([10.0]), 90)
    assert np.isnan(low).all() and np.isnan(high).all()
    assert fit_intervals(features.head(50), actual[:50], forecast[:50], 90) is None, "too few rows to measure"
    empty = coverage(np.array([1.0]), np.array([np.nan]), np.array([np.nan]))
    assert empty == {"rows": 0, "inside": None, "below": None, "above": None}
