"""Grade-level holdout evaluation: the grading_evaluation.json document on tiny frames."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from segml.grading_evaluation import (
    COMPARISON_GRADINGS,
    MATRIX_REPORT_ORDER,
    cells_from_grades,
    comparison_grades,
    current_value_before,
    grading_evaluation,
    paired_bootstrap_capture_diff,
    top_grade_codes,
)
from segml.policy import MATRIX_CELL_KEYS, GradePolicy

POLICY = GradePolicy.from_config({})


def _population(n: int = 400, seed: int = 0, n_new: int = 20):
    rng = np.random.default_rng(seed)
    ids = np.array([f"{i:04d}" for i in range(n)])
    truth = rng.lognormal(3.0, 1.0, n)
    holdout = truth * rng.random(n) * 2
    current = truth * rng.random(n) * 2
    new = np.zeros(n, dtype=bool)
    new[-n_new:] = True
    current[new] = 0.0
    scores = {
        "rfm": truth + rng.normal(0, 10, n),
        "rfm_sum": np.round(truth / 10),
        "past_spend": current,
        "potential": truth,
    }
    # policy letters: by the true value with the default shares among purchasers; N for the new ones
    m = n - n_new
    counts = {code: int(share * m) for code, share in zip("ABCD", (0.05, 0.15, 0.3, 0.3), strict=True)}
    counts["E"] = m - sum(counts.values())
    letters = np.empty(n, dtype=object)
    bought = np.flatnonzero(~new)
    letters[bought] = comparison_grades(truth[bought], ids[bought], counts, "ABCDE")
    letters[new] = "N"
    levels = np.array(["low", "mid", "high"], dtype=object)
    cells = np.array(
        [None if new[i] else f"{levels[i % 3]}_{levels[(i // 3) % 3]}" for i in range(n)], dtype=object
    )
    return ids, holdout, current, letters, cells, scores


def test_document_shape_and_exact_keys() -> None:
    ids, holdout, current, letters, cells, scores = _population()
    doc = grading_evaluation(
        ids, holdout, current, letters, cells, scores, POLICY, selected_scorer="potential", n_boot=200
    )
    json.dumps(doc, allow_nan=False)  # plain JSON
    assert [g["grading"] for g in doc["gradings"]] == ["policy", *COMPARISON_GRADINGS]
    for grading in doc["gradings"]:
        assert set(grading) == {
            "grading",
            "top_grades",
            "top_capture",
            "top_capture_diff_vs_rfm",
            "top_capture_diff_vs_rfm_ci",
            "monotone",
            "per_grade",
        }
        assert grading["top_grades"] == ["A", "B"]
        assert [row["grade"] for row in grading["per_grade"]] == ["A", "B", "C", "D", "E", "N"]
        assert set(grading["per_grade"][0]) == {
            "grade",
            "customers",
            "share",
            "capture",
            "mean_value",
            "lift",
        }
        # capture denominators include N: captures add up to 1
        assert sum(row["capture"] for row in grading["per_grade"]) == pytest.approx(1.0)
        # the same grade sizes as the policy
        assert [row["customers"] for row in grading["per_grade"]] == [19, 57, 114, 114, 76, 20]
    assert doc["selected_scorer"] == "potential"
    assert [cell["cell"] for cell in doc["matrix"]] == list(MATRIX_REPORT_ORDER)
    assert sorted(MATRIX_REPORT_ORDER) == sorted(MATRIX_CELL_KEYS)
    assert set(doc["matrix"][0]) == {
        "cell",
        "name",
        "customers",
        "share",
        "current_value_mean",
        "realised_value_mean",
        "realised_growth",
    }
    assert doc["matrix"][0]["name"] == POLICY.matrix.cells["high_high"]
    assert sum(cell["customers"] for cell in doc["matrix"]) == 380
    assert doc["new_customers"]["customers"] == 20
    assert doc["new_customers"]["realised_growth"] is None  # no current value for new customers


def test_rfm_is_the_reference_and_numbers_match_hand_computation() -> None:
    ids, holdout, current, letters, cells, scores = _population()
    doc = grading_evaluation(
        ids, holdout, current, letters, cells, scores, POLICY, selected_scorer="rfm", n_boot=300, seed=3
    )
    by_name = {g["grading"]: g for g in doc["gradings"]}
    assert by_name["rfm"]["top_capture_diff_vs_rfm"] == 0.0
    assert by_name["rfm"]["top_capture_diff_vs_rfm_ci"] == [0.0, 0.0]
    # potential grading: top 76 customers by the true value, over the whole population (N included)
    order = np.lexsort((ids, -scores["potential"]))
    expected_top = holdout[order[:76]].sum() / holdout.sum()
    assert by_name["potential"]["top_capture"] == pytest.approx(expected_top)
    rfm_order = np.lexsort((ids, -scores["rfm"]))
    expected_rfm = holdout[rfm_order[:76]].sum() / holdout.sum()
    diff = by_name["potential"]["top_capture_diff_vs_rfm"]
    assert diff == pytest.approx(expected_top - expected_rfm)
    low, high = by_name["potential"]["top_capture_diff_vs_rfm_ci"]
    assert low <= diff <= high
    # policy A: mean holdout value of its A customers
    a_row = by_name["policy"]["per_grade"][0]
    assert a_row["mean_value"] == pytest.approx(holdout[letters == "A"].mean())
    assert a_row["lift"] == pytest.approx(a_row["capture"] / a_row["share"])
    # rerun: identical (seeded)
    again = grading_evaluation(
        ids, holdout, current, letters, cells, scores, POLICY, selected_scorer="rfm", n_boot=300, seed=3
    )
    assert again == doc


def test_monotone_excludes_new_customers_and_allows_ties() -> None:
    ids = np.array(list("abcdefg"))
    holdout = np.array([10.0, 8.0, 8.0, 5.0, 1.0, 0.0, 99.0])
    letters = np.array(["A", "B", "C", "D", "E", "E", "N"], dtype=object)
    cells = np.array(["high_high"] * 6 + [None], dtype=object)
    score = holdout.copy()
    doc = grading_evaluation(
        ids,
        holdout,
        np.ones(7),
        letters,
        cells,
        {"rfm": score},
        POLICY,
        selected_scorer="potential",
        n_boot=50,
    )
    policy = doc["gradings"][0]
    assert policy["monotone"] is True  # N (99) is ignored; B = C is not a violation
    # the rfm grading ranks the newcomer first (score 99), so its A has the new customer and C/D swap values
    rfm = doc["gradings"][1]
    assert rfm["per_grade"][0]["mean_value"] == 99.0
    assert rfm["per_grade"][-1]["grade"] == "N"
    assert rfm["monotone"] is True


def test_realised_growth_per_cell() -> None:
    ids = np.array(["1", "2", "3", "4"])
    holdout = np.array([30.0, 10.0, 5.0, 0.0])
    current = np.array([10.0, 10.0, 0.0, 0.0])
    letters = np.array(["A", "B", "C", "N"], dtype=object)
    cells = np.array(["high_high", "high_high", "low_low", None], dtype=object)
    doc = grading_evaluation(
        ids,
        holdout,
        current,
        letters,
        cells,
        {"rfm": holdout},
        POLICY,
        selected_scorer="potential",
        n_boot=20,
    )
    cell = {c["cell"]: c for c in doc["matrix"]}
    assert cell["high_high"]["customers"] == 2
    assert cell["high_high"]["realised_growth"] == pytest.approx(40.0 / 20.0 - 1.0)
    assert cell["high_high"]["current_value_mean"] == 10.0
    assert cell["low_low"]["realised_growth"] is None  # Σ current = 0
    assert cell["mid_mid"]["customers"] == 0 and cell["mid_mid"]["realised_value_mean"] is None
    assert len(doc["matrix"]) == 9 and doc["new_customers"]["customers"] == 1


def test_bad_inputs_are_named() -> None:
    ids, holdout, current, letters, cells, scores = _population(n=50, n_new=2)
    with pytest.raises(ValueError, match="'rfm' score is required"):
        grading_evaluation(ids, holdout, current, letters, cells, {}, POLICY, selected_scorer="x")
    with pytest.raises(ValueError, match="holdout_value: 1 of 50"):
        bad = holdout.copy()
        bad[3] = np.nan
        grading_evaluation(ids, bad, current, letters, cells, scores, POLICY, selected_scorer="x")
    with pytest.raises(ValueError, match=r"letters \['Z'\]"):
        wrong = letters.copy()
        wrong[0] = "Z"
        grading_evaluation(ids, holdout, current, wrong, cells, scores, POLICY, selected_scorer="x")


def test_building_blocks() -> None:
    assert top_grade_codes(POLICY) == ["A", "B"]
    assert top_grade_codes(POLICY, 0.05) == ["A"]
    assert top_grade_codes(POLICY, 0.5) == ["A", "B", "C"]
    letters = comparison_grades([1.0, 3.0, 3.0, 2.0], ["d", "b", "a", "c"], {"A": 1, "B": 2, "N": 1}, "ABN")
    assert list(letters) == ["N", "B", "A", "B"]  # the tie at 3.0 goes to id "a" first
    with pytest.raises(ValueError, match="add up to 3"):
        comparison_grades([1.0, 2.0], ["a", "b"], {"A": 1, "B": 2}, "AB")
    frame = pd.DataFrame({"value_level": ["high", None], "potential_level": ["low", None]})
    assert list(cells_from_grades(frame)) == ["high_low", None]
    diff, low, high = paired_bootstrap_capture_diff([5.0, 1.0, 0.0], [1, 0, 0], [0, 1, 0], n_boot=200)
    assert diff == pytest.approx(4 / 6) and low <= diff <= high
    assert np.isnan(paired_bootstrap_capture_diff([0.0, 0.0], [1, 0], [0, 1])[0])


def test_current_value_before_counts_the_window_before_the_cutoff() -> None:
    tx = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "c"],
            "timestamp": pd.to_datetime(["2024-01-05", "2024-03-30", "2024-03-31", "2024-04-02"]),
            "amount": [100.0, 10.0, 7.0, 50.0],
        }
    )
    # (2024-03-01, 2024-03-31]: a's March purchase and b; c bought after the cutoff
    values = current_value_before(tx, dt.date(2024, 3, 31), 30, ["c", "b", "a", "zz"])
    assert list(values) == [0.0, 7.0, 10.0, 0.0]
