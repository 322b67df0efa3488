"""Forecast intervals: a P10 and a P90 of each customer's future spend, measured inside the calibration period.

A point forecast says what a customer is expected to spend; a sales team acting on a grade also needs to know
how sure that is. A customer forecast at 1,000 may realise 0 or 5,000, and how wide that range is depends on
the forecast's size (a small forecast is mostly "will they buy at all"). This module measures it on the
potential model's **validation fold** (features at the validation cutoff, spend in (validation cutoff,
calibration end]; nothing after the calibration end) and turns it into two multipliers of the point forecast:

1. the forecast is the *out-of-sample* one of the fold (the selected candidate trained without the fold's
   labels, blended, and recency-calibrated as the shipped forecast is), scaled to the fold's realised total
   (so a fold whose level is off for everyone, a holiday or a closure, moves the multipliers of no one);
2. the fold's rows are split into :data:`INTERVAL_BANDS` equal-count bands of that forecast per day; in each
   band the 10th and 90th percentiles of ``realised ÷ forecast`` are the band's lower and upper multipliers;
3. at scoring time a customer's multipliers are interpolated linearly in the logarithm of its forecast per
   day between the bands' median forecasts (flat beyond the ends), and the P10 / P90 are the point
   forecast times them; the bounds at the band centres are made non-decreasing in the forecast, so a larger
   forecast never gets a lower P10 or P90.

The validation window is shorter than the forecast horizon when the calibration period is shorter than two
horizons (CDNOW: 136 of 273 days; Ta Feng: 30 of 59). Spend over a shorter window is relatively more dispersed
(more customers buy nothing in it), so the intervals are then wider than needed: conservative, never
narrower. The fold measures the coverage it expects cross-fitted: multipliers fitted on one half of the
customers (a hash of the id) score the other half, and the state keeps that coverage as ``check``.

The state is JSON (levels, band centres, multipliers, the check). Rows without a purchase get no interval
(NaN), as they get no point forecast of their own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from segml.models.lapse import customer_halves

__all__ = [
    "INTERVAL_BANDS",
    "INTERVAL_LEVELS",
    "coverage",
    "fit_intervals",
    "interval_bounds",
    "interval_report",
]

#: equal-count bands of the forecast on the validation fold
INTERVAL_BANDS = 10

#: the lower and upper quantile levels (P10, P90: an 80 % interval)
INTERVAL_LEVELS = (0.1, 0.9)

#: fewest fold rows per band for the multipliers to be measured
MIN_ROWS_PER_BAND = 20


def _fit(rate: np.ndarray, ratio: np.ndarray) -> dict[str, Any] | None:
    """Band centres (forecast per day) and the lower / upper multipliers; None when there is too little."""
    if len(rate) < INTERVAL_BANDS * MIN_ROWS_PER_BAND:
        return None
    order = np.argsort(rate, kind="stable")
    bands = np.array_split(order, INTERVAL_BANDS)
    centres, lower, upper = [], [], []
    for rows in bands:
        centres.append(float(np.median(rate[rows])))
        low, high = np.quantile(ratio[rows], INTERVAL_LEVELS)
        lower.append(float(low))
        upper.append(float(high))
    centres_arr = np.asarray(centres)
    if not (np.diff(centres_arr) > 0).all():  # ties in the forecast: merge bands with the same centre
        keep = np.r_[True, np.diff(centres_arr) > 0]
        centres_arr = centres_arr[keep]
        lower = list(np.asarray(lower)[keep])
        upper = list(np.asarray(upper)[keep])
    if len(centres_arr) < 2:
        return None
    # the bounds themselves (forecast × multiplier) never fall as the forecast grows
    low_bound = np.maximum.accumulate(centres_arr * np.asarray(lower))
    high_bound = np.maximum.accumulate(centres_arr * np.asarray(upper))
    return {
        "centres": [float(c) for c in centres_arr],
        "lower": [float(v) for v in low_bound / centres_arr],
        "upper": [float(v) for v in high_bound / centres_arr],
    }


def _multipliers(state: dict[str, Any], rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.log(np.maximum(rate, 1e-300))
    grid = np.log(np.asarray(state["centres"], dtype=float))
    return np.interp(x, grid, state["lower"]), np.interp(x, grid, state["upper"])


def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> dict[str, float | int | None]:
    """Share of rows whose realised value is inside ``[lower, upper]``, below it and above it (rows with a
    finite interval only), and the rows counted."""
    actual = np.asarray(actual, dtype=float)
    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    rows = np.isfinite(lower) & np.isfinite(upper) & np.isfinite(actual)
    n = int(rows.sum())
    if not n:
        return {"rows": 0, "inside": None, "below": None, "above": None}
    a, lo, hi = actual[rows], lower[rows], upper[rows]
    below = float((a < lo).mean())
    above = float((a > hi).mean())
    return {"rows": n, "inside": 1.0 - below - above, "below": below, "above": above}


def fit_intervals(
    features: pd.DataFrame, actual: np.ndarray, forecast: np.ndarray, window_days: int
) -> dict[str, Any] | None:
    """Fit the interval multipliers on a validation fold.

    Parameters
    ----------
    features:
        The fold's feature rows (``customer_id``, ``has_purchases``).
    actual, forecast:
        Realised spend in the fold's window and the out-of-sample forecast of it (same rows).
    window_days:
        Length of the fold's window in days (the forecast per day is ``forecast / window_days``).

    Returns
    -------
    dict or None
        JSON-able ``levels``, ``centres`` (forecast per day), ``lower``, ``upper`` (multipliers of the point
        forecast) and ``check`` (cross-fitted coverage on the fold; None when a half is too small to fit);
        None when the fold is too small.
    """
    actual = np.asarray(actual, dtype=float)
    forecast = np.asarray(forecast, dtype=float)
    purchased = (
        features["has_purchases"].astype(bool).to_numpy()
        if "has_purchases" in features.columns
        else np.ones(len(actual), dtype=bool)
    )
    rows = purchased & np.isfinite(forecast) & (forecast > 0) & np.isfinite(actual)
    if not rows.any() or actual[rows].sum() <= 0:
        return None
    level = actual[rows].sum() / forecast[rows].sum()
    scaled = forecast * level
    rate = scaled / float(window_days)
    ratio = np.where(rows, actual / np.where(rows, scaled, 1.0), np.nan)
    whole = _fit(rate[rows], ratio[rows])
    if whole is None:
        return None
    half = customer_halves(features)
    lower = np.full(len(actual), np.nan)
    upper = np.full(len(actual), np.nan)
    for side in (False, True):
        fit_rows = rows & (half == side)
        score_rows = rows & (half != side)
        state = _fit(rate[fit_rows], ratio[fit_rows])
        if state is None:
            break
        low, high = _multipliers(state, rate[score_rows])
        lower[score_rows] = scaled[score_rows] * low
        upper[score_rows] = scaled[score_rows] * high
    check = coverage(actual, lower, upper) if np.isfinite(lower).any() else None
    return {
        "levels": [float(v) for v in INTERVAL_LEVELS],
        **whole,
        "window_days": int(window_days),
        "check": check,
    }


def interval_bounds(
    state: dict[str, Any] | None, point: np.ndarray, horizon_days: int
) -> tuple[np.ndarray, np.ndarray]:
    """P10 and P90 of each row's spend over the horizon, from its point forecast (NaN where the point is
    NaN or not positive, or when no interval was fitted)."""
    point = np.asarray(point, dtype=float)
    lower = np.full(point.shape, np.nan)
    upper = np.full(point.shape, np.nan)
    if state is None:
        return lower, upper
    rows = np.isfinite(point) & (point > 0)
    low, high = _multipliers(state, point[rows] / float(horizon_days))
    lower[rows] = point[rows] * low
    upper[rows] = point[rows] * high
    return lower, upper


def interval_report(
    actual: np.ndarray,
    point: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    state: dict[str, Any] | None,
    groups: int = 5,
) -> dict[str, Any]:
    """How the intervals held on realised spend: coverage overall and per forecast quintile (purchasers with
    an interval), the share of zero P10s, the mean P90 ÷ point, and the fold's own cross-fitted check."""
    actual = np.asarray(actual, dtype=float)
    point = np.asarray(point, dtype=float)
    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    rows = np.isfinite(lower) & np.isfinite(upper) & np.isfinite(point) & (point > 0)
    report: dict[str, Any] = {
        "levels": list(INTERVAL_LEVELS) if state is None else state["levels"],
        "fitted": state is not None,
        "validation_window_days": None if state is None else state.get("window_days"),
        "validation_check": None if state is None else state.get("check"),
        "realised": coverage(actual[rows], lower[rows], upper[rows]),
        "p10_zero_share": float((lower[rows] == 0).mean()) if rows.any() else None,
        "mean_p90_over_point": float((upper[rows] / point[rows]).mean()) if rows.any() else None,
        "by_forecast_group": [],
    }
    if rows.sum() >= groups:
        order = np.argsort(point[rows], kind="stable")
        idx = np.flatnonzero(rows)
        for k, part in enumerate(np.array_split(order, groups), start=1):
            sel = idx[part]
            report["by_forecast_group"].append({"group": k, **coverage(actual[sel], lower[sel], upper[sel])})
    return report
