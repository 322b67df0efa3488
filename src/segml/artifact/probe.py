"""Probe rows: a behavioural fingerprint of the scoring code that exported an artifact.

An artifact holds data, not code: ``segml grade`` scores with the *installed* segml. If that segml ranks,
predicts or grades differently from the one that exported the artifact (a changed percentile rule, say),
grades would silently change. Export therefore grades a few synthetic customers and stores their inputs and
outputs in ``spec/probe.json``; loading the artifact grades them again and refuses on any difference.

The probe customers are synthetic: row k takes, for every numeric feature, the k-th of 19 quantile levels
(5 %, 10 %, …, 95 %) of that feature over the training customers with purchases, so no real customer's row is
stored; one more row is a customer without purchases. Attributes are missing.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import numpy as np
import pandas as pd

from segml.scoring import GRADES_COLUMNS

#: columns of the grades compared exactly: every scoring column of ``grades.parquet``; the wording (grade names,
#: strategies, reason texts) and the cutoff are not compared
CHECKED_COLUMNS = tuple(
    column
    for column in GRADES_COLUMNS
    if column not in {"grade_name", "strategy", "as_of"} and not re.fullmatch(r"reason_\d+", column)
)
LEVELS = tuple(round(0.05 * k, 2) for k in range(1, 20))


def _plain(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def probe_features(features: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """Synthetic feature rows built from per-feature quantiles of ``features`` (see the module docstring)."""
    purchased = features[features["has_purchases"].astype(bool).to_numpy()]
    rows: dict[str, Any] = {"customer_id": [f"probe-{k:02d}" for k in range(len(LEVELS) + 1)]}
    for column in features.columns:
        if column in ("customer_id", "as_of"):
            continue
        series = features[column]
        if column == "has_purchases":
            rows[column] = [True] * len(LEVELS) + [False]
        elif pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            values = purchased[column].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            quantiles = (
                # observed values (a count stays a whole number: baseline scorers refuse fractional counts)
                np.quantile(values, LEVELS, method="lower").tolist()
                if values.size
                else [np.nan] * len(LEVELS)
            )
            rows[column] = [*quantiles, 0.0 if column not in _UNDEFINED_WITHOUT_PURCHASES else np.nan]
        else:
            rows[column] = [None] * (len(LEVELS) + 1)
    frame = pd.DataFrame(rows)
    frame.insert(1, "as_of", pd.Timestamp(as_of))
    frame["as_of"] = frame["as_of"].astype("datetime64[ns]")
    return frame[list(features.columns)]


#: features that are NaN (not 0) for a customer without purchases
_UNDEFINED_WITHOUT_PURCHASES = frozenset(
    {
        "recency_days",
        "t_days",
        "monetary_mean",
        "monetary_max",
        "interpurchase_mean_days",
        "interpurchase_std_days",
        "trend_ratio",
        "returns_rate",
        "churn_risk_ratio",
        "btyd_monetary",
    }
)


def probe_document(probe: pd.DataFrame, graded: pd.DataFrame) -> dict[str, Any]:
    """JSON document of the probe inputs and the checked outputs."""
    dtypes = {c: ("datetime" if c == "as_of" else str(probe[c].dtype)) for c in probe.columns}
    features = [
        {c: (row[c].isoformat() if c == "as_of" else _plain(row[c])) for c in probe.columns}
        for _, row in probe.iterrows()
    ]
    expected = [{c: _plain(row[c]) for c in CHECKED_COLUMNS} for _, row in graded.iterrows()]
    return {
        "format": "segml.scoring_probe",
        "format_version": 1,
        "note": "synthetic customers (per-feature quantiles of the training population), not real rows",
        "dtypes": dtypes,
        "features": features,
        "expected": expected,
    }


def read_probe(document: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(probe features, expected checked outputs) from :func:`probe_document` output."""
    dtypes = document["dtypes"]
    frame = pd.DataFrame(document["features"], columns=list(dtypes))
    for column, dtype in dtypes.items():
        if dtype == "datetime":
            frame[column] = pd.to_datetime(frame[column]).astype("datetime64[ns]")
        elif dtype == "bool":
            frame[column] = frame[column].astype(bool)
        elif dtype.startswith("float"):
            frame[column] = frame[column].astype(float)
        else:
            frame[column] = frame[column].astype(object)
    expected = pd.DataFrame(document["expected"], columns=list(CHECKED_COLUMNS))
    return frame, expected


def differences(graded: pd.DataFrame, expected: pd.DataFrame) -> list[str]:
    """Checked columns whose values differ (NaN equals NaN, floats compared exactly)."""
    changed = []
    for column in CHECKED_COLUMNS:
        got = [_plain(v) for v in graded[column].tolist()]
        want = [_plain(v) for v in expected[column].tolist()]
        if got != want:
            changed.append(column)
    return changed
