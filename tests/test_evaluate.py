"""Holdout metrics on tiny arrays whose values are worked out by hand in the comments."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from segml import evaluate
from segml.evaluate import (
    comparison_table,
    decile_mape,
    decile_table,
    evaluate_predictions,
    grade_table,
    grades_monotone,
    normalized_gini,
    paired_bootstrap_gini_diff,
    spearman,
    top_decile_lift,
    top_k_capture,
    total_error,
)

# Four customers used by several tests: holdout spend and a score without ties.
ACTUAL = np.array([10.0, 0.0, 5.0, 0.0])
SCORE = np.array([0.9, 0.8, 0.3, 0.1])


# --------------------------------------------------------------------------------------------------------------
# normalized Gini


def test_normalized_gini_hand_computed() -> None:
    # Ordered by score: actual 10, 0, 5, 0 (total 15) -> gain 2/3, 2/3, 1, 1 at customer shares 1/4 .. 1.
    # Trapezoids: 1/4·(0+2/3)/2 + 1/4·(2/3+2/3)/2 + 1/4·(2/3+1)/2 + 1/4·(1+1)/2 = 17/24 -> Gini 2·17/24−1 = 5/12.
    # Perfect order 10, 5, 0, 0 -> gain 2/3, 1, 1, 1 -> area 19/24 -> Gini 7/12.  Normalized: 5/7.
    assert normalized_gini(ACTUAL, SCORE) == pytest.approx(5 / 7, abs=1e-12)
    assert normalized_gini(ACTUAL, ACTUAL) == pytest.approx(1.0)
    # reversed ordering 0, 5, 0, 10 -> gain 0, 1/3, 1/3, 1 -> area 7/24 -> Gini −5/12 -> −5/7
    assert normalized_gini(ACTUAL, -SCORE) == pytest.approx(-5 / 7, abs=1e-12)


def test_normalized_gini_averages_ties() -> None:
    # Scores tie in pairs: block {10, 0} then block {5, 0}. Block gain at shares 1/2, 1: 2/3, 1.
    # Area 1/2·(0+2/3)/2 + 1/2·(2/3+1)/2 = 7/12 -> Gini 1/6 -> normalized (1/6)/(7/12) = 2/7.
    tied = np.array([1.0, 1.0, 0.0, 0.0])
    assert normalized_gini(ACTUAL, tied) == pytest.approx(2 / 7, abs=1e-12)
    # Same as the mean over the 4 ways of ordering inside the blocks (Ginis 5/12, 1/12, 1/4, −1/12).
    ginis = []
    for first, second in itertools.product(itertools.permutations([0, 1]), itertools.permutations([2, 3])):
        order = list(first) + list(second)
        strict_score = np.empty(4)
        strict_score[order] = [4.0, 3.0, 2.0, 1.0]
        ginis.append(normalized_gini(ACTUAL, strict_score))
    assert np.mean(ginis) == pytest.approx(2 / 7, abs=1e-12)
    # and independent of input order
    permutation = np.array([3, 1, 0, 2])
    assert normalized_gini(ACTUAL[permutation], tied[permutation]) == pytest.approx(2 / 7, abs=1e-12)


def test_normalized_gini_constant_score_is_zero_and_undefined_cases() -> None:
    assert normalized_gini(ACTUAL, np.ones(4)) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(normalized_gini(np.zeros(4), SCORE))  # nobody spent: no ordering to find
    assert math.isnan(normalized_gini(np.full(4, 3.0), SCORE))  # everybody spent the same


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="predicted: 1 of 4 values are NaN"):
        normalized_gini(ACTUAL, [1.0, np.nan, 2.0, 3.0])
    with pytest.raises(ValueError, match="same customers"):
        normalized_gini(ACTUAL, [1.0, 2.0])
    with pytest.raises(ValueError, match="empty"):
        normalized_gini([], [])
    with pytest.raises(ValueError, match=r"k must be a share"):
        top_k_capture(ACTUAL, SCORE, 1.5)


# --------------------------------------------------------------------------------------------------------------
# Spearman


def test_spearman_hand_computed_with_ties() -> None:
    # actual ranks (ties averaged): 10 -> 4, 0 -> 1.5, 5 -> 3, 0 -> 1.5; score ranks 4, 3, 2, 1; both means 2.5.
    # deviations (1.5, −1, 0.5, −1) and (1.5, 0.5, −0.5, −1.5): covariance sum 3, sums of squares 4.5 and 5.
    # rho = 3 / sqrt(4.5 · 5) = 0.632456
    assert spearman(ACTUAL, SCORE) == pytest.approx(3 / math.sqrt(22.5), abs=1e-12)
    assert spearman(ACTUAL, SCORE) == pytest.approx(spearmanr(ACTUAL, SCORE).statistic, abs=1e-12)
    assert math.isnan(spearman(ACTUAL, np.ones(4)))


# --------------------------------------------------------------------------------------------------------------
# top-k capture and lift

IDS = np.array(["c", "a", "b", "e", "d"])
TIE_SCORE = np.array([5.0, 5.0, 3.0, 3.0, 1.0])
TIE_ACTUAL = np.array([1.0, 9.0, 0.0, 4.0, 6.0])  # total 20


def test_top_k_capture_breaks_ties_by_customer_id() -> None:
    # k = 0.2: ceil(1) = 1 customer. "c" and "a" tie at 5; id order picks "a" (9) -> 9/20.
    assert top_k_capture(TIE_ACTUAL, TIE_SCORE, 0.2, ids=IDS) == pytest.approx(0.45)
    # k = 0.5: ceil(2.5) = 3: "a", "c", then "b" (0) before "e" (4) -> (9 + 1 + 0)/20
    assert top_k_capture(TIE_ACTUAL, TIE_SCORE, 0.5, ids=IDS) == pytest.approx(0.5)
    # k = 0.4: exactly 2 customers (0.4 · 5 is not rounded up to 3) -> (9 + 1)/20
    assert top_k_capture(TIE_ACTUAL, TIE_SCORE, 0.4, ids=IDS) == pytest.approx(0.5)
    # without ids the input position breaks ties: "c" (1) comes first -> 1/20
    assert top_k_capture(TIE_ACTUAL, TIE_SCORE, 0.2) == pytest.approx(0.05)
    # object ids behave like strings
    assert top_k_capture(TIE_ACTUAL, TIE_SCORE, 0.2, ids=IDS.astype(object)) == pytest.approx(0.45)
    # numeric ids sort numerically: 10 < 9 is false, so id 9 ("a"'s) wins over 10
    assert top_k_capture(TIE_ACTUAL, TIE_SCORE, 0.2, ids=[10, 9, 1, 2, 3]) == pytest.approx(0.45)
    assert top_k_capture(TIE_ACTUAL, TIE_SCORE, 1.0, ids=IDS) == pytest.approx(1.0)


def test_top_decile_lift_hand_computed() -> None:
    # n = 5 -> top ceil(0.5) = 1 customer: "a" with 9; overall mean 20/5 = 4 -> lift 9/4
    assert top_decile_lift(TIE_ACTUAL, TIE_SCORE, ids=IDS) == pytest.approx(2.25)
    # n = 20, top 2 hold 30 of 40 -> capture 0.75, lift 0.75 · 20 / 2 = 7.5
    actual = np.r_[20.0, 10.0, np.full(18, 10 / 18)]
    score = np.arange(20, 0, -1, dtype=float)
    assert top_k_capture(actual, score, 0.1) == pytest.approx(0.75)
    assert top_decile_lift(actual, score) == pytest.approx(7.5)


# --------------------------------------------------------------------------------------------------------------
# deciles, MAPE, total error


def test_decile_table_breaks_ties_by_customer_id() -> None:
    # 20 customers, all with the same prediction: deciles follow the ids c00, c01 | c02, c03 | ...
    ids = np.array([f"c{i:02d}" for i in range(20)])[::-1]
    actual = np.arange(20, dtype=float)[::-1]  # customer c07 spent 7
    table = decile_table(actual, np.ones(20), ids)
    assert table["decile"].tolist() == list(range(1, 11))
    assert table["n"].tolist() == [2] * 10
    # decile k holds ids 2k−2 and 2k−1 -> mean actual 2k − 1.5
    assert table["mean_actual"].tolist() == pytest.approx([2 * k - 1.5 for k in range(1, 11)])
    assert table["sum_pred"].tolist() == pytest.approx([2.0] * 10)
    assert list(table.columns) == ["decile", "n", "mean_pred", "mean_actual", "sum_pred", "sum_actual"]


def test_decile_table_uneven_and_tiny_sizes() -> None:
    table = decile_table(np.arange(23, dtype=float), np.arange(23, dtype=float))
    assert table["n"].sum() == 23 and set(table["n"]) == {2, 3}
    assert table["sum_actual"].sum() == pytest.approx(sum(range(23)))
    assert table["mean_pred"].is_monotonic_decreasing
    # 4 customers: positions 0..3 -> floor(10p/4) + 1 = deciles 1, 3, 6, 8
    assert decile_table(ACTUAL, SCORE)["decile"].tolist() == [1, 3, 6, 8]


def test_decile_mape_hand_computed() -> None:
    table = pd.DataFrame({"mean_pred": [10.0, 4.0, 1.0], "mean_actual": [8.0, 5.0, 0.0]})
    # deciles with actual mean > 0: |10−8|/8 = 0.25, |4−5|/5 = 0.2 -> mean 0.225 (the zero decile is skipped)
    assert decile_mape(table) == pytest.approx(0.225)
    assert decile_mape(table.assign(mean_actual=0.0)) is None


def test_total_error_hand_computed() -> None:
    assert total_error([4.0, 4.0, 2.0], [2.0, 3.0, 5.0]) == pytest.approx(0.0)
    assert total_error([1.0, 1.0, 2.0], [3.0, 3.0, 3.0]) == pytest.approx(9 / 4 - 1)  # +125 %
    assert math.isnan(total_error([0.0, 0.0], [1.0, 1.0]))


# --------------------------------------------------------------------------------------------------------------
# grades


def test_grade_table_and_monotone_true() -> None:
    actual = [100.0, 80.0, 50.0, 10.0, 0.0, 5.0]
    grades = ["A", "A", "B", "C", "E", "E"]
    table = grade_table(actual, grades)
    assert table["grade"].tolist() == list("ABCDE")
    assert table["n"].tolist() == [2, 1, 1, 0, 2]
    # A: (100+80)/2 = 90, B 50, C 10, D empty, E (0+5)/2 = 2.5; A holds 180 of 245
    assert table["mean_actual"].tolist()[:3] == pytest.approx([90.0, 50.0, 10.0])
    assert math.isnan(table["mean_actual"].iloc[3])
    assert table["mean_actual"].iloc[4] == pytest.approx(2.5)
    assert table["share_actual"].iloc[0] == pytest.approx(180 / 245)
    assert table["share_customers"].sum() == pytest.approx(1.0)
    assert grades_monotone(table) is True  # the empty grade D is skipped


def test_grades_monotone_false_cases() -> None:
    assert grades_monotone(grade_table([10.0, 20.0], ["A", "B"], order="AB")) is False
    # equal means are not a decrease
    assert grades_monotone(grade_table([10.0, 10.0, 1.0], ["A", "B", "C"], order="ABC")) is False
    # non-letter grade names in a sequence
    table = grade_table([5.0, 1.0], ["gold", "silver"], order=["gold", "silver", "bronze"])
    assert grades_monotone(table) is True


def test_grade_table_rejects_unknown_grades() -> None:
    with pytest.raises(ValueError, match=r"1 customers have labels \['F'\]"):
        grade_table([1.0, 2.0], ["A", "F"])


# --------------------------------------------------------------------------------------------------------------
# paired bootstrap


def _reference_bootstrap(actual, pred_a, pred_b, n_boot, seed):
    """The same resamples evaluated one by one with the public normalized_gini (slow, obviously right)."""
    n = len(actual)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))  # one chunk for small n: the same stream as the fast code
    diffs = [normalized_gini(actual[d], pred_a[d]) - normalized_gini(actual[d], pred_b[d]) for d in draws]
    return np.percentile(diffs, [2.5, 97.5])


def test_paired_bootstrap_matches_one_by_one_resampling() -> None:
    rng = np.random.default_rng(3)
    actual = np.round(rng.gamma(0.5, 50.0, 60) * (rng.random(60) < 0.6), 2)
    pred_a = actual + rng.normal(0, 20, 60)
    pred_b = np.round(actual + rng.normal(0, 60, 60), -1)  # rounded: many ties
    diff, low, high = paired_bootstrap_gini_diff(actual, pred_a, pred_b, n_boot=200, seed=11)
    assert diff == pytest.approx(normalized_gini(actual, pred_a) - normalized_gini(actual, pred_b))
    assert [low, high] == pytest.approx(_reference_bootstrap(actual, pred_a, pred_b, 200, 11), abs=1e-12)


def test_paired_bootstrap_covers_true_difference_and_is_seeded() -> None:
    def sample(generator, n):
        value = generator.gamma(0.4, 100.0, n) * (generator.random(n) < 0.4)
        good = np.log1p(value) + generator.normal(0, 0.5, n)
        poor = np.log1p(value) + generator.normal(0, 1.5, n)
        return value, good, poor

    # "true" difference: the same models on a very large sample from the same population
    big_actual, big_good, big_poor = sample(np.random.default_rng(100), 400_000)
    true_diff = normalized_gini(big_actual, big_good) - normalized_gini(big_actual, big_poor)
    actual, good, poor = sample(np.random.default_rng(5), 3000)
    diff, low, high = paired_bootstrap_gini_diff(actual, good, poor, n_boot=500, seed=0)
    assert low < diff < high
    assert low < true_diff < high
    assert low > 0  # the better model is significantly better
    assert paired_bootstrap_gini_diff(actual, good, poor, n_boot=500, seed=0) == (diff, low, high)
    assert paired_bootstrap_gini_diff(actual, good, poor, n_boot=500, seed=1) != (diff, low, high)
    # identical predictions: no difference in any replicate
    assert paired_bootstrap_gini_diff(actual, good, good, n_boot=50) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_chunking_does_not_change_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    actual = rng.gamma(0.5, 10.0, 300)
    pred_a, pred_b = actual + rng.normal(0, 5, 300), np.round(actual)
    whole = paired_bootstrap_gini_diff(actual, pred_a, pred_b, n_boot=100, seed=4)
    monkeypatch.setattr(evaluate, "BOOTSTRAP_CELLS_PER_CHUNK", 300 * 7)  # 7 replicates per chunk
    assert paired_bootstrap_gini_diff(actual, pred_a, pred_b, n_boot=100, seed=4) == pytest.approx(whole)


# --------------------------------------------------------------------------------------------------------------
# per-model summary and comparison table


def test_evaluate_predictions_keys_and_values() -> None:
    result = evaluate_predictions(TIE_ACTUAL, TIE_SCORE, IDS, predicts_money=True)
    assert result["normalized_gini"] == pytest.approx(normalized_gini(TIE_ACTUAL, TIE_SCORE))
    assert result["top10_capture"] == pytest.approx(0.45)  # ceil(0.5) = 1 customer: "a"
    assert result["top20_capture"] == pytest.approx(0.45)  # ceil(1.0) = 1 customer
    assert result["top_decile_lift"] == pytest.approx(2.25)
    # predictions 5,5,3,3,1 vs actual 1,9,0,4,6: total 17 / 20 − 1
    assert result["total_error"] == pytest.approx(17 / 20 - 1)
    assert result["decile_mape"] == pytest.approx(decile_mape(decile_table(TIE_ACTUAL, TIE_SCORE, IDS)))
    assert len(result["decile_table"]) == 5
    not_money = evaluate_predictions(TIE_ACTUAL, TIE_SCORE, IDS, predicts_money=False)
    assert not_money["decile_mape"] is None and not_money["total_error"] is None
    assert not_money["decile_table"] is None
    assert set(not_money) == {
        "normalized_gini",
        "spearman",
        "top10_capture",
        "top20_capture",
        "top_decile_lift",
        "decile_mape",
        "total_error",
        "decile_table",
    }


def test_comparison_table_against_best_baseline() -> None:
    rng = np.random.default_rng(21)
    actual = rng.gamma(0.5, 10.0, 400) * (rng.random(400) < 0.5)
    ids = np.array([f"{i:04d}" for i in range(400)])
    predictions = {
        "gbm": actual + rng.normal(0, 2, 400),
        "rfm": actual + rng.normal(0, 5, 400),
        "past_spend": actual + rng.normal(0, 10, 400),
    }
    results = {
        name: evaluate_predictions(actual, pred, ids, name != "rfm") for name, pred in predictions.items()
    }
    rows = comparison_table(results, actual, predictions, baseline_names=["rfm", "past_spend"], n_boot=200)
    assert [row["model"] for row in rows] == ["gbm", "rfm", "past_spend"]
    assert set(rows[0]) == {
        "model",
        "normalized_gini",
        "spearman",
        "top10_capture",
        "top20_capture",
        "decile_mape",
        "total_error",
        "gini_diff",
        "gini_diff_ci",
        "gini_diff_vs",
    }
    best = rows[1]  # rfm has the smaller noise, hence the higher Gini of the two baselines
    assert best["gini_diff_vs"] == "rfm" and best["gini_diff"] == 0.0 and best["gini_diff_ci"] == [0.0, 0.0]
    gbm = rows[0]
    assert gbm["gini_diff"] == pytest.approx(
        results["gbm"]["normalized_gini"] - results["rfm"]["normalized_gini"]
    )
    low, high = gbm["gini_diff_ci"]
    assert low <= gbm["gini_diff"] <= high
    assert rows[2]["gini_diff"] < 0
    assert rows[1]["decile_mape"] is None
    with pytest.raises(ValueError, match="none of the baselines"):
        comparison_table(results, actual, predictions, baseline_names=["btyd"])


def test_comparison_table_best_baseline_among_all_four_by_default() -> None:
    from segml.evaluate import BEST_BASELINE_CANDIDATES

    assert BEST_BASELINE_CANDIDATES == ("rfm", "rfm_sum", "past_spend", "btyd")
    rng = np.random.default_rng(5)
    actual = rng.gamma(0.5, 10.0, 300)
    ids = np.array([f"{i:04d}" for i in range(300)])
    predictions = {
        "potential": actual + rng.normal(0, 3, 300),
        "rfm": actual + rng.normal(0, 8, 300),
        "rfm_sum": np.round(actual / 5),
        "past_spend": actual + rng.normal(0, 1, 300),  # the best baseline here
        "btyd": actual + rng.normal(0, 6, 300),
    }
    results = {
        name: evaluate_predictions(actual, p, ids, name.startswith("p")) for name, p in predictions.items()
    }
    rows = comparison_table(results, actual, predictions, n_boot=50)
    assert {row["gini_diff_vs"] for row in rows} == {"past_spend"}
    by_model = {row["model"]: row for row in rows}
    assert by_model["past_spend"]["gini_diff"] == 0.0
    assert by_model["potential"]["gini_diff"] < 0  # the model loses to the best baseline, not to RFM
