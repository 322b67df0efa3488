"""Choices made inside the calibration period: the scorer behind the potential axis and the policy weights.

Nothing here looks at the holdout. :func:`inner_validation` repeats the potential model's own selection set-up
one level up: an inner cutoff ``t_v`` inside calibration (the same rule as
:meth:`segml.models.potential.PotentialValueModel.fit`: half the calibration span, or one horizon before its
end when that is later), every scorer fitted on data up to ``t_v`` only and measured on what the customers
then spent in ``(t_v, calibration_end]``. It returns

- the scorer for the potential axis: the potential model when its validation Gini beats every other
  candidate (BG/NBD + Gamma-Gamma, past spend, the RFM rank), otherwise the best of them, with one plain
  sentence saying so (the fallback);
- for ``policy.weights: auto``, the weights of the value / potential / loyalty ranks chosen on a grid to
  maximise the top grades' capture of validation-window value among the weightings whose grades are monotone,
  and the table of every grid point.

:func:`thin_holdout_warning` says in one sentence when a holdout cannot separate models.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segml import evaluate
from segml.config import FeatureConfig
from segml.errors import ConfigError, InputFileError
from segml.grading_evaluation import top_grade_codes
from segml.models.baselines import BASELINE_LABELS, BASELINE_PREDICTS_MONEY, baseline_predictions
from segml.policy import GradePolicy, Weights

__all__ = [
    "CANDIDATE_SCORERS",
    "InnerValidation",
    "MONEY_BASELINES",
    "PotentialFactory",
    "SCORER_LABELS",
    "gini_interval",
    "inner_validation",
    "inner_validation_cutoff",
    "money_check",
    "select_scorer",
    "select_weights",
    "thin_holdout_warning",
    "weight_grid",
]

#: ``potential_factory(cutoff, horizon_days, features) -> predictions``: fit the potential model on data up to
#: ``cutoff`` for a ``horizon_days`` forecast and predict it for the rows of ``features`` (aligned by position)
PotentialFactory = Callable[[dt.date, int, pd.DataFrame], np.ndarray]

#: scorers that may stand behind the potential axis, the potential model first
CANDIDATE_SCORERS = ("potential", "btyd", "past_spend", "rfm")
SCORER_LABELS = {"potential": "the potential model (LightGBM)", **BASELINE_LABELS}

#: thin-holdout thresholds (issue: fewer than 200 buyers, or a Gini CI half-width above 0.05)
MIN_HOLDOUT_CUSTOMERS = 200
MAX_GINI_HALF_WIDTH = 0.05


# --------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class InnerValidation:
    """What :func:`inner_validation` chose, and the evidence (all JSON-able through :meth:`to_dict`)."""

    validation_cutoff: dt.date
    calibration_end: dt.date
    validation_days: int
    customers: int
    customers_with_value: int
    #: one row per scorer: ``scorer``, ``label``, ``normalized_gini``, ``spearman``, ``top20_capture``,
    #: ``decile_mape``, ``total_error``, ``candidate``
    scorer_table: list[dict[str, Any]]
    selected_scorer: str
    #: True when the potential model did not win and the best other scorer is used
    fallback: bool
    #: one plain sentence when ``fallback``, else None
    explanation: str | None
    #: the potential model's Gini minus the best other candidate's, with a paired-bootstrap 95 % interval
    potential_gini_diff: float | None
    potential_gini_diff_ci: list[float | None]
    potential_gini_diff_vs: str
    #: chosen weights (``value``, ``potential``, ``loyalty``) when the policy's weights are ``auto``, else None
    weights: dict[str, float] | None = None
    #: one row per grid point: the weights, ``top_capture``, ``monotone``, ``selected``
    weights_table: list[dict[str, Any]] = field(default_factory=list)
    weights_note: str | None = None
    #: the potential model's money forecast against the money baselines' on the same fold (:func:`money_check`)
    money_check: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document["validation_cutoff"] = self.validation_cutoff.isoformat()
        document["calibration_end"] = self.calibration_end.isoformat()
        return document


# --------------------------------------------------------------------------------------------------------------
# Pieces


def inner_validation_cutoff(start: dt.date, calibration_end: dt.date, horizon_days: int) -> dt.date:
    """The inner cutoff ``t_v``: ``max(start + span // 2, calibration_end − horizon_days)`` (the rule the
    potential model selects its own settings with)."""
    span = (calibration_end - start).days
    if span < 2:
        raise ConfigError(
            f"cutoffs: the calibration period {start}..{calibration_end} is too short for an inner validation"
        )
    return max(start + dt.timedelta(days=span // 2), calibration_end - dt.timedelta(days=int(horizon_days)))


def _first_day(transactions: str | Path | pd.DataFrame, calibration_end: dt.date) -> dt.date:
    if isinstance(transactions, pd.DataFrame):
        stamps = pd.to_datetime(transactions["timestamp"])
        stamps = stamps[stamps.dt.normalize() <= pd.Timestamp(calibration_end)]
        if stamps.empty:
            raise InputFileError(f"transactions: no rows on or before {calibration_end}")
        return stamps.min().date()
    import duckdb

    with duckdb.connect() as con:
        first = con.execute(
            "SELECT MIN(CAST(timestamp AS DATE)) FROM read_parquet(?) WHERE CAST(timestamp AS DATE) <= ?",
            [str(transactions), calibration_end],
        ).fetchall()[0][0]
    if first is None:
        raise InputFileError(f"{transactions}: no transactions on or before {calibration_end}")
    return first


def select_scorer(
    actual: np.ndarray,
    predictions: dict[str, np.ndarray],
    ids: np.ndarray,
    *,
    candidates: Sequence[str] = CANDIDATE_SCORERS,
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure every scorer on validation values and choose the one behind the potential axis.

    The potential model is kept when its normalized Gini is above that of every other candidate; otherwise
    the candidate with the highest Gini is used (ties: the first in ``candidates``).

    Returns
    -------
    dict
        ``scorer_table``, ``selected_scorer``, ``fallback``, ``explanation`` (a sentence or None),
        ``potential_gini_diff``, ``potential_gini_diff_ci``, ``potential_gini_diff_vs``.
    """
    if "potential" not in predictions:
        raise ValueError("select_scorer: a 'potential' prediction is needed")
    table = []
    gini: dict[str, float] = {}
    for name, values in predictions.items():
        metrics = evaluate.evaluate_predictions(
            actual, values, ids, predicts_money=BASELINE_PREDICTS_MONEY.get(name, True)
        )
        value = metrics["normalized_gini"]
        gini[name] = -math.inf if value is None else float(value)
        table.append(
            {
                "scorer": name,
                "label": SCORER_LABELS.get(name, name),
                **{key: metrics[key] for key in evaluate.COMPARISON_METRICS},
                "candidate": name in candidates,
            }
        )
    others = [name for name in candidates if name != "potential" and name in predictions]
    if not others:
        raise ValueError(f"select_scorer: none of the other candidates {list(candidates)} was measured")
    best_other = max(others, key=lambda name: gini[name])  # max keeps the first of equals
    diff, low, high = evaluate.paired_bootstrap_gini_diff(
        actual, predictions["potential"], predictions[best_other], n_boot=n_boot, seed=seed
    )
    wins = gini["potential"] > gini[best_other]
    selected = "potential" if wins else best_other
    explanation = None
    if not wins:
        explanation = (
            f"The potential model did not beat {SCORER_LABELS.get(best_other, best_other)} inside the "
            f"calibration period (normalized Gini {_fmt(gini['potential'])} against {_fmt(gini[best_other])}), "
            f"so {SCORER_LABELS.get(best_other, best_other)} drives the grades instead (the forecast still sets "
            "the matrix's growth axis)."
        )
    return {
        "scorer_table": table,
        "selected_scorer": selected,
        "fallback": not wins,
        "explanation": explanation,
        "potential_gini_diff": _none_if_nan(diff),
        "potential_gini_diff_ci": [_none_if_nan(low), _none_if_nan(high)],
        "potential_gini_diff_vs": best_other,
    }


