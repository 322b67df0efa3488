"""Monitoring helpers: grade migration between two gradings and feature drift (PSI) between two cutoffs.

Aggregates only: every function returns counts or statistics, never customer rows, so their output may go
into reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from segml.errors import InputFileError

#: customers present in the later grading but not in the earlier one (row label of the migration matrix)
NOT_GRADED_BEFORE = "(not graded)"

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


def migration_matrix(before: pd.DataFrame, after: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
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
        not counted (they left the population).
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
        before[["customer_id", "grade"]], on="customer_id", how="left", suffixes=("_after", "_before")
    )
    joined["grade_before"] = joined["grade_before"].fillna(NOT_GRADED_BEFORE).astype(str)
    joined["grade_after"] = joined["grade_after"].astype(str)
    known = [str(g) for g in order]
    extra_after = sorted(set(joined["grade_after"]) - set(known))
    extra_before = sorted(set(joined["grade_before"]) - set(known) - {NOT_GRADED_BEFORE})
    columns = known + extra_after
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


__all__ = [
    "NOT_GRADED_BEFORE",
    "PSI_BANDS",
    "migration_matrix",
    "population_stability_index",
    "psi_band",
    "psi_table",
]
