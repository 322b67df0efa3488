"""The one scoring function: features at a cutoff → the grades frame.

``segml train`` (:func:`segml.train.grade_customers`), ``segml grade`` and the MLflow pyfunc all call
:func:`grade_features`, so the grades of an experiment and of its exported artifact cannot drift apart.

Inputs are what training froze: the production potential-value model, the *fitted* grade policy (reference
quantiles and grade thresholds learned at training) and the per-feature reference medians used to word
the reasons. Every output row is a function of that customer's feature row alone, so one customer graded
on their own gets exactly the row they get in a batch of millions.

Output columns (``GRADES_COLUMNS``): ``customer_id, grade, grade_name, grade_low, grade_high, score,
predicted_value, predicted_p10, predicted_p90, value_rank, potential_rank, loyalty_rank, value_level,
potential_level, matrix_cell, strategy``, then with reasons
``reason_k, reason_k_feature, reason_k_contribution`` for k = 1..3, then ``risk_flags`` (only when the data
has payment or interaction features: :mod:`segml.flags`), then ``as_of``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from segml.errors import InputFileError
from segml.policy import GRADE_COLUMNS

if TYPE_CHECKING:  # pragma: no cover
    from segml.config import FeatureConfig
    from segml.models.potential import PotentialValueModel
    from segml.policy import FittedPolicy

#: number of reason codes per customer
TOP_REASONS = 3

#: the forecast interval and the grade range it spans (:func:`grade_range`)
INTERVAL_COLUMNS = ("predicted_p10", "predicted_p90", "grade_low", "grade_high")

#: columns before the reasons, in order: the policy's grade columns with the predicted value and its interval
#: after the score, the grade range after the grade name
BASE_COLUMNS = (
    *GRADE_COLUMNS[: GRADE_COLUMNS.index("grade_name") + 1],
    "grade_low",
    "grade_high",
    *GRADE_COLUMNS[GRADE_COLUMNS.index("grade_name") + 1 : GRADE_COLUMNS.index("score") + 1],
    "predicted_value",
    "predicted_p10",
    "predicted_p90",
    *GRADE_COLUMNS[GRADE_COLUMNS.index("score") + 1 :],
)
REASON_COLUMNS = tuple(
    column
    for k in range(1, TOP_REASONS + 1)
    for column in (f"reason_{k}", f"reason_{k}_feature", f"reason_{k}_contribution")
)
#: every column of ``grades.parquet`` in order
GRADES_COLUMNS = (*BASE_COLUMNS, *REASON_COLUMNS, "as_of")


def feature_as_of(features: pd.DataFrame) -> dt.date:
    """The single cutoff (``as_of``) of a feature table.

    Raises
    ------
    InputFileError
        The column is missing, empty, or holds more than one date.
    """
    if "as_of" not in features.columns:
        raise InputFileError(f"features: missing column 'as_of' ({len(features):,} rows)")
    values = features["as_of"].to_numpy()
    if values.dtype.kind == "M" and len(values):
        # fast path: one naive timestamp in every row (one integer pass, no per-row date parsing)
        ticks = values.view(np.int64)
        if ticks[0] != np.iinfo(np.int64).min and (ticks == ticks[0]).all():
            return pd.Timestamp(values[0]).date()
    days = pd.to_datetime(features["as_of"]).dt.normalize().dropna().unique()
    if len(days) != 1:
        raise InputFileError(
            f"features: column 'as_of' must hold one date, found {len(days)} distinct value(s) "
            f"in {len(features):,} rows"
        )
    return pd.Timestamp(days[0]).date()


def grade_features(
    features: pd.DataFrame,
    model: PotentialValueModel,
    policy: FittedPolicy,
    reference: Mapping[str, float | None] | None,
    *,
    as_of: dt.date | pd.Timestamp | None = None,
    reasons: bool = True,
    feature_config: FeatureConfig | None = None,
    potential: np.ndarray | None = None,
    contributions: pd.DataFrame | None = None,
    scorer: Any | None = None,
) -> pd.DataFrame:
    """Grade customers from their features at one cutoff.

    Parameters
    ----------
    features:
        Output of :func:`segml.features.build_features` (any subset of rows, any batch size).
    model:
        The fitted production :class:`~segml.models.potential.PotentialValueModel`.
    policy:
        The fitted grade policy (frozen references and thresholds).
    reference:
        Per-feature medians frozen at training (:func:`segml.explain.reference_stats`), quoted in the
        reasons. Required when ``reasons`` is True.
    as_of:
        Cutoff written to the ``as_of`` column; default the (single) ``as_of`` of ``features``.
    reasons:
        Add the top-3 reason codes (LightGBM ``pred_contrib``). False skips the contributions entirely.
    feature_config:
        Feature settings the reasons are worded with (active months, trend window).
    potential, contributions:
        Precomputed ``model.predict(features)`` / ``model.predict_contrib(features)`` (to avoid computing
        them twice); computed here when None.
    scorer:
        The fallback scorer chosen inside calibration when the potential model did not win there (a fitted
        baseline with ``predict_value``): it drives the grade score, the potential forecast stays the matrix's
        growth axis and the reasons. None: the potential model drives everything.

    Returns
    -------
    pandas.DataFrame
        One row per input row, same order, columns :data:`GRADES_COLUMNS` (without the reason columns when
        ``reasons`` is False).
    """
    from segml.explain import reason_codes
    from segml.flags import risk_flags

    cutoff = feature_as_of(features) if as_of is None else pd.Timestamp(as_of).date()
    predicted = model.predict(features) if potential is None else np.asarray(potential, dtype=float)
    if scorer is None:
        graded = policy.grade_columns(features, predicted)
    else:
        graded = policy.grade_columns(features, scorer.predict_value(features), axis_potential=predicted)
    money = predicted
    if scorer is not None and getattr(scorer, "predicts_money", False):
        money = np.asarray(scorer.predict_value(features), dtype=float)
    low, high, grade_low, grade_high = grade_range(features, model, policy, predicted, scorer)
    columns: dict[str, Any] = {}
    for name, values in graded.items():
        columns[name] = values
        if name == "grade_name":
            columns["grade_low"] = grade_low
            columns["grade_high"] = grade_high
        if name == "score":
            columns["predicted_value"] = money.copy() if potential is not None else money
            columns["predicted_p10"] = low
            columns["predicted_p90"] = high
    if reasons:
        if reference is None:
            raise InputFileError("reference statistics are needed to word reason codes (reasons=True)")
        contrib = model.predict_contrib(features) if contributions is None else contributions
        codes = reason_codes(
            contrib, features, dict(reference), top_k=TOP_REASONS, feature_config=feature_config
        )
        if len(codes) != len(features):
            raise InputFileError(
                f"reasons: {len(codes)} rows for a feature table of {len(features)} rows (aligned by position)"
            )
        for name in REASON_COLUMNS:
            columns[name] = codes[name].to_numpy()
    flags = risk_flags(features, policy.policy.risk_flags)
    if flags is not None:  # only when the data has payment or interaction features (segml.flags)
        columns["risk_flags"] = flags
    # one frame over the fresh arrays (no per-column inserts, no consolidation copies)
    graded = pd.DataFrame(columns, copy=False)
    graded["as_of"] = pd.Timestamp(cutoff)
    return graded


def grade_range(
    features: pd.DataFrame,
    model: PotentialValueModel,
    policy: FittedPolicy,
    predicted: np.ndarray,
    scorer: Any | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The forecast's P10 / P90 and the grades the customer would get at them.

    ``grade_low`` is the grade with the potential forecast at its P10 (value and loyalty unchanged),
    ``grade_high`` the one at its P90: a customer with ``grade_low == grade_high`` holds the grade whatever the
    next period brings within its 80 % interval; ``C`` with range ``E``–``A`` is a guess. Empty (None / NaN)
    for customers without purchases, for a model without intervals, and when a fallback scorer drives the
    grades (the potential forecast then does not move them); the P10 / P90 are also empty when that scorer
    supplies the money forecast.
    """
    n = len(features)
    empty_grade = np.full(n, None, dtype=object)
    predict_interval = getattr(model, "predict_interval", None)
    if predict_interval is None or (scorer is not None and getattr(scorer, "predicts_money", False)):
        return np.full(n, np.nan), np.full(n, np.nan), empty_grade, empty_grade.copy()
    low, high = predict_interval(features, point=predicted)
    if scorer is not None:
        return low, high, empty_grade, empty_grade.copy()
    known = np.isfinite(low) & np.isfinite(high)
    grade_low, grade_high = empty_grade, empty_grade.copy()
    if known.any():
        # a row's grade depends on its own row only, so the bounds are graded in place of the point forecast
        at_low, at_high = policy.grade_codes_at(
            features, [np.where(known, low, predicted), np.where(known, high, predicted)]
        )
        grade_low[known] = at_low[known]
        grade_high[known] = at_high[known]
    return low, high, grade_low, grade_high