def _fmt(value: float) -> str:
    return "undefined" if not math.isfinite(value) else f"{value:.3f}"


def _none_if_nan(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def weight_grid(step: float = 0.1) -> list[Weights]:
    """Every (value, potential, loyalty) weighting on a ``step`` grid that sums to 1 (66 points at 0.1),
    in a fixed order: value weight descending, then potential weight descending."""
    units = round(1 / step)
    if not math.isclose(units * step, 1.0):
        raise ValueError(f"weight grid step must divide 1, got {step}")
    grid = []
    for value, potential in itertools.product(range(units, -1, -1), repeat=2):
        loyalty = units - value - potential
        if loyalty >= 0:
            grid.append(Weights(value=value / units, potential=potential / units, loyalty=loyalty / units))
    return grid


def select_weights(
    policy: GradePolicy,
    features: pd.DataFrame,
    potential: np.ndarray,
    actual: np.ndarray,
    *,
    grid: Sequence[Weights] | None = None,
    top_share: float = 0.2,
    share_tolerance: float = 0.25,
) -> tuple[Weights, list[dict[str, Any]], str | None]:
    """Choose the policy weights on validation values.

    For each weighting the policy is fitted on ``features`` (references and share bounds) and grades the same
    customers (those with purchases). Its ``top_capture`` is the share of ``actual`` captured by the best
    ``top share`` of customers by composite score (the top grades' configured share, 20 % by default; ties
    by customer id), so weightings are compared on equally many customers. Eligible weightings give monotone
    grades (mean ``actual`` never increases from one grade to the next) whose top grades really hold about
    that share (within ``share_tolerance`` of it, relative: a score with large ties cannot hold the shares).
    The chosen weighting has the highest capture among the eligible ones; ties go to the weighting closest
    (L1) to the preset 0.6 / 0.3 / 0.1, then to the first in grid order. When none is eligible the conditions
    are relaxed (shares first, then monotonicity) and the returned note says so.

    Returns
    -------
    (Weights, list of dict, str or None)
        The chosen weights, the table (``value``, ``potential``, ``loyalty``, ``top_capture``,
        ``top_grades_share``, ``monotone``, ``selected``) and a note (None when an eligible weighting exists).
    """
    grid = list(grid) if grid is not None else weight_grid()
    if not grid:
        raise ValueError("select_weights: the weight grid is empty")
    purchased = features["has_purchases"].fillna(False).to_numpy(dtype=bool)
    values = np.asarray(actual, dtype=float)[purchased]
    ids = features["customer_id"].to_numpy()[purchased]
    order = [g.code for g in policy.grades]
    top_codes = top_grade_codes(policy, top_share)
    target = (
        float(sum(g.share or 0.0 for g in policy.grades if g.code in top_codes))
        if policy.method == "shares"
        else top_share
    )
    preset = np.array([0.6, 0.3, 0.1])
    rows = []
    for weights in grid:
        graded = policy.with_weights(weights).fit(features, potential).grade(features, potential)
        letters = graded["grade"].to_numpy()[purchased]
        score = graded["score"].to_numpy(dtype=float)[purchased]
        means = [values[letters == code].mean() for code in order if np.any(letters == code)]
        capture = evaluate.top_k_capture(values, score, target, ids) if values.sum() > 0 else float("nan")
        rows.append(
            {
                "value": weights.value,
                "potential": weights.potential,
                "loyalty": weights.loyalty,
                "top_capture": _none_if_nan(capture),
                "top_grades_share": float(np.isin(letters, top_codes).mean()) if letters.size else None,
                "monotone": bool(np.all(np.diff(means) <= 0)),
                "selected": False,
            }
        )
    capture = np.array([-math.inf if r["top_capture"] is None else r["top_capture"] for r in rows])
    monotone = np.array([r["monotone"] for r in rows])
    held = np.array(
        [
            r["top_grades_share"] is not None
            and abs(r["top_grades_share"] - target) <= share_tolerance * target
            for r in rows
        ]
    )
    distance = np.array(
        [np.abs(np.array([r["value"], r["potential"], r["loyalty"]]) - preset).sum() for r in rows]
    )
    note = None
    if (monotone & held).any():
        eligible = monotone & held
    elif monotone.any():
        eligible = monotone
        note = (
            "No monotone weighting on the grid kept the top grades near their configured share on the "
            "in-calibration validation; the best monotone weighting was taken."
        )
    else:
        eligible = np.ones(len(rows), dtype=bool)
        note = (
            "No weighting on the grid gave grades whose realised value falls from A to E on the in-calibration "
            "validation; the weights with the highest top-grade capture were taken."
        )
    # highest capture, then closest to the preset (rounded: grid floats), then grid order
    key = np.where(eligible, capture, -math.inf)
    winner = int(np.lexsort((np.arange(len(rows)), np.round(distance, 9), -key))[0])
    rows[winner]["selected"] = True
    return grid[winner], rows, note


# --------------------------------------------------------------------------------------------------------------
# The whole inner validation


def inner_validation(
    transactions_path: str | Path | pd.DataFrame,
    calibration_end: dt.date,
    feature_config: FeatureConfig,
    customers_path: str | Path | pd.DataFrame | None,
    horizon_days: int,
    potential_factory: PotentialFactory,
    policy: GradePolicy,
    seed: int = 0,
    *,
    undated: str = "exclude",
    invoices: str | Path | pd.DataFrame | None = None,
    interactions: str | Path | pd.DataFrame | None = None,
    n_boot: int = 200,
    weights_grid: Sequence[Weights] | None = None,
    baseline_settings: dict[str, Any] | None = None,
) -> InnerValidation:
    """Choose the potential-axis scorer (and, for ``weights: auto``, the policy weights) inside calibration.

    Parameters
    ----------
    transactions_path, customers_path:
        Clean transactions and (optional) customers, as for :func:`segml.features.build_features`.
    calibration_end:
        Last day of the calibration period; nothing after it is read.
    feature_config:
        The experiment's feature settings.
    horizon_days:
        The forecast horizon of the experiment (sets the inner cutoff, see :func:`inner_validation_cutoff`).
    potential_factory:
        ``(cutoff, horizon_days, features) -> predictions``: fits the potential model on data up to ``cutoff``
        and predicts ``horizon_days`` ahead for the rows of ``features``.
    policy:
        The experiment's grade policy; with ``weights: auto`` the weights are chosen here.
    seed:
        Seed of the paired bootstrap.
    undated:
        Population rule for customers without a signup date (``data.customers.undated``).
    invoices:
        Optional clean invoices (``data.invoices``), as for :func:`segml.features.build_features`.
    interactions:
        Optional clean interactions (``data.interactions``), likewise.
    n_boot:
        Bootstrap replicates of the potential model's Gini difference.
    weights_grid:
        Weightings tried for ``weights: auto`` (default :func:`weight_grid`).
    baseline_settings:
        Keyword arguments of :func:`segml.models.baselines.baseline_predictions` (``rfm_bins``,
        ``btyd_penalizer``, ``gg_penalizer``).

    Returns
    -------
    InnerValidation
    """
    from segml import features

    calibration_end = (
        dt.date.fromisoformat(str(calibration_end)) if isinstance(calibration_end, str) else calibration_end
    )
    start = _first_day(transactions_path, calibration_end)
    cutoff = inner_validation_cutoff(start, calibration_end, horizon_days)
    validation_days = (calibration_end - cutoff).days
    X = features.build_features(
        transactions_path,
        cutoff,
        feature_config,
        customers_path,
        undated=undated,
        invoices=invoices,
        interactions=interactions,
    )
    X = X[X["has_purchases"].astype(bool)].reset_index(drop=True)
    if X.empty:
        raise InputFileError(f"transactions: no customer had bought by the inner validation cutoff {cutoff}")
    labels = features.build_labels(transactions_path, cutoff, validation_days, label_end=calibration_end)
    actual = (
        X[["customer_id"]]
        .merge(labels[["customer_id", "future_spend"]], on="customer_id", how="left")["future_spend"]
        .fillna(0.0)
        .to_numpy(dtype=float)
    )
    ids = X["customer_id"].to_numpy()
    potential = np.asarray(potential_factory(cutoff, validation_days, X), dtype=float).ravel()
    if potential.size != len(X) or not np.all(np.isfinite(potential)):
        raise InputFileError(
            f"potential_factory: expected {len(X)} finite predictions at the inner cutoff {cutoff}, got "
            f"{potential.size} ({int(np.count_nonzero(~np.isfinite(potential)))} not finite)"
        )
    predictions = {"potential": potential}
    predictions.update(baseline_predictions(X, validation_days, **(baseline_settings or {})))
    chosen = select_scorer(actual, predictions, ids, n_boot=n_boot, seed=seed)

    result = InnerValidation(
        validation_cutoff=cutoff,
        calibration_end=calibration_end,
        validation_days=validation_days,
        customers=len(X),
        customers_with_value=int(np.count_nonzero(actual > 0)),
        **chosen,
    )
    result.money_check = money_check(result.scorer_table)
    if policy.auto_weights:
        weights, table, note = select_weights(
            policy, X, predictions[result.selected_scorer], actual, grid=weights_grid
        )
        result.weights = dataclasses.asdict(weights)
        result.weights_table = table
        result.weights_note = note
    return result


# --------------------------------------------------------------------------------------------------------------
# Holdout strength


def gini_interval(
    actual: Any, predicted: Any, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Normalized Gini with a bootstrap 95 % interval (same draws as the paired bootstrap for the same seed).

    Returns
    -------
    tuple of float
        ``(gini, lo, hi)`` (NaN when undefined).
    """
    actual_array = np.asarray(actual, dtype=float).ravel()
    predicted_array = np.asarray(predicted, dtype=float).ravel()
    gini = evaluate.normalized_gini(actual_array, predicted_array)
    if not math.isfinite(gini):
        return float("nan"), float("nan"), float("nan")
    n = actual_array.size
    perfect = evaluate._BlockGain(actual_array, actual_array)
    model = evaluate._BlockGain(actual_array, predicted_array)
    rng = np.random.default_rng(seed)
    reps_per_chunk = max(1, evaluate.BOOTSTRAP_CELLS_PER_CHUNK // n)
    values = np.empty(n_boot)
    for begin in range(0, n_boot, reps_per_chunk):
        reps = min(reps_per_chunk, n_boot - begin)
        counts = evaluate.bootstrap_counts(rng, reps, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            values[begin : begin + reps] = model.gini(counts) / perfect.gini(counts)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float(gini), float("nan"), float("nan")
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(gini), float(low), float(high)


#: the baselines whose forecast is money over the horizon, which the potential model's money is checked against
MONEY_BASELINES = ("past_spend", "btyd")


def money_check(scorer_table: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Whether the potential model's money forecast lost to a money baseline inside the calibration period.

    A forecast worse than "the last period repeats" (or than BG/NBD + Gamma-Gamma) must not ship silently:
    on the inner-validation fold, the potential model's decile MAPE is compared with the lowest of the money
    baselines (:data:`MONEY_BASELINES`) and its |total error| with the lowest of theirs. Worse means worse by
    more than the blend's tie slack (10 % relative, :data:`segml.models.blend.MAPE_SLACK`), the rule that
    calls two forecasts' money a tie everywhere else in the selection.

    Parameters
    ----------
    scorer_table:
        :attr:`InnerValidation.scorer_table` rows (``scorer``, ``decile_mape``, ``total_error``).

    Returns
    -------
    dict
        ``potential`` and ``best_decile_mape`` / ``best_total_error`` (each ``{scorer, decile_mape,
        total_error}`` or None), ``worse_decile_mape``, ``worse_total_error`` and ``warning``: one sentence
        when the potential model is worse on either, else None.
    """
    from segml.models.blend import MAPE_SLACK

    rows = {str(row["scorer"]): row for row in scorer_table}

    def entry(name: str) -> dict[str, Any]:
        row = rows[name]
        return {"scorer": name, "decile_mape": row.get("decile_mape"), "total_error": row.get("total_error")}

    def known(value: Any) -> bool:
        return value is not None and math.isfinite(float(value))

    result: dict[str, Any] = {
        "potential": None,
        "best_decile_mape": None,
        "best_total_error": None,
        "worse_decile_mape": False,
        "worse_total_error": False,
        "warning": None,
    }
    if "potential" not in rows:
        return result
    potential = entry("potential")
    result["potential"] = potential
    money = [entry(name) for name in MONEY_BASELINES if name in rows]
    by_mape = [m for m in money if known(m["decile_mape"])]
    by_total = [m for m in money if known(m["total_error"])]
    reasons = []
    if by_mape and known(potential["decile_mape"]):
        best = min(by_mape, key=lambda m: float(m["decile_mape"]))
        result["best_decile_mape"] = best
        if float(potential["decile_mape"]) > float(best["decile_mape"]) * (1.0 + MAPE_SLACK):
            result["worse_decile_mape"] = True
            reasons.append(
                f"decile error {float(potential['decile_mape']):.1%} against {float(best['decile_mape']):.1%} for "
                f"{SCORER_LABELS.get(best['scorer'], best['scorer'])}"
            )
    if by_total and known(potential["total_error"]):
        best = min(by_total, key=lambda m: abs(float(m["total_error"])))
        result["best_total_error"] = best
        if abs(float(potential["total_error"])) > abs(float(best["total_error"])) * (1.0 + MAPE_SLACK):
            result["worse_total_error"] = True
            reasons.append(
                f"total error {float(potential['total_error']):+.1%} against {float(best['total_error']):+.1%} for "
                f"{SCORER_LABELS.get(best['scorer'], best['scorer'])}"
            )
    if reasons:
        result["warning"] = (
            "On the inner validation inside the calibration period the potential model forecast money worse than "
            "a simple baseline ("
            + "; ".join(reasons)
            + "): read its predicted revenue per customer and per grade as a ranking aid more than as a budget."
        )
    return result


def thin_holdout_warning(
    actual: Any,
    selected_scores: Any,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    min_customers: int = MIN_HOLDOUT_CUSTOMERS,
    max_half_width: float = MAX_GINI_HALF_WIDTH,
) -> str | None:
    """One plain sentence when the holdout cannot separate models, else None.

    The holdout is thin when fewer than ``min_customers`` customers have holdout value (> 0), or when the
    bootstrap 95 % interval of the selected scorer's normalized Gini is wider than ``± max_half_width``.

    Parameters
    ----------
    actual:
        Realised holdout value per evaluation customer.
    selected_scores:
        The selected scorer's holdout predictions (same customers, same order).
    """
    actual_array = np.asarray(actual, dtype=float).ravel()
    n = actual_array.size
    buyers = int(np.count_nonzero(actual_array > 0))
    _, low, high = (
        gini_interval(actual_array, selected_scores, n_boot=n_boot, seed=seed) if buyers else (0, 0, 0)
    )
    half_width = (high - low) / 2 if math.isfinite(low) and math.isfinite(high) else math.inf
    reasons = []
    if buyers < min_customers:
        reasons.append(f"only {buyers:,} of {n:,} customers bought in it (fewer than {min_customers:,})")
    if half_width > max_half_width:
        width = (
            "cannot be estimated" if not math.isfinite(half_width) else f"is known only to ±{half_width:.2f}"
        )
        reasons.append(f"the selected scorer's normalized Gini {width} (more than ±{max_half_width:.2f})")
    if not reasons:
        return None
    return (
        "The holdout is too thin to tell models apart: "
        + " and ".join(reasons)
        + "; treat the comparison as indicative only."
    )
