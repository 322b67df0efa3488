"""Recency calibration: a lapsed customer is not forecast above what similar lapsed customers realise.

A spend forecast learnt on stacked cutoffs tends to keep a floor under customers who stopped buying long ago
(a tweedie or gamma booster never reaches zero, and the run-rate part of a blend remembers old spend). This
module measures, on the potential model's validation fold inside the calibration period, how much each
**recency band** (equal-count bands of ``recency_days``, the days since the last purchase) realises relative to
its forecast, and turns that into a per-band factor:

1. ``c_b = (actual_b / predicted_b) / (actual / predicted)``: the band's calibration relative to the whole fold's,
   so a fold whose level is off for everyone (a store closure, a holiday) does not move the factors;
2. made non-increasing in recency (isotonic, weighted by the band's forecast): a longer lapse never earns a
   higher factor;
3. kept within [:data:`FACTOR_FLOOR`, 1 / :data:`FACTOR_FLOOR`], then all rescaled so that the fold's total
   forecast is unchanged: the calibration moves forecast from lapsed bands that realise less than forecast to
   recent ones that realise more, and leaves the level to the model.

The factors are adopted only when they help on customers they were not fitted on: the fold's buyers are split
in two halves by a hash of the customer id, factors fitted on one half are scored on the other (decile MAPE of the
forecast scaled to the fold's realised total, so that only the shape is judged; normalized Gini), and the
calibration is kept when the cross-fitted decile MAPE is lower by more than the blend's tie slack (10 %,
:data:`segml.models.blend.MAPE_SLACK`) and the Gini is no
more than :data:`GINI_TOLERANCE` below the unadjusted forecast's. The kept factors are then fitted on all
buyers of the fold. The state is JSON (each band's median recency in days and its factor); between those
points the factor is interpolated log-linearly, beyond them it is flat.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["FACTOR_FLOOR", "LAPSE_BANDS", "choose_lapse", "customer_halves", "lapse_factors"]

#: equal-count recency bands among the fold's buyers
LAPSE_BANDS = 10

#: lowest factor a band can get before the level-neutral rescaling (the highest is its inverse)
FACTOR_FLOOR = 0.2

#: the cross-fitted Gini may be at most this much below the unadjusted forecast's: the calibration is a
#: money safety net and may give up a little ranking on the fold for a forecast whose deciles are right
GINI_TOLERANCE = 0.01


def _recency(features: pd.DataFrame) -> np.ndarray:
    if "recency_days" not in features.columns:
        return np.full(len(features), np.nan)
    return pd.to_numeric(features["recency_days"], errors="coerce").to_numpy(dtype=float)


def _bands(recency: np.ndarray, edges: list[float]) -> np.ndarray:
    return np.searchsorted(np.asarray(edges, dtype=float), recency, side="right")


def _fit(recency: np.ndarray, actual: np.ndarray, predicted: np.ndarray) -> dict[str, Any] | None:
    """Band edges and factors fitted on the rows given (buyers only); None when there is nothing to fit."""
    from sklearn.isotonic import IsotonicRegression

    if len(recency) < 2 * LAPSE_BANDS or predicted.sum() <= 0 or actual.sum() <= 0:
        return None
    quantiles = np.quantile(recency, np.linspace(0, 1, LAPSE_BANDS + 1)[1:-1])
    edges = sorted({float(q) for q in quantiles})
    band = _bands(recency, edges)
    n = len(edges) + 1
    got = np.bincount(band, weights=actual, minlength=n)
    forecast = np.bincount(band, weights=predicted, minlength=n)
    level = actual.sum() / predicted.sum()
    relative = np.where(forecast > 0, got / np.where(forecast > 0, forecast, 1.0) / level, 1.0)
    weight = np.maximum(forecast, 1e-12)
    smooth = IsotonicRegression(increasing=False).fit_transform(np.arange(n), relative, sample_weight=weight)
    factors = np.clip(smooth, FACTOR_FLOOR, 1.0 / FACTOR_FLOOR)
    # level-neutral: the fitting rows keep their total forecast, only its split across recency bands moves
    centres = [float(np.median(recency[band == b])) if (band == b).any() else np.nan for b in range(n)]
    keep = np.isfinite(centres)
    state = {
        "centres": [float(c) for c in np.asarray(centres)[keep]],
        "factors": [float(f) for f in factors[keep]],
    }
    if len(state["centres"]) < 2:
        return None
    # level-neutral: the fitting rows keep their total forecast, only its split across recency moves
    scale = predicted.sum() / float((predicted * _interpolate(state, recency)).sum())
    state["factors"] = [float(f * scale) for f in state["factors"]]
    return state


def _interpolate(state: dict[str, Any], recency: np.ndarray) -> np.ndarray:
    """Factor at each recency: log-linear between the bands' median recencies, flat beyond the ends (a
    smooth curve, so customers a day apart are not split by a step)."""
    return np.exp(np.interp(recency, state["centres"], np.log(state["factors"])))


def lapse_factors(state: dict[str, Any] | None, features: pd.DataFrame) -> np.ndarray:
    """Per-row factor of a fitted calibration (1 for rows without a purchase, or when none was adopted)."""
    if state is None or not state.get("adopted"):
        return np.ones(len(features))
    recency = _recency(features)
    known = np.isfinite(recency)
    out = np.ones(len(features))
    out[known] = _interpolate(state, recency[known])
    return out


def customer_halves(features: pd.DataFrame) -> np.ndarray:
    """Two halves of a fold's rows for cross-fitting: by a hash of ``customer_id`` (stable across batches and
    runs), or alternating rows when the frame has no ids."""
    if "customer_id" not in features.columns:
        return np.arange(len(features)) % 2 == 1
    return np.array([zlib.crc32(str(c).encode()) & 1 for c in features["customer_id"]], dtype=bool)


def choose_lapse(features: pd.DataFrame, actual: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Fit the recency calibration on a validation fold and decide, cross-fitted, whether to adopt it.

    Parameters
    ----------
    features:
        The fold's feature rows (``customer_id``, ``recency_days``).
    actual, predicted:
        Realised spend in the fold's window and the forecast being calibrated (same rows).

    Returns
    -------
    dict
        JSON-able: ``adopted``, ``centres``, ``factors`` (fitted on every buyer of the fold), and ``check``
        (cross-fitted decile MAPE, Gini and total error with and without the calibration).
    """
    from segml.evaluate import decile_mape, decile_table, normalized_gini, total_error

    actual = np.asarray(actual, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    recency = _recency(features)
    buyers = np.isfinite(recency)
    whole = _fit(recency[buyers], actual[buyers], predicted[buyers])
    if whole is None:
        return {"adopted": False, "centres": [], "factors": [], "check": None}
    half = customer_halves(features)
    adjusted = predicted.copy()
    for side in (False, True):
        fit_rows = buyers & (half == side)
        score_rows = buyers & (half != side)
        state = _fit(recency[fit_rows], actual[fit_rows], predicted[fit_rows])
        if state is None:
            return {**whole, "adopted": False, "check": None}
        adjusted[score_rows] = predicted[score_rows] * _interpolate(state, recency[score_rows])

    def score(values: np.ndarray) -> dict[str, float]:
        # the calibration is level-neutral, so it is judged on its shape: decile MAPE after scaling the
        # forecast to the fold's realised total (a fold whose level is off for everyone does not decide it)
        level = actual.sum() / values.sum() if values.sum() > 0 else 1.0
        mape = decile_mape(decile_table(actual, values * level))
        return {
            "decile_mape": float("nan") if mape is None else float(mape),
            "gini": float(normalized_gini(actual, values)),
            "total_error": float(total_error(actual, values)),
        }

    from segml.models.blend import MAPE_SLACK

    before, after = score(predicted), score(adjusted)
    # a decile MAPE within the blend's tie slack of the uncalibrated one is no evidence of a miscalibration
    adopted = bool(
        np.isfinite(after["decile_mape"])
        and after["decile_mape"] < before["decile_mape"] * (1.0 - MAPE_SLACK)
        and after["gini"] >= before["gini"] - GINI_TOLERANCE
        and max(whole["factors"]) - min(whole["factors"]) > 1e-9
    )
    return {**whole, "adopted": adopted, "check": {"without": before, "cross_fitted": after}}
