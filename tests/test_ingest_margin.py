"""The ``cost`` / ``margin`` roles: clean transactions carry ``margin`` (amount - cost, or the mapped margin),
returns net their margin as they net their amount, a bad cost is quarantined like a bad amount."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from segml.config import CleaningRules, TransactionSource
from segml.errors import ConfigError
from segml.ingest import ingest_frames
from segml.schema import CLEAN_TRANSACTION_COLUMNS, clean_transaction_columns

TODAY = dt.date(2025, 1, 1)
BASE = {"customer_id": "c", "timestamp": "t", "amount": "amt"}


def _frame(**extra: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "c": ["a", "a", "b", "b", "c"],
            "t": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"],
            "amt": ["10", "-5", "8", "3", "4"],
            **extra,
        }
    )


def _ingest(frame: pd.DataFrame, columns: dict[str, str], rules: CleaningRules | None = None):
    source = TransactionSource(path="tx.csv", columns={**BASE, **columns})
    return ingest_frames([frame], [source], rules, today=TODAY)


def test_cost_gives_margin_after_amount_and_returns_net() -> None:
    result = _ingest(_frame(k=["6", "3", "5", "4", "1"]), {"cost": "k"})
    clean = result.clean
    assert list(clean.columns) == list(clean_transaction_columns(True))
    assert list(clean.columns).index("margin") == list(clean.columns).index("amount") + 1
    # sale 10 - 6; a return of 5 that cost 3 reverses a margin of 2; a line sold below cost stays negative
    assert clean["margin"].tolist() == [4.0, -2.0, 3.0, -1.0, 3.0]
    assert clean["amount"].tolist() == [10.0, -5.0, 8.0, 3.0, 4.0]
    report = result.report
    assert report["margin"] == {"margin_total_kept": 7.0, "returns_margin": -2.0, "negative_margin_lines": 1}
    assert report["rows_in"] == report["rows_kept"] + report["rows_quarantined"]


def test_mapped_margin_follows_the_amount_sign_of_returns() -> None:
    # a cancelled order line recorded with positive amount and margin: both turn negative; a return already
    # recorded negative keeps the file's margin (here a loss-making line given back: margin +1)
    frame = _frame(m=["4", "1", "3", "-1", "2"], o=["o1", "o2", "Co3", "o4", "o5"])
    source = TransactionSource(
        path="tx.csv", columns={**BASE, "margin": "m", "order_id": "o"}, cancellation_prefix="C"
    )
    result = ingest_frames([frame], [source], today=TODAY).clean
    assert result["amount"].tolist() == [10.0, -5.0, -8.0, 3.0, 4.0]
    assert result["margin"].tolist() == [4.0, 1.0, -3.0, -1.0, 2.0]


def test_without_cost_the_schema_is_unchanged() -> None:
    clean = _ingest(_frame(), {}).clean
    assert list(clean.columns) == list(CLEAN_TRANSACTION_COLUMNS)
    assert "margin" not in _ingest(_frame(), {}).report


def test_bad_cost_is_quarantined_as_a_bad_number_and_every_row_counted() -> None:
    result = _ingest(_frame(k=["6", "x", "5", "inf", "1"]), {"cost": "k"})
    assert result.quarantine["reason"].tolist() == ["non_numeric_amount", "non_numeric_amount"]
    assert result.quarantine["source_row"].tolist() == [2, 4]
    report = result.report
    assert report["by_reason"] == {"non_numeric_amount": 2}
    assert (report["rows_in"], report["rows_kept"], report["rows_quarantined"]) == (5, 3, 2)


def test_returns_quarantined_take_their_margin_along() -> None:
    result = _ingest(_frame(k=["6", "3", "5", "4", "1"]), {"cost": "k"}, CleaningRules(returns="quarantine"))
    assert result.clean["margin"].tolist() == [4.0, 3.0, -1.0, 3.0]
    assert result.report["margin"]["returns_margin"] == 0.0


def test_cost_and_margin_together_is_a_config_error() -> None:
    with pytest.raises(
        ConfigError, match=r"data\.transactions\.0\.columns: map 'cost' or 'margin', not both"
    ):
        _ingest(_frame(k=["1"] * 5), {"cost": "k", "margin": "k"})


def test_every_source_or_none_maps_a_cost() -> None:
    with_cost = TransactionSource(path="a.csv", columns={**BASE, "cost": "k"}, name="a")
    without = TransactionSource(path="b.csv", columns=BASE, name="b")
    frame = _frame(k=["1"] * 5)
    with pytest.raises(ConfigError, match=r"data\.transactions\.1\.columns: map 'cost' or 'margin' on every"):
        ingest_frames([frame, frame], [with_cost, without], today=TODAY)
