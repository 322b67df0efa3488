"""The in-calibration split of ``benchmarks/inner.py``: where the pseudo-calibration end falls."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def inner():
    return load_benchmark("inner")


D = dt.date


@pytest.mark.parametrize(
    ("start", "calibration_end", "holdout_end", "expected"),
    [
        # CDNOW: 272-day calibration, 273-day holdout: half the calibration period
        (D(1997, 1, 1), D(1997, 9, 30), D(1998, 6, 30), D(1997, 5, 17)),
        # Ta Feng: 60 days, 59-day holdout: half again (the split (Dec 1, Dec 31])
        (D(2000, 11, 1), D(2000, 12, 31), D(2001, 2, 28), D(2000, 12, 1)),
        # a long history: one holdout before the calibration end
        (D(2022, 1, 1), D(2025, 6, 30), D(2026, 6, 30), D(2024, 6, 30)),
    ],
)
def test_inner_cutoff(inner, start, calibration_end, holdout_end, expected):
    t_v = inner.inner_cutoff(start, calibration_end, holdout_end)
    assert t_v == expected
    assert start < t_v < calibration_end


def test_inner_cutoff_refuses_an_unordered_timeline(inner):
    with pytest.raises(ValueError, match="start < calibration_end < holdout_end"):
        inner.inner_cutoff(D(2025, 1, 1), D(2025, 6, 30), D(2025, 6, 30))
