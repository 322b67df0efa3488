"""Choices inside calibration: the potential-axis scorer with its fallback, auto weights, thin holdouts."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from segml.config import FeatureConfig
from segml.errors import ConfigError
from segml.policy import GradePolicy, Weights
from segml.selection import (
    InnerValidation,
    gini_interval,
    inner_validation,
    inner_validation_cutoff,
    money_check,
    select_scorer,
    select_weights,
    thin_holdout_warning,
    weight_grid,
)

SPEC = FeatureConfig(windows=[30, 90, 365], trend_window=30, active_months=12, threads=1)
CALIBRATION_END = dt.date(2024, 12, 31)


def _transactions(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Customers with a steady personal purchase rate and basket size: the past predicts the future."""
    rng = np.random.default_rng(seed)
    rows = []
    days = pd.date_range("2024-01-01", "2024-12-31", freq="D")
    rate = rng.gamma(0.8, 1 / 25, n)
    basket = rng.lognormal(3.0, 0.6, n)
    for i in range(n):
        bought = rng.random(len(days)) < rate[i]
        bought[rng.integers(0, 60)] = True  # everyone buys once in the first two months
        for day in days[bought]:
            rows.append((f"c{i:04d}", day, float(basket[i] * rng.lognormal(0, 0.2))))
    return pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    return _transactions()


def test_inner_cutoff_follows_the_potential_models_rule() -> None:
    start = dt.date(2024, 1, 1)
    # a long horizon: half the span; a short one: one horizon before the end
    assert inner_validation_cutoff(start, CALIBRATION_END, 273) == dt.date(2024, 7, 1)
    assert inner_validation_cutoff(start, CALIBRATION_END, 90) == dt.date(2024, 10, 2)
    with pytest.raises(ConfigError, match="too short"):
        inner_validation_cutoff(start, start, 30)


def test_potential_model_losing_to_rfm_inside_calibration_takes_the_fallback(transactions) -> None:
    """The fixture the issue asks for: a potential model that ranks at random loses to RFM on the
    in-calibration validation, so the best baseline stands behind the potential axis, said in one sentence."""
    calls = []

    def random_potential(cutoff: dt.date, horizon: int, features: pd.DataFrame) -> np.ndarray:
        calls.append((cutoff, horizon))
        return np.random.default_rng(1).random(len(features))

    result = inner_validation(
        transactions,
        CALIBRATION_END,
        SPEC,
        None,
        90,
        random_potential,
        GradePolicy.from_config({}),
        seed=0,
        n_boot=100,
    )
    assert isinstance(result, InnerValidation)
    assert calls == [(dt.date(2024, 10, 2), 90)]  # fitted on data up to the inner cutoff only
    assert result.validation_cutoff == dt.date(2024, 10, 2) and result.validation_days == 90
    assert result.fallback is True
    assert result.selected_scorer in ("rfm", "past_spend", "btyd")
    table = {row["scorer"]: row for row in result.scorer_table}
    assert set(table) == {"potential", "rfm", "rfm_sum", "past_spend", "btyd"}
    assert not table["rfm_sum"]["candidate"] and table["rfm"]["candidate"]
    best = max(("rfm", "past_spend", "btyd"), key=lambda name: table[name]["normalized_gini"])
    assert result.selected_scorer == best
    assert table["rfm"]["normalized_gini"] > table["potential"]["normalized_gini"] + 0.2
    sentence = result.explanation
    assert sentence is not None and sentence.count(".") >= 1 and "\n" not in sentence
    assert sentence.startswith("The potential model did not beat")
    assert f"{table['potential']['normalized_gini']:.3f}" in sentence
    assert result.potential_gini_diff < 0 and result.potential_gini_diff_ci[1] < 0
    assert result.weights is None  # fixed weights: nothing to choose
    document = result.to_dict()
    assert document["validation_cutoff"] == "2024-10-02"


def test_a_potential_model_that_wins_is_kept_and_auto_weights_are_chosen(transactions) -> None:
    future = transactions[transactions["timestamp"] > pd.Timestamp(2024, 10, 2)]
    future_spend = future.groupby("customer_id")["amount"].sum()

    def oracle(cutoff: dt.date, horizon: int, features: pd.DataFrame) -> np.ndarray:
        # a potential model that knows the validation window: it must win
        return future_spend.reindex(features["customer_id"]).fillna(0.0).to_numpy() + 1e-6

    policy = GradePolicy.from_config({"weights": "auto"})
    grid = [Weights(0.6, 0.3, 0.1), Weights(0.0, 1.0, 0.0), Weights(1.0, 0.0, 0.0)]
    result = inner_validation(
        transactions, CALIBRATION_END, SPEC, None, 90, oracle, policy, n_boot=50, weights_grid=grid
    )
    assert result.fallback is False and result.selected_scorer == "potential" and result.explanation is None
    # ranking by the (perfect) potential alone captures the most
    assert result.weights == {"value": 0.0, "potential": 1.0, "loyalty": 0.0}
    assert [row["selected"] for row in result.weights_table] == [False, True, False]
    assert all(row["monotone"] for row in result.weights_table if row["selected"])


def test_select_scorer_tie_keeps_the_fallback_and_names_it() -> None:
    actual = np.array([5.0, 4.0, 3.0, 0.0, 0.0, 1.0])
    ids = np.array(list("abcdef"))
    same = actual + 0.5
    chosen = select_scorer(actual, {"potential": same, "rfm": same, "past_spend": -actual}, ids, n_boot=20)
    # not strictly better: the potential model does not "beat" the baseline
    assert chosen["fallback"] and chosen["selected_scorer"] == "rfm"
    assert "RFM score R+F+M, ties broken by M" in chosen["explanation"]


