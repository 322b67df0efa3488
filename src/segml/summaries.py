"""Aggregates for the stakeholder reports (never customer rows): monthly activity, top reasons per grade,
resources and return per grade."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def monthly_activity(transactions_path: Path) -> Any:
    """Net spend, rows and distinct customers per calendar month of a clean transactions parquet.

    Returns
    -------
    pandas.DataFrame
        ``month`` (first day), ``spend``, ``transactions``, ``customers``, sorted by month.
    """
    import duckdb

    con = duckdb.connect()
    try:
        frame = con.execute(
            "SELECT CAST(date_trunc('month', timestamp) AS DATE) AS month, SUM(amount) AS spend, "
            "COUNT(*) AS transactions, COUNT(DISTINCT customer_id) AS customers "
            "FROM read_parquet(?) GROUP BY 1 ORDER BY 1",
            [str(transactions_path)],
        ).df()
    finally:
        con.close()
    return frame


def top_reasons_per_grade(grades: Any, order: Sequence[str] | None = None, top: int = 3) -> Any:
    """The most frequent first reason per grade: which feature most often decides a customer's value.

    Parameters
    ----------
    grades:
        ``grades.parquet`` rows (``grade``, ``grade_name``, ``reason_1_feature``, ``reason_1_contribution``).
    order:
        Grade codes in display order (default: sorted).
    top:
        Reasons per grade.

    Returns
    -------
    pandas.DataFrame
        ``grade, grade_name, rank, feature, meaning, share_of_grade, effect`` where ``effect`` says whether the
        reason mostly raises or lowers predicted value. Aggregates only.
    """
    import pandas as pd

    from segml.features import describe_feature

    rows = []
    present = [
        g for g in (order or sorted(grades["grade"].dropna().unique())) if (grades["grade"] == g).any()
    ]
    for code in present:
        part = grades[(grades["grade"] == code) & grades["reason_1_feature"].notna()]
        if part.empty:
            continue
        counts = part.groupby("reason_1_feature")["reason_1_contribution"].agg(["size", "mean"])
        counts = counts.sort_values("size", ascending=False, kind="stable").head(top)
        for rank, (feature, stats) in enumerate(counts.iterrows(), start=1):
            rows.append(
                {
                    "grade": code,
                    "grade_name": str(part["grade_name"].iloc[0]),
                    "rank": rank,
                    "feature": str(feature),
                    "meaning": describe_feature(str(feature)),
                    "share_of_grade": float(stats["size"]) / len(part),
                    "effect": "raises value" if stats["mean"] > 0 else "lowers value",
                }
            )
    return pd.DataFrame(
        rows, columns=["grade", "grade_name", "rank", "feature", "meaning", "share_of_grade", "effect"]
    )


def resource_table(summary: Any) -> Any:
    """Service cost against expected value per grade (from :func:`segml.policy.grade_summary` with predicted
    value as future value and the policy's ``cost_per_customer``).

    Returns
    -------
    pandas.DataFrame
        ``grade, grade_name, n, cost_per_customer, cost_total, expected_value_total, expected_value_mean,
        value_per_cost`` (expected value over the forecast horizon ÷ service cost), ``net_value``.
    """
    import numpy as np
    import pandas as pd

    table = pd.DataFrame(
        {
            "grade": summary["grade"],
            "grade_name": summary["grade_name"],
            "n": summary["n"],
            "cost_per_customer": summary.get("cost_per_customer", np.nan),
            "cost_total": summary.get("cost_total", np.nan),
            "expected_value_total": summary.get("future_value_total", np.nan),
            "expected_value_mean": summary.get("future_value_mean", np.nan),
        }
    )
    cost = table["cost_total"].where(table["cost_total"] > 0)
    table["value_per_cost"] = table["expected_value_total"] / cost
    table["net_value"] = table["expected_value_total"] - table["cost_total"]
    return table
