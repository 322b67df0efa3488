"""Per-customer risk flags (segml.flags) and their policy thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segml.errors import ConfigError
from segml.flags import flags_per_grade, risk_flags
from segml.policy import GradePolicy, RiskFlags


def _features() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "days_late_mean": [30.0, 15.0, np.nan, 0.0],
            "overdue_amount": [0.0, 120.0, 0.0, 0.0],
            "days_late_trend": [10.0, 0.0, np.nan, -3.0],
        }
    )


def test_flags_follow_the_thresholds_and_missing_values_raise_none() -> None:
    flags = risk_flags(_features())
    assert list(flags) == ["pays late; paying later", "overdue invoices", "", ""]
    lenient = risk_flags(_features(), RiskFlags(pays_late_days=40.0, paying_later_days=12.0))
    assert list(lenient) == ["", "overdue invoices", "", ""]
    strict = risk_flags(_features(), RiskFlags(pays_late_days=10.0))
    assert list(strict)[1] == "pays late; overdue invoices"


def test_no_flag_feature_means_no_column() -> None:
    assert risk_flags(pd.DataFrame({"customer_id": ["a"], "spend_365d": [1.0]})) is None


def test_flags_per_grade_shares() -> None:
    grades = pd.DataFrame({"grade": ["A", "A", "B", "B"], "risk_flags": risk_flags(_features())})
    table = flags_per_grade(grades, ["A", "B", "N"])
    assert list(table["grade"]) == ["A", "B", "all"]  # an empty grade is left out
    a = table.set_index("grade").loc["A"]
    assert a["customers"] == 2 and a["pays late"] == 0.5 and a["overdue invoices"] == 0.5
    assert a["any flag"] == 1.0
    assert table.set_index("grade").loc["all", "any flag"] == 0.5
    assert flags_per_grade(grades.drop(columns="risk_flags"), ["A"]).empty


def test_policy_thresholds_are_validated() -> None:
    policy = GradePolicy.from_config({"risk_flags": {"pays_late_days": 30}})
    assert policy.risk_flags.pays_late_days == 30.0
    with pytest.raises(ConfigError, match="policy.risk_flags.pays_late_days"):
        GradePolicy.from_config({"risk_flags": {"pays_late_days": -1}})
    with pytest.raises(ConfigError, match="policy.risk_flags"):
        GradePolicy.from_config({"risk_flags": {"pays_lat_days": 3}})
