"""Per-customer risk flags: payment and interaction signals a sales or credit team acts on.

A grade says how much a customer is worth; a flag says what to watch. Each flag reads one feature of the
customer's own row (so one customer flagged alone gets the flag they get in a batch) and is raised when the
feature is above the threshold of ``policy.risk_flags`` (:class:`segml.policy.RiskFlags`):

========================  ======================  =================================================
flag                      feature                 default: raised when
========================  ======================  =================================================
``pays late``             ``days_late_mean``      invoices paid more than 15 days late on average
``overdue invoices``      ``overdue_amount``      any unpaid invoice past its due date at the cutoff
``paying later``          ``days_late_trend``     recent invoices paid over 7 days later than before
``recent complaints``     ``complaints_90d``      any complaint in the last 90 days
``complaints up``         ``complaints_trend``    more complaints in the recent period than before
========================  ======================  =================================================

Flags whose feature the data does not have are not computed; with none of the features (no ``data.invoices``
and no ``data.interactions``), :func:`risk_flags` returns None and the grades have no ``risk_flags`` column.
The column holds the raised flags' labels joined by ``"; "`` (empty when none), in the order above.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from segml.policy import RiskFlags

#: separator of the labels in the ``risk_flags`` column
SEPARATOR = "; "


@dataclass(frozen=True)
class FlagRule:
    """One flag: raised when ``feature`` is above ``policy.risk_flags.<setting>``."""

    label: str
    feature: str
    setting: str
    meaning: str


RULES: tuple[FlagRule, ...] = (
    FlagRule("pays late", "days_late_mean", "pays_late_days", "pays invoices late on average"),
    FlagRule(
        "overdue invoices", "overdue_amount", "overdue_amount", "has unpaid invoices past their due date"
    ),
    FlagRule(
        "paying later", "days_late_trend", "paying_later_days", "pays recent invoices later than before"
    ),
    FlagRule("recent complaints", "complaints_90d", "complaints_90d", "complained in the last 90 days"),
    FlagRule("complaints up", "complaints_trend", "complaints_trend", "complains more than before"),
)


def available_rules(columns: Sequence[str]) -> list[FlagRule]:
    """The flags a feature table with these columns can raise."""
    present = set(columns)
    return [rule for rule in RULES if rule.feature in present]


def flag_matrix(features: pd.DataFrame, settings: RiskFlags | None = None) -> pd.DataFrame:
    """One boolean column per available flag (named by its label), aligned with ``features``; a missing
    feature value raises no flag."""
    settings = settings or RiskFlags()
    out = {}
    for rule in available_rules(features.columns):
        values = pd.to_numeric(features[rule.feature], errors="coerce").to_numpy(dtype=float)
        threshold = float(getattr(settings, rule.setting))
        with np.errstate(invalid="ignore"):
            out[rule.label] = np.nan_to_num(values, nan=-np.inf) > threshold
    return pd.DataFrame(out, index=features.index)


def risk_flags(features: pd.DataFrame, settings: RiskFlags | None = None) -> np.ndarray | None:
    """The ``risk_flags`` column: raised labels joined by ``"; "`` per row (``""`` when none), or None when
    the table has none of the flag features."""
    matrix = flag_matrix(features, settings)
    if matrix.shape[1] == 0:
        return None
    labels = np.asarray(matrix.columns, dtype=object)
    raised = matrix.to_numpy(dtype=bool)
    return np.array([SEPARATOR.join(labels[row]) for row in raised], dtype=object)


def flags_per_grade(grades: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Share of each grade's customers carrying each flag (rows: grades in ``order``, then ``all``); empty when
    the grades have no ``risk_flags`` column. ``customers`` is the grade's size."""
    if "risk_flags" not in grades.columns or grades.empty:
        return pd.DataFrame()
    text = grades["risk_flags"].fillna("").astype(str)
    seen = [rule.label for rule in RULES if text.str.contains(rule.label, regex=False).any()]
    labels = [rule.label for rule in RULES if rule.label in seen]
    split = text.str.split(SEPARATOR, regex=False)
    rows = []
    for code in [*order, "all"]:
        mask = np.ones(len(grades), dtype=bool) if code == "all" else (grades["grade"] == code).to_numpy()
        if not mask.any():
            continue
        chosen = split[mask]
        row = {"grade": code, "customers": int(mask.sum())}
        for label in labels:
            row[label] = float(chosen.map(lambda items, label=label: label in items).mean())
        row["any flag"] = float((text[mask] != "").mean())
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = [
    "RULES",
    "SEPARATOR",
    "FlagRule",
    "available_rules",
    "flag_matrix",
    "flags_per_grade",
    "risk_flags",
]
