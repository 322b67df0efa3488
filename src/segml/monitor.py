"""Monitoring helpers: grade migration between two gradings, drift (PSI) against a reference, the
training reference stored in an artifact, monitor cutoffs and alerts.

Aggregates only: every function returns counts or statistics, never customer rows, so their output may go
into reports.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from segml.errors import ConfigError, InputFileError

#: customers present in the later grading but not in the earlier one (row label of the migration matrix)
NOT_GRADED_BEFORE = "(not graded)"
#: customers present in the earlier grading but not in the later one (column label, ``include_left``)
NOT_GRADED_NOW = "(not graded now)"

#: where an artifact keeps the training reference (decile edges and shares of the score and model features)
TRAINING_REFERENCE = "monitoring/training_reference.json"
TRAINING_REFERENCE_FORMAT = "segml.training_reference"
TRAINING_REFERENCE_VERSION = 1
#: bucket of categorical values not seen at training
OTHER_LEVEL = "(other)"
MISSING_LEVEL = "(missing)"

#: PSI bands: below 0.1 stable, below 0.25 moderate shift, above that a major shift (industry convention)
PSI_BANDS = ((0.1, "stable"), (0.25, "moderate shift"), (float("inf"), "major shift"))

_PSI_FLOOR = 1e-4


def population_stability_index(expected: Sequence[float], actual: Sequence[float], bins: int = 10) -> float:
    """PSI of ``actual`` against ``expected``: ``sum((a - e) * ln(a / e))`` over quantile bins of ``expected``.

    Bin edges are the deciles (``bins`` quantiles) of ``expected``; duplicate edges (a mass at one value,
    e.g. zero spend) are merged, so a discrete feature gets one bin per distinct value. Shares below 1e-4
    are floored so an empty bin gives a large, finite contribution. Missing values are dropped.

    Parameters
    ----------
    expected:
        Reference values (e.g. a feature at ``calibration_end``).
    actual:
        Values to compare (the same feature at ``data_end``).
    bins:
        Number of quantile bins of the reference.

    Returns
    -------
    float
        PSI ≥ 0 (0 = identical binned distributions); NaN if either side has no finite value.
    """
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    e, a = e[np.isfinite(e)], a[np.isfinite(a)]
    if e.size == 0 or a.size == 0:
        return float("nan")
    inner = np.unique(np.quantile(e, np.linspace(0, 1, bins + 1)[1:-1]))
    # right-closed bins: a value equal to an edge falls into the bin that ends at it
    e_share = np.bincount(np.searchsorted(inner, e, side="left"), minlength=inner.size + 1) / e.size
    a_share = np.bincount(np.searchsorted(inner, a, side="left"), minlength=inner.size + 1) / a.size
    e_share = np.clip(e_share, _PSI_FLOOR, None)
    a_share = np.clip(a_share, _PSI_FLOOR, None)
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))


def psi_band(psi: float) -> str:
    """``stable`` / ``moderate shift`` / ``major shift`` for a PSI value (``n/a`` for NaN)."""
    if not np.isfinite(psi):
        return "n/a"
    return next(label for limit, label in PSI_BANDS if psi < limit)


def psi_table(
    before: pd.DataFrame, after: pd.DataFrame, columns: Sequence[str], bins: int = 10
) -> pd.DataFrame:
    """PSI per feature between two feature tables, largest shift first.

    Parameters
    ----------
    before, after:
        Feature tables (e.g. ``features.build_features`` at ``calibration_end`` and at ``data_end``).
    columns:
        Numeric feature columns to compare.
    bins:
        Quantile bins of ``before``.

    Returns
    -------
    pd.DataFrame
        ``feature, psi, band, mean_before, mean_after`` sorted by ``psi`` descending (ties by name).
    """
    missing = [c for c in columns if c not in before.columns or c not in after.columns]
    if missing:
        raise InputFileError(f"psi_table: feature column(s) {missing} missing from one of the two tables")
    rows = []
    for column in columns:
        b = pd.to_numeric(before[column], errors="coerce").to_numpy(dtype=float)
        a = pd.to_numeric(after[column], errors="coerce").to_numpy(dtype=float)
        psi = population_stability_index(b, a, bins=bins)
        rows.append(
            {
                "feature": column,
                "psi": psi,
                "band": psi_band(psi),
                "mean_before": float(np.nanmean(b)) if np.isfinite(b).any() else float("nan"),
                "mean_after": float(np.nanmean(a)) if np.isfinite(a).any() else float("nan"),
            }
        )
    table = pd.DataFrame(rows, columns=["feature", "psi", "band", "mean_before", "mean_after"])
    return table.sort_values(["psi", "feature"], ascending=[False, True], kind="stable").reset_index(
        drop=True
    )


def migration_matrix(
    before: pd.DataFrame, after: pd.DataFrame, order: Sequence[str], *, include_left: bool = False
) -> pd.DataFrame:
    """Customer counts moving from each grade of ``before`` to each grade of ``after``.

    Parameters
    ----------
    before, after:
        Gradings with ``customer_id`` and ``grade`` columns (one row per customer).
    order:
        Grade codes, best first; grades found in the data but not in ``order`` are appended sorted.

    Returns
    -------
    pd.DataFrame
        Rows = grade before (plus :data:`NOT_GRADED_BEFORE` for customers only in ``after``), columns = grade
        after; index named ``grade before``, columns named ``grade after``. Customers only in ``before`` are
        not counted (they left the population), unless ``include_left``: then they form the column
        :data:`NOT_GRADED_NOW` and each grade's row sums to that grade's count in ``before``.
    """
    for name, frame in (("before", before), ("after", after)):
        missing = [c for c in ("customer_id", "grade") if c not in frame.columns]
        if missing:
            raise InputFileError(f"migration_matrix: {name} lacks column(s) {missing}")
        if frame["customer_id"].duplicated().any():
            raise InputFileError(
                f"migration_matrix: {name} has {int(frame['customer_id'].duplicated().sum())} duplicated "
                "customer ids"
            )
    joined = after[["customer_id", "grade"]].merge(
        before[["customer_id", "grade"]],
        on="customer_id",
        how="outer" if include_left else "left",
        suffixes=("_after", "_before"),
    )
    joined["grade_before"] = joined["grade_before"].fillna(NOT_GRADED_BEFORE).astype(str)
    joined["grade_after"] = joined["grade_after"].fillna(NOT_GRADED_NOW).astype(str)
    known = [str(g) for g in order]
    extra_after = sorted(set(joined["grade_after"]) - set(known) - {NOT_GRADED_NOW})
    extra_before = sorted(set(joined["grade_before"]) - set(known) - {NOT_GRADED_BEFORE})
    columns = known + extra_after + ([NOT_GRADED_NOW] if include_left else [])
    rows = (
        known
        + extra_before
        + ([NOT_GRADED_BEFORE] if (joined["grade_before"] == NOT_GRADED_BEFORE).any() else [])
    )
    counts = (
        pd.crosstab(joined["grade_before"], joined["grade_after"])
        .reindex(index=rows, columns=columns, fill_value=0)
        .astype(np.int64)
    )
    counts.index.name = "grade before"
    counts.columns.name = "grade after"
    return counts


# --------------------------------------------------------------------------------------------------------------
# The training reference (stored in an artifact by ``segml export``) and PSI against it


def _numeric_reference(values: np.ndarray, bins: int) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"kind": "numeric", "edges": [], "shares": [1.0], "n": 0, "mean": None}
    inner = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
    shares = np.bincount(np.searchsorted(inner, finite, side="left"), minlength=inner.size + 1) / finite.size
    return {
        "kind": "numeric",
        "edges": [float(e) for e in inner],
        "shares": [float(v) for v in shares],
        "n": int(finite.size),
        "mean": float(finite.mean()),
    }


def _levels(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), MISSING_LEVEL).astype(str)


def _categorical_reference(values: pd.Series) -> dict[str, Any]:
    counts = _levels(values).value_counts()
    levels = sorted(counts.index)
    total = max(int(counts.sum()), 1)
    return {
        "kind": "categorical",
        "levels": levels,
        "shares": [float(counts[level] / total) for level in levels],
        "n": int(counts.sum()),
    }


def training_reference(
    features: pd.DataFrame,
    score: Sequence[float],
    numeric: Sequence[str],
    categorical: Sequence[str] = (),
    *,
    as_of: dt.date | None = None,
    bins: int = 10,
) -> dict[str, Any]:
    """Decile edges and shares of the score and of every model feature on the training population.

    Parameters
    ----------
    features:
        Feature rows of the customers the reference describes (customers with purchases at training).
    score:
        Their composite score, aligned by position.
    numeric, categorical:
        Model feature columns (numeric: decile bins; categorical: one bin per level).
    as_of:
        Cutoff of ``features`` (recorded).
    bins:
        Quantile bins of each numeric column (duplicate edges merged, as in
        :func:`population_stability_index`).

    Returns
    -------
    dict
        ``{"format", "format_version", "as_of", "n_customers", "bins", "columns": {name: entry}}``; the score
        is the column ``score``.
    """
    columns: dict[str, Any] = {"score": _numeric_reference(np.asarray(score, dtype=float), bins)}
    for name in numeric:
        if name in features.columns:
            values = pd.to_numeric(features[name], errors="coerce").to_numpy(dtype=float)
            columns[name] = _numeric_reference(values, bins)
    for name in categorical:
        if name in features.columns:
            columns[name] = _categorical_reference(features[name])
    return {
        "format": TRAINING_REFERENCE_FORMAT,
        "format_version": TRAINING_REFERENCE_VERSION,
        "as_of": None if as_of is None else as_of.isoformat(),
        "population": "customers with purchases at the training data end",
        "n_customers": len(features),
        "bins": int(bins),
        "columns": columns,
    }


def check_training_reference(document: Any, where: str) -> dict[str, Any]:
    """Validate a training-reference document (raise :class:`InputFileError` naming ``where``)."""
    if not isinstance(document, dict) or document.get("format") != TRAINING_REFERENCE_FORMAT:
        raise InputFileError(f"{where}: not a {TRAINING_REFERENCE_FORMAT} document")
    if document.get("format_version") != TRAINING_REFERENCE_VERSION:
        raise InputFileError(
            f"{where}: format_version {document.get('format_version')!r} is not supported "
            f"(this segml reads version {TRAINING_REFERENCE_VERSION})"
        )
    columns = document.get("columns")
    if not isinstance(columns, dict) or "score" not in columns:
        raise InputFileError(f"{where}: no 'columns.score' entry")
    return document


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.clip(expected, _PSI_FLOOR, None)
    a = np.clip(actual, _PSI_FLOOR, None)
    return float(np.sum((a - e) * np.log(a / e)))


def reference_shares(entry: Mapping[str, Any], values: Any) -> np.ndarray | None:
    """Shares of ``values`` in the bins of one reference entry (None when no value falls anywhere)."""
    if entry["kind"] == "categorical":
        levels = list(entry["levels"])
        observed = _levels(pd.Series(values))
        index = {level: i for i, level in enumerate(levels)}
        positions = observed.map(index).fillna(len(levels)).to_numpy(dtype=np.int64)
        if positions.size == 0:
            return None
        return np.bincount(positions, minlength=len(levels) + 1) / positions.size
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return None
    inner = np.asarray(entry["edges"], dtype=float)
    return np.bincount(np.searchsorted(inner, array, side="left"), minlength=inner.size + 1) / array.size


def reference_psi(entry: Mapping[str, Any], values: Any) -> float:
    """PSI of ``values`` against one training-reference entry (NaN when either side is empty).

    Categorical values not seen at training fall in one extra bin whose training share is 0 (floored).
    """
    if int(entry.get("n") or 0) == 0:
        return float("nan")
    actual = reference_shares(entry, values)
    if actual is None:
        return float("nan")
    expected = np.asarray(entry["shares"], dtype=float)
    if entry["kind"] == "categorical":
        expected = np.append(expected, 0.0)
    return _psi(expected, actual)


def psi_against_reference(
    reference: Mapping[str, Any], features: pd.DataFrame, score: Sequence[float]
) -> pd.DataFrame:
    """PSI of the score and of every referenced feature, the score first, then features by PSI descending.

    Returns
    -------
    pd.DataFrame
        ``feature, kind, psi, band, mean_reference, mean_now`` (means for numeric columns only).
    """
    rows = []
    score_array = np.asarray(score, dtype=float)
    for name, entry in reference["columns"].items():
        if name == "score":
            values: Any = score_array
        elif name in features.columns:
            values = features[name]
        else:
            raise InputFileError(
                f"features: column '{name}' of the training reference is missing ({len(features):,} rows)"
            )
        psi = reference_psi(entry, values)
        mean_now = None
        if entry["kind"] == "numeric":
            numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
            numbers = numbers[np.isfinite(numbers)]
            mean_now = float(numbers.mean()) if numbers.size else None
        rows.append(
            {
                "feature": name,
                "kind": entry["kind"],
                "psi": psi,
                "band": psi_band(psi),
                "mean_reference": entry.get("mean"),
                "mean_now": mean_now,
            }
        )
    table = pd.DataFrame(rows, columns=["feature", "kind", "psi", "band", "mean_reference", "mean_now"])
    is_score = table["feature"] == "score"
    rest = table[~is_score].sort_values(["psi", "feature"], ascending=[False, True], kind="stable")
    return pd.concat([table[is_score], rest], ignore_index=True)


# --------------------------------------------------------------------------------------------------------------
# Monitor cutoffs

_EVERY = re.compile(r"^\s*([1-9]\d*)\s*([DWMQY])\s*$", re.IGNORECASE)


def parse_every(text: str) -> tuple[int, str]:
    """``"1M"`` → ``(1, "M")``: a positive count of days (D), weeks (W), months (M), quarters (Q) or years (Y).

    Raises
    ------
    ConfigError
        Anything else, with the accepted forms.
    """
    match = _EVERY.match(str(text))
    if not match:
        raise ConfigError(
            f"--every {text!r}: expected a period like 1M, 3M, 1Q, 2W, 7D or 1Y (a positive count and a unit "
            "D/W/M/Q/Y)"
        )
    return int(match.group(1)), match.group(2).upper()


def _is_month_end(day: dt.date) -> bool:
    return (day + dt.timedelta(days=1)).day == 1


def _step(day: dt.date, count: int, unit: str, k: int, month_end: bool) -> dt.date:
    if unit == "D":
        return day + dt.timedelta(days=count * k)
    if unit == "W":
        return day + dt.timedelta(weeks=count * k)
    months = count * k * {"M": 1, "Q": 3, "Y": 12}[unit]
    moved = (pd.Timestamp(day) + pd.DateOffset(months=months)).date()
    if month_end:
        moved = (pd.Timestamp(moved) + pd.offsets.MonthEnd(0)).date()
    return moved


def monitor_cutoffs(start: dt.date, end: dt.date, every: str) -> list[dt.date]:
    """Cutoffs ``start, start + every, …`` up to ``end`` (inclusive); month ends stay month ends.

    Raises
    ------
    ConfigError
        ``end`` before ``start`` or a bad ``every``.
    """
    count, unit = parse_every(every)
    if end < start:
        raise ConfigError(f"--to {end} is before --from {start}")
    month_end = unit in "MQY" and _is_month_end(start)
    cutoffs = []
    k = 0
    while True:
        day = _step(start, count, unit, k, month_end)
        if day > end:
            break
        cutoffs.append(day)
        k += 1
    return cutoffs


def parse_as_of(text: str) -> list[dt.date]:
    """``"1997-10-31,1997-11-30"`` → sorted distinct dates (ConfigError naming a bad one)."""
    from segml.config import parse_date

    days = [parse_date(part.strip(), "--as-of") for part in str(text).split(",") if part.strip()]
    if not days:
        raise ConfigError("--as-of: give at least one date YYYY-MM-DD (comma-separated for several)")
    return sorted(set(days))


# --------------------------------------------------------------------------------------------------------------
# Movement between two gradings and alerts


def movement(before: pd.DataFrame, after: pd.DataFrame, order: Sequence[str]) -> dict[str, Any]:
    """Update rate, upgrades and downgrades among customers graded in both (``grade`` columns).

    ``order`` lists grade codes best first (the new-customer grade last); a move towards the front is an
    upgrade. The update rate is the share of customers in both gradings whose grade changed.
    """
    rank = {str(code): i for i, code in enumerate(order)}
    both = before[["customer_id", "grade"]].merge(
        after[["customer_id", "grade"]], on="customer_id", suffixes=("_before", "_after")
    )
    step = both["grade_after"].astype(str).map(rank) - both["grade_before"].astype(str).map(rank)
    n = len(both)
    changed = int((step != 0).sum())
    return {
        "customers_in_both": n,
        "changed": changed,
        "update_rate": changed / n if n else None,
        "upgrades": int((step < 0).sum()),
        "downgrades": int((step > 0).sum()),
    }


def alerts(steps: Sequence[Mapping[str, Any]], settings: Any) -> list[dict[str, Any]]:
    """Alerts of monitor steps against the ``monitor:`` thresholds (a value strictly above its threshold).

    Kinds: ``score_psi`` (``monitor.score_psi_threshold``), ``feature_psi`` (``monitor.psi_threshold``, one
    alert per feature, with a ``feature`` key), ``update_rate`` (``monitor.update_rate_threshold``, on the grades
    in use, i.e. after hysteresis), ``gini_drop`` (training Gini minus realised Gini,
    ``monitor.gini_drop_threshold``) and ``flagged_top_rise`` (the rise since the previous step of the share of
    the two best grades' customers carrying a risk flag, ``monitor.flag_rise_threshold``; only with payment or
    contact data, with a ``share`` key: the share now).

    Returns
    -------
    list of dict
        ``{"step", "kind", "value", "threshold"}`` (plus ``feature``), in step order.
    """
    found: list[dict[str, Any]] = []
    previous: Mapping[str, Any] | None = None

    def add(step: str, kind: str, value: Any, threshold: float, **extra: Any) -> None:
        if value is not None and np.isfinite(value) and value > threshold:
            found.append({"step": step, "kind": kind, "value": float(value), "threshold": threshold, **extra})

    for step in steps:
        cutoff = str(step["as_of"])
        for row in step.get("psi", []):
            if row["feature"] == "score":
                add(cutoff, "score_psi", row["psi"], settings.score_psi_threshold)
        for row in step.get("psi", []):
            if row["feature"] != "score":
                add(cutoff, "feature_psi", row["psi"], settings.psi_threshold, feature=row["feature"])
        add(
            cutoff,
            "update_rate",
            (step.get("movement") or {}).get("update_rate"),
            settings.update_rate_threshold,
        )
        add(cutoff, "gini_drop", (step.get("realised") or {}).get("gini_drop"), settings.gini_drop_threshold)
        before = previous.get("flagged_top_share") if previous is not None else None
        now = step.get("flagged_top_share")
        if before is not None and now is not None:
            add(cutoff, "flagged_top_rise", now - before, settings.flag_rise_threshold, share=now)
        previous = step
    return found


__all__ = [
    "MISSING_LEVEL",
    "NOT_GRADED_BEFORE",
    "NOT_GRADED_NOW",
    "OTHER_LEVEL",
    "PSI_BANDS",
    "TRAINING_REFERENCE",
    "alerts",
    "check_training_reference",
    "migration_matrix",
    "monitor_cutoffs",
    "movement",
    "parse_as_of",
    "parse_every",
    "population_stability_index",
    "psi_against_reference",
    "psi_band",
    "psi_table",
    "reference_psi",
    "reference_shares",
    "training_reference",
]
