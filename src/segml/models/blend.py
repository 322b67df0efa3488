"""Shrinking the LightGBM forecast towards the two forecasts users already trust.

The potential-value model (:mod:`segml.models.potential`) can blend its own forecast ``g`` with

- the **past-spend run-rate** ``r = max(monetary_total, 0) × horizon_days / history_days`` ("the last period
  repeats"), and
- the **BG/NBD + Gamma-Gamma forecast** ``b`` (:class:`segml.models.baselines.BTYDModel`),

as ``w_g·g + w_r·r + w_b·b`` with non-negative weights summing to one, chosen on the model's own validation
fold inside the calibration period (:func:`choose_blend`). Both components are computed from columns of the
feature table (``monetary_total``, ``frequency``, ``btyd_recency_days``, ``t_days``, ``btyd_monetary``), so a
stored model re-scores from features alone; the BTYD part is stored as its fitted parameters (JSON, no
pickle, :func:`btyd_state` / :func:`btyd_from_state`).
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "BLEND_COMPONENTS",
    "blend_predictions",
    "btyd_from_state",
    "btyd_state",
    "choose_blend",
    "component_predictions",
    "fit_btyd",
    "run_rate",
]

#: blend components in weight order
BLEND_COMPONENTS = ("gbm", "run_rate", "btyd")

#: spacing of the weight grid (weights are multiples of it, summing to one)
WEIGHT_STEP = 0.1

#: the blend is chosen among weights whose validation Gini is at most this much below the best Gini of the
#: grid (see :func:`choose_blend`)
GINI_TOLERANCE = 0.005

#: decile MAPEs within this relative slack of the best eligible one count as tied; the tie goes to the largest
#: GBM weight
MAPE_SLACK = 0.10


def run_rate(features: pd.DataFrame, history_days: float, horizon_days: float) -> np.ndarray:
    """Past-spend run-rate: ``max(monetary_total, 0) × horizon_days / history_days`` (0 when missing)."""
    spend = pd.to_numeric(features["monetary_total"], errors="coerce").to_numpy(dtype=float)
    spend = np.clip(np.nan_to_num(spend, nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)
    return spend * (float(horizon_days) / float(history_days))


def fit_btyd(features: pd.DataFrame) -> Any | None:
    """BG/NBD + Gamma-Gamma fitted on the buyers of ``features``; None when it cannot be fitted."""
    from segml.models.baselines import BTYDModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return BTYDModel().fit(features)
        except (ValueError, ArithmeticError):
            return None


def btyd_state(model: Any) -> dict[str, Any]:
    """JSON-able fitted state of a :class:`~segml.models.baselines.BTYDModel` (what prediction needs)."""
    return {
        "time_unit": model.time_unit,
        "bgnbd_params": None if model.bgnbd_params_ is None else dict(model.bgnbd_params_),
        "gg_params": None if model.gg_params_ is None else dict(model.gg_params_),
        "fallback_prior_purchases": float(model.fallback_prior_purchases_),
        "fallback_prior_days": float(model.fallback_prior_days_),
        "fallback_mean_spend": float(model.fallback_mean_spend_),
    }


def btyd_from_state(state: dict[str, Any]) -> Any:
    """Rebuild a fitted :class:`~segml.models.baselines.BTYDModel` from :func:`btyd_state` output."""
    from segml.models.baselines import BTYDModel

    model = BTYDModel(time_unit=state["time_unit"])
    model.bgnbd_params_ = None if state["bgnbd_params"] is None else dict(state["bgnbd_params"])
    model.gg_params_ = None if state["gg_params"] is None else dict(state["gg_params"])
    model.fallback_prior_purchases_ = float(state["fallback_prior_purchases"])
    model.fallback_prior_days_ = float(state["fallback_prior_days"])
    model.fallback_mean_spend_ = float(state["fallback_mean_spend"])
    model.diagnostics_ = {"restored": True}
    return model


def component_predictions(
    features: pd.DataFrame,
    gbm: np.ndarray,
    history_days: float,
    horizon_days: float,
    btyd: Any | None,
) -> dict[str, np.ndarray]:
    """The blend components for the rows of ``features`` (``btyd`` left out when it is None)."""
    components = {
        "gbm": np.asarray(gbm, dtype=float),
        "run_rate": run_rate(features, history_days, horizon_days),
    }
    if btyd is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = btyd.predict(_btyd_inputs(features), float(horizon_days))
        components["btyd"] = np.clip(np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)
    return components


def _number(features: pd.DataFrame, column: str) -> np.ndarray:
    values = pd.to_numeric(features[column], errors="coerce").to_numpy(dtype=float)
    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)


def _btyd_inputs(features: pd.DataFrame) -> pd.DataFrame:
    """The BTYD columns made valid for any scored row (whole, non-negative repeat counts; recency within
    [0, t_days] and 0 without a repeat), so that unusual rows get a forecast instead of an error."""
    frequency = np.round(np.clip(_number(features, "frequency"), 0.0, None))
    age = np.clip(_number(features, "t_days"), 0.0, None)
    recency = np.where(frequency > 0, np.clip(_number(features, "btyd_recency_days"), 0.0, age), 0.0)
    inputs = pd.DataFrame(
        {
            "frequency": frequency,
            "btyd_recency_days": recency,
            "t_days": age,
            "btyd_monetary": _number(features, "btyd_monetary"),
        },
        index=features.index,
    )
    if "has_purchases" in features.columns:
        inputs["has_purchases"] = features["has_purchases"].to_numpy()
    else:  # as BTYDModel decides it: a purchase on or before the cutoff gives a defined age
        raw_age = pd.to_numeric(features["t_days"], errors="coerce").to_numpy(dtype=float)
        inputs["has_purchases"] = np.isfinite(raw_age)
    return inputs


def blend_predictions(components: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """``Σ weight × component`` over the components with a non-zero weight."""
    total = np.zeros_like(components["gbm"], dtype=float)
    for name, weight in weights.items():
        if weight:
            total = total + float(weight) * components[name]
    return total


def _weight_grid(names: list[str]) -> list[dict[str, float]]:
    steps = round(1.0 / WEIGHT_STEP)
    grid = []
    for counts in itertools.product(range(steps + 1), repeat=len(names)):
        if sum(counts) == steps:
            grid.append({name: round(c * WEIGHT_STEP, 10) for name, c in zip(names, counts, strict=True)})
    return grid


def choose_blend(
    actual: np.ndarray, components: dict[str, np.ndarray]
) -> tuple[dict[str, float], pd.DataFrame]:
    """Blend weights chosen on a validation fold.

    Every weight vector of the grid (multiples of :data:`WEIGHT_STEP` summing to one) is scored: normalized
    Gini, Spearman, top-20 % capture, decile MAPE, total error. Eligible are the vectors whose Gini is within
    :data:`GINI_TOLERANCE` of the grid's best (ranking is not given away); among those whose decile MAPE is
    within :data:`MAPE_SLACK` (relative) of the lowest eligible one, the largest GBM weight wins, then the
    lowest decile MAPE, then the lowest |total error|.

    Returns
    -------
    (dict, pandas.DataFrame)
        The weights (every component of :data:`BLEND_COMPONENTS`, 0 for one that is absent) and the scored
        grid (one row per weight vector, ``selected`` marks the winner).
    """
    from segml.evaluate import (
        decile_mape,
        decile_table,
        normalized_gini,
        spearman,
        top_k_capture,
        total_error,
    )

    names = [n for n in BLEND_COMPONENTS if n in components]
    rows = []
    for weights in _weight_grid(names):
        predicted = blend_predictions(components, weights)
        mape = decile_mape(decile_table(actual, predicted))
        rows.append(
            {
                **{f"w_{n}": weights.get(n, 0.0) for n in BLEND_COMPONENTS},
                "gini": normalized_gini(actual, predicted),
                "spearman": spearman(actual, predicted),
                "top20_capture": top_k_capture(actual, predicted, 0.2),
                "decile_mape": float("nan") if mape is None else mape,
                "total_error": total_error(actual, predicted),
            }
        )
    table = pd.DataFrame(rows)
    eligible = table["gini"] >= table["gini"].max() - GINI_TOLERANCE
    mape = table["decile_mape"].fillna(np.inf)
    best_mape = mape[eligible].min()
    # near-ties in decile MAPE are noise of one fold: among weights within the slack of the best, keep as
    # much of the GBM as possible (the component that was selected for ranking)
    close = eligible & (mape <= best_mape * (1.0 + MAPE_SLACK))
    order = np.lexsort(
        (
            table["total_error"].abs().fillna(np.inf).to_numpy(),
            mape.to_numpy(),
            -table["w_gbm"].to_numpy(),
            ~close.to_numpy(),
        )
    )
    winner = int(order[0])
    table["eligible"] = eligible
    table["selected"] = False
    table.loc[winner, "selected"] = True
    weights = {n: float(table.loc[winner, f"w_{n}"]) for n in BLEND_COMPONENTS}
    return weights, table
