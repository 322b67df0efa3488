"""The backtest target of ``benchmarks/quality.py``: the shipped model's per-cutoff gains and their status."""

from __future__ import annotations

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def quality():
    return load_benchmark("quality")


def _row(cutoff, origin, model, low, high=0.02):
    return {
        "cutoff": cutoff,
        "origin": origin,
        "window_days": 90,
        "window_end": "2000-01-01",
        "overlaps_holdout": origin == "forward",
        "model": model,
        "normalized_gini": 0.7,
        "gini_diff": (low + high) / 2,
        "gini_diff_ci": [low, high],
        "gini_diff_vs": "rfm",
    }


def test_backtest_rows_keep_the_potential_model_only(quality):
    rows = [_row("1997-06-30", "forward", "rfm", -0.1), _row("1997-06-30", "forward", "potential", 0.01)]
    kept = quality._backtest_rows(rows)
    assert [r["gini_diff_ci"] for r in kept] == [[0.01, 0.02]]
    assert set(kept[0]) == {
        "cutoff", "origin", "window_days", "window_end", "overlaps_holdout", "normalized_gini",
        "gini_diff", "gini_diff_ci", "gini_diff_vs",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("lows", "met"),
    [((0.001, 0.004), True), ((0.001, -0.002), False)],
)
def test_backtest_target_needs_every_forward_cutoff_above_zero(quality, lows, met):
    cutoffs = ["1997-06-30", "1997-07-31"]
    rows = [_row(c, "forward", "potential", low) for c, low in zip(cutoffs, lows, strict=True)]
    rows.append(_row("1997-06-30", "rolling", "potential", -0.5))  # rolling windows are reported, not judged
    target = quality._backtest_target({"backtest": quality._backtest_rows(rows)}, cutoffs)
    assert target["met"] is met
    assert list(target["value"]) == cutoffs


def test_backtest_target_missing_cutoff_is_not_met_and_no_backtest_is_not_measured(quality):
    rows = quality._backtest_rows([_row("1997-06-30", "forward", "potential", 0.01)])
    missing = quality._backtest_target({"backtest": rows}, ["1997-06-30", "1997-07-31"])
    assert missing["met"] is False and missing["value"]["1997-07-31"] is None
    assert quality._backtest_target({}, ["1997-06-30"])["met"] is None


def test_backtest_cutoffs_read_the_experiment(quality):
    assert quality._backtest_cutoffs("cdnow") == ["1997-06-30", "1997-07-31", "1997-08-31", "1997-09-30"]