def test_select_weights_finds_the_measure_that_predicts(transactions) -> None:
    rng = np.random.default_rng(3)
    n = 600
    loyalty = rng.random(n)
    features = pd.DataFrame(
        {
            "customer_id": [f"{i:04d}" for i in range(n)],
            "has_purchases": True,
            "spend_365d": rng.lognormal(3, 1, n),
            "active_months_share": loyalty,
            "repurchase": 0.0,
        }
    )
    potential = rng.lognormal(3, 1, n)
    actual = loyalty**3 * 100  # only loyalty predicts the future
    weights, table, note = select_weights(GradePolicy.from_config({}), features, potential, actual)
    assert len(table) == len(weight_grid()) == 66
    assert (weights.value, weights.potential, weights.loyalty) == (0.0, 0.0, 1.0)
    assert note is None
    # nothing is monotone (value predicts the future backwards): the best capture is taken, and it is said
    backwards = 1000.0 / features["spend_365d"].to_numpy()
    chosen, table, note = select_weights(
        GradePolicy.from_config({}), features, potential, backwards, grid=[Weights(1.0, 0.0, 0.0)]
    )
    assert chosen == Weights(1.0, 0.0, 0.0) and table[0]["monotone"] is False
    assert note is not None and note.startswith("No weighting")


def test_weight_grid_and_presets() -> None:
    grid = weight_grid()
    assert len(grid) == 66
    assert all(abs(w.value + w.potential + w.loyalty - 1) < 1e-12 for w in grid)
    assert grid[0] == Weights(1.0, 0.0, 0.0)
    assert len(weight_grid(0.25)) == 15
    classic = GradePolicy.from_config({"weights": "classic"})
    assert classic.weights == Weights(0.6, 0.3, 0.1) == GradePolicy.from_config({}).weights
    auto = GradePolicy.from_config({"weights": "auto"})
    assert auto.auto_weights and not classic.auto_weights
    with pytest.raises(ConfigError, match="weights is auto"):
        auto.fit(pd.DataFrame({"customer_id": ["a"], "has_purchases": [True]}), np.ones(1))
    fixed = auto.with_weights({"value": 0.2, "potential": 0.8})
    assert fixed.weights == Weights(0.2, 0.8, 0.0) and not fixed.auto_weights
    assert GradePolicy.from_config(auto.to_dict(), merge_defaults=False).auto_weights
    with pytest.raises(ConfigError, match="preset"):
        GradePolicy.from_config({"weights": "fancy"})
    with pytest.raises(ConfigError, match="sum to 1"):
        auto.with_weights({"value": 0.5})


def test_thin_holdout_warning() -> None:
    rng = np.random.default_rng(0)
    n = 3246
    actual = np.zeros(n)
    buyers = rng.choice(n, 14, replace=False)
    actual[buyers] = rng.lognormal(3, 1, 14)
    scores = actual + rng.normal(0, 20, n)
    sentence = thin_holdout_warning(actual, scores, n_boot=200)
    assert sentence is not None and sentence.startswith("The holdout is too thin")
    assert "only 14 of 3,246 customers bought in it (fewer than 200)" in sentence
    assert "normalized Gini is known only to" in sentence
    # many buyers, a sharp score: no warning
    actual = rng.lognormal(3, 1, 5000)
    assert thin_holdout_warning(actual, actual + rng.normal(0, 1, 5000), n_boot=200) is None
    # enough buyers but a noisy Gini: the interval alone triggers it
    noisy = thin_holdout_warning(actual[:300], rng.random(300), n_boot=200)
    assert noisy is not None and "fewer than" not in noisy and "±" in noisy
    gini, low, high = gini_interval(actual, actual, n_boot=50)
    assert gini == pytest.approx(1.0) and low <= high


def _row(scorer: str, mape: float | None, total: float | None) -> dict:
    return {"scorer": scorer, "decile_mape": mape, "total_error": total}


def test_money_check_warns_when_a_money_baseline_forecasts_better():
    table = [
        _row("potential", 0.168, 0.0),
        _row("btyd", 0.089, -0.045),
        _row("past_spend", 0.30, 0.20),
        _row("rfm", None, None),
    ]
    check = money_check(table)
    assert check["worse_decile_mape"] and not check["worse_total_error"]
    assert check["best_decile_mape"]["scorer"] == "btyd"
    assert check["best_total_error"]["scorer"] == "btyd"
    assert "16.8%" in check["warning"] and "8.9%" in check["warning"] and "BG/NBD" in check["warning"]
    assert "total error" not in check["warning"]


def test_money_check_names_only_what_is_worse_and_is_silent_otherwise():
    table = [_row("potential", 0.136, -0.164), _row("btyd", 0.171, -0.068), _row("past_spend", 0.20, 0.30)]
    check = money_check(table)
    assert check["worse_total_error"] and not check["worse_decile_mape"]
    assert "total error -16.4% against -6.8%" in check["warning"]
    calm = money_check([_row("potential", 0.10, 0.01), _row("btyd", 0.12, -0.05)])
    assert calm["warning"] is None and not calm["worse_decile_mape"] and not calm["worse_total_error"]
    # within the blend's 10 % tie slack is a tie, not a loss
    tie = money_check([_row("potential", 0.105, -0.052), _row("btyd", 0.10, -0.05)])
    assert tie["warning"] is None
    assert money_check([_row("potential", 0.111, 0.0), _row("btyd", 0.10, 0.0)])["worse_decile_mape"]


def test_money_check_without_money_figures_says_nothing():
    assert money_check([_row("potential", None, None), _row("btyd", 0.1, 0.0)])["warning"] is None
    assert money_check([_row("potential", 0.2, 0.1), _row("rfm", None, None)])["warning"] is None
    assert money_check([_row("btyd", 0.1, 0.0)])["potential"] is None