def grade_range_table(grades: pd.DataFrame, order: list[str]) -> list[dict[str, Any]]:
    """Per grade (``order``, best first): customers with a grade range, the share whose grade holds at both
    ends of the forecast interval (``firm``), could fall at its P10 (``may_fall``) or rise at its P90
    (``may_rise``), and the P10 / point / P90 forecast totals (``revenue_p10_total``, ``revenue_total``,
    ``revenue_p90_total``). Empty when the grades carry no range."""
    if "grade_low" not in grades.columns or grades["grade_low"].isna().all():
        return []
    rank = {code: k for k, code in enumerate(order)}
    known = grades["grade_low"].notna().to_numpy() & grades["grade_high"].notna().to_numpy()
    frame = grades.loc[known, ["grade", "grade_low", "grade_high", "predicted_value"]].copy()
    frame["p10"] = grades.loc[known, "predicted_p10"].to_numpy(dtype=float)
    frame["p90"] = grades.loc[known, "predicted_p90"].to_numpy(dtype=float)
    here = frame["grade"].map(rank)
    falls = frame["grade_low"].map(rank) > here  # a later code in the order is a lower grade
    rises = frame["grade_high"].map(rank) < here
    frame["falls"], frame["rises"] = falls.to_numpy(), rises.to_numpy()
    table = []
    for code in order:
        part = frame[frame["grade"] == code]
        n = len(part)
        table.append(
            {
                "grade": code,
                "n": n,
                "firm_share": float((~part["falls"] & ~part["rises"]).mean()) if n else None,
                "may_fall_share": float(part["falls"].mean()) if n else None,
                "may_rise_share": float(part["rises"].mean()) if n else None,
                "revenue_p10_total": float(part["p10"].sum()),
                "revenue_total": float(part["predicted_value"].astype(float).sum()),
                "revenue_p90_total": float(part["p90"].sum()),
            }
        )
    return table


def grade_counts(grades: pd.DataFrame) -> dict[str, Any]:
    """Customers per grade code, sorted by code (aggregate, for summaries and logs)."""
    counts = grades["grade"].value_counts()
    return {str(code): int(counts[code]) for code in sorted(counts.index)}


__all__ = [
    "BASE_COLUMNS",
    "GRADES_COLUMNS",
    "INTERVAL_COLUMNS",
    "REASON_COLUMNS",
    "feature_as_of",
    "grade_counts",
    "grade_features",
    "grade_range",
    "grade_range_table",
]
