"""Grade policy: config validation, frozen references, grades, matrix, serialisation."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segml.errors import ConfigError, InputFileError
from segml.policy import (
    MATRIX_CELL_KEYS,
    FittedPolicy,
    GradePolicy,
    grade_index_from_thresholds,
    grade_summary,
    matrix_table,
    percentile_rank,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "policy.md"


def make_features(n: int, seed: int = 0, new_share: float = 0.0) -> tuple[pd.DataFrame, np.ndarray]:
    """Feature rows with the contract's column names, continuous values (no ties), and predictions."""
    rng = np.random.default_rng(seed)
    has_purchases = rng.random(n) >= new_share
    spend = np.where(has_purchases, rng.lognormal(5.0, 1.2, n), 0.0)
    features = pd.DataFrame(
        {
            "customer_id": [f"{i:05d}" for i in range(n)],
            "as_of": pd.Timestamp(dt.date(2025, 6, 30)),
            "has_purchases": has_purchases,
            "spend_365d": spend,
            "spend_90d": spend * rng.random(n),
            "active_months_share": np.where(has_purchases, rng.random(n), 0.0),
            "repurchase": np.where(has_purchases, (rng.random(n) < 0.6).astype(float), 0.0),
            "recency_days": np.where(has_purchases, rng.integers(0, 365, n).astype(float), np.nan),
        }
    )
    potential = rng.lognormal(4.5, 1.5, n)
    return features, potential


@pytest.fixture(scope="module")
def training() -> tuple[pd.DataFrame, np.ndarray]:
    return make_features(1997, seed=1, new_share=0.1)


@pytest.fixture(scope="module")
def fitted(training) -> FittedPolicy:
    features, potential = training
    return GradePolicy.from_config({}).fit(features, potential)


def uniform_fitted(policy: GradePolicy, thresholds: list[float] | None = None) -> FittedPolicy:
    """A fitted policy whose references are 0, 1, ..., 1000: the rank of x is x / 1000."""
    reference = [float(v) for v in range(policy.reference_quantiles)]
    return FittedPolicy(
        policy=policy,
        value_reference=reference,
        potential_reference=reference,
        loyalty_reference=reference,
        grade_thresholds=thresholds
        if thresholds is not None
        else list(policy.thresholds or [0.8, 0.6, 0.4, 0.2]),
        n_training_customers=0,
        training_grade_counts={},
    )


# --------------------------------------------------------------------------------------------------------------
# Configuration


def test_defaults():
    policy = GradePolicy.from_config({})
    assert (policy.weights.value, policy.weights.potential, policy.weights.loyalty) == (0.6, 0.3, 0.1)
    assert policy.method == "shares"
    assert policy.value_feature == "spend_365d"
    assert policy.loyalty.feature == "active_months_share"
    assert policy.loyalty.repurchase_feature == "repurchase"
    assert [g.code for g in policy.grades] == ["A", "B", "C", "D", "E"]
    assert [g.share for g in policy.grades] == [0.05, 0.15, 0.30, 0.30, 0.20]
    assert policy.new_customer.code == "N"
    assert sorted(policy.matrix.cells) == sorted(MATRIX_CELL_KEYS)
    assert GradePolicy.from_config(None) == policy


def test_mappings_merge_but_weights_and_lists_replace():
    policy = GradePolicy.from_config({"matrix": {"cells": {"low_low": "低价值"}}, "weights": {"value": 1.0}})
    assert policy.matrix.cells["low_low"] == "低价值"
    assert policy.matrix.cells["high_high"] == GradePolicy.from_config({}).matrix.cells["high_high"]
    assert (policy.weights.value, policy.weights.potential, policy.weights.loyalty) == (1.0, 0.0, 0.0)
    two = GradePolicy.from_config(
        {"grades": [{"code": "H", "name": "高", "share": 0.4}, {"code": "L", "name": "低", "share": 0.6}]}
    )
    assert [g.code for g in two.grades] == ["H", "L"]


@pytest.mark.parametrize(
    ("section", "dotted"),
    [
        ({"matrix": {"cels": {}}}, "policy.matrix.cels"),
        ({"loyalty": {"feature": "active_months_share", "weight": 0.2}}, "policy.loyalty.weight"),
        ({"grades": [{"code": "A", "name": "a", "shar": 0.5}]}, "policy.grades.0.shar"),
        ({"value_featur": "spend_90d"}, "policy.value_featur"),
        ({"matrix": {"cells": {"top_top": "x"}}}, "policy.matrix.cells.top_top"),
    ],
)
def test_unknown_key_names_dotted_path(section, dotted):
    with pytest.raises(ConfigError, match=re.escape(f"'{dotted}'")):
        GradePolicy.from_config(section)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"weights": {"value": 0.6, "potential": 0.3, "loyalty": 0.2}}, r"policy\.weights: .*sum to 1.*1\.1"),
        ({"weights": {"value": 1.2, "potential": -0.2}}, r"policy\.weights\.potential: must be a number ≥ 0"),
        ({"weights": {"value": "high"}}, r"policy\.weights\.value: expected a number"),
        ({"loyalty": {"repurchase_weight": 1.5}}, r"policy\.loyalty\.repurchase_weight"),
        (
            {"grades": [{"code": "A", "name": "a", "share": 0.5}, {"code": "B", "name": "b", "share": 0.4}]},
            r"shares must sum to 1",
        ),
        (
            {"grades": [{"code": "A", "name": "a", "share": 0.5}, {"code": "B", "name": "b"}]},
            r"policy\.grades\.1\.share",
        ),
        (
            {"grades": [{"code": "A", "name": "a", "share": 0.5}, {"code": "A", "name": "b", "share": 0.5}]},
            r"unique.*A",
        ),
        ({"new_customer": {"code": "A"}}, r"unique.*A"),
        ({"method": "score_thresholds", "thresholds": [0.8, 0.6, 0.6, 0.2]}, r"strictly decreasing"),
        ({"method": "score_thresholds", "thresholds": [0.8, 0.6]}, r"needs 4 lower bounds"),
        ({"method": "score_thresholds", "thresholds": [1.8, 0.6, 0.4, 0.2]}, r"\[0, 1\]"),
        ({"method": "value_thresholds"}, r"policy\.thresholds: method value_thresholds needs 4"),
        ({"thresholds": [0.8, 0.6, 0.4, 0.2]}, r"only used with method"),
        ({"method": "ranked"}, r"policy\.method: 'ranked' is not one of"),
        ({"matrix": {"value_cuts": [0.8, 0.5]}}, r"policy\.matrix\.value_cuts"),
        ({"matrix": {"cells": {"mid_mid": " "}}}, r"missing: mid_mid"),
    ],
)
def test_invalid_policies_are_rejected_clearly(section, message):
    with pytest.raises(ConfigError, match=message):
        GradePolicy.from_config(section)


def test_docs_describe_every_policy_key():
    text = DOCS.read_text(encoding="utf-8")
    policy = GradePolicy.from_config({})
    nested = [policy, policy.weights, policy.loyalty, policy.grades[0], policy.new_customer, policy.matrix]
    for obj in nested:
        for field in dataclasses.fields(obj):
            assert f"`{field.name}`" in text, f"docs/policy.md does not describe {field.name}"


# --------------------------------------------------------------------------------------------------------------
# Frozen references and scores


def test_percentile_rank_rule():
    # levels 0, .25, .5, .75, 1 over a reference with a spike of zeros
    reference = [0.0, 0.0, 0.0, 1.0, 2.0]
    ranks = percentile_rank(np.array([-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 9.0, np.nan]), reference)
    # 0.0 equals the run q_0..q_2 (levels 0 .. 0.5): the middle of the run
    np.testing.assert_allclose(ranks[:-1], [0.0, 0.25, 0.625, 0.75, 0.875, 1.0, 1.0])
    assert np.isnan(ranks[-1])


@settings(max_examples=60, deadline=None)
@given(
    reference=st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=50),
    values=st.lists(st.floats(-2e6, 2e6), min_size=1, max_size=50),
)
def test_percentile_rank_is_monotone_and_elementwise(reference, values):
    reference = sorted(reference)
    values = np.array(values)
    ranks = percentile_rank(values, reference)
    assert np.all((ranks >= 0) & (ranks <= 1))
    order = np.argsort(values, kind="stable")
    assert np.all(np.diff(ranks[order]) >= 0)
    alone = np.array([percentile_rank(np.array([v]), reference)[0] for v in values])
    np.testing.assert_array_equal(alone, ranks)


def test_fit_freezes_quantiles_over_purchasers(training, fitted):
    features, potential = training
    purchased = features["has_purchases"].to_numpy()
    assert len(fitted.value_reference) == 1001
    assert fitted.n_training_customers == purchased.sum()
    assert fitted.value_reference[0] == features.loc[purchased, "spend_365d"].min()
    assert fitted.potential_reference[-1] == potential[purchased].max()
    assert fitted.value_reference[500] == pytest.approx(features.loc[purchased, "spend_365d"].median())


def test_loyalty_includes_repurchase_as_stated():
    policy = GradePolicy.from_config({})
    frame = pd.DataFrame({"active_months_share": [0.5, 1.0, 0.0], "repurchase": [1.0, 0.0, np.nan]})
    np.testing.assert_allclose(policy.loyalty_measure(frame), [0.625, 0.75, 0.0])


def test_batch_independence(training, fitted):
    features, potential = training
    full = fitted.grade(features, potential)
    for row in [0, 7, 123, 1500, len(features) - 1]:
        alone = fitted.grade(features.iloc[[row]], potential[[row]])
        pd.testing.assert_frame_equal(alone, full.iloc[[row]].reset_index(drop=True))
    shuffled = np.random.default_rng(3).permutation(len(features))[:300]
    batch = fitted.grade(features.iloc[shuffled], potential[shuffled])
    pd.testing.assert_frame_equal(batch, full.iloc[shuffled].reset_index(drop=True))


def test_shares_reproduced_on_training_population(training, fitted):
    features, potential = training
    grades = fitted.grade(features, potential)
    purchasers = grades[features["has_purchases"].to_numpy()]
    n = len(purchasers)
    policy = fitted.policy
    cumulative_share = np.cumsum([g.share for g in policy.grades])
    cumulative_count = purchasers["grade"].value_counts().reindex([g.code for g in policy.grades]).cumsum()
    for expected, got in zip(cumulative_share, cumulative_count, strict=True):
        assert abs(got - expected * n) <= 1
    assert fitted.training_grade_counts == purchasers["grade"].value_counts().to_dict()


def test_identical_customers_are_never_split_between_grades():
    features, potential = make_features(40, seed=2)
    features["spend_365d"] = 100.0
    features["active_months_share"] = 0.5
    features["repurchase"] = 1.0
    potential = np.full(len(features), 50.0)
    fitted = GradePolicy.from_config({}).fit(features, potential)
    grades = fitted.grade(features, potential)
    # one grade for all; cumulative shares 5/20/50/80 %: the run of 40 is closest to the 50 % boundary's
    # count from above (|40 - 20| = |0 - 20|, ties go up), so everyone is C
    assert grades["grade"].nunique() == 1
    assert (grades["grade"] == "C").all()


def test_share_thresholds_put_a_tied_run_on_the_side_closest_to_the_target_share():
    from segml.policy import share_thresholds

    # 10 distinct high scores, then a run of 30 identical low scores, then 60 lower distinct scores
    scores = np.concatenate([np.linspace(0.9, 0.99, 10), np.full(30, 0.5), np.linspace(0.1, 0.3, 60)])
    # one boundary at 20 %: ties up -> 40 above (error 20), ties down -> 10 above (error 10): down wins
    (bound,) = share_thresholds(scores, [0.2, 0.8])
    assert bound == pytest.approx(0.9)
    assert (scores >= bound).sum() == 10
    # boundary at 35 %: ties up -> 40 above (error 5) wins
    (bound,) = share_thresholds(scores, [0.35, 0.65])
    assert bound == 0.5
    assert (scores >= bound).sum() == 40


def test_scores_and_grades_are_monotone_on_training(training, fitted):
    features, potential = training
    grades = fitted.grade(features, potential).loc[features["has_purchases"].to_numpy()]
    order = {g.code: i for i, g in enumerate(fitted.policy.grades)}
    ranked = grades.assign(index=grades["grade"].map(order)).sort_values(
        "score", ascending=False, kind="stable"
    )
    assert ranked["index"].is_monotonic_increasing
    assert grades["score"].between(0, 1).all()


# --------------------------------------------------------------------------------------------------------------
# Threshold methods (property checks)


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4, unique=True),
    seed=st.integers(0, 10_000),
)
def test_score_thresholds_are_monotone_in_the_score(cuts, seed):
    thresholds = sorted(cuts, reverse=True)
    policy = GradePolicy.from_config({"method": "score_thresholds", "thresholds": thresholds})
    features, potential = make_features(120, seed=seed)
    fitted = policy.fit(features, potential)
    grades = fitted.grade(features, potential)
    index = grades["grade"].map({g.code: i for i, g in enumerate(policy.grades)}).to_numpy()
    score = grades["score"].to_numpy()
    expected = np.array([sum(s < t for t in thresholds) for s in score])
    np.testing.assert_array_equal(index, expected)
    order = np.argsort(-score, kind="stable")
    assert np.all(np.diff(index[order]) >= 0)


@settings(max_examples=40, deadline=None)
@given(
    bounds=st.lists(st.floats(0.0, 2000.0), min_size=4, max_size=4, unique=True),
    seed=st.integers(0, 10_000),
)
def test_value_thresholds_are_monotone_in_predicted_value(bounds, seed):
    thresholds = sorted(bounds, reverse=True)
    policy = GradePolicy.from_config({"method": "value_thresholds", "thresholds": thresholds})
    features, potential = make_features(120, seed=seed)
    grades = policy.fit(features, potential).grade(features, potential)
    index = grades["grade"].map({g.code: i for i, g in enumerate(policy.grades)}).to_numpy()
    order = np.argsort(-potential, kind="stable")
    assert np.all(np.diff(index[order]) >= 0)
    at_bound = np.array(thresholds[:1])
    assert grade_index_from_thresholds(at_bound, thresholds)[0] == 0  # exactly at a bound: better grade


@pytest.mark.parametrize("method", ["shares", "value_thresholds"])
def test_grade_codes_at_alternative_forecasts_equal_grading_them(training, method):
    """The grade range's shortcut gives, for every alternative forecast, exactly the grade column of grading
    with that forecast, and a higher forecast never gives a lower grade."""
    features, potential = training
    config = {} if method == "shares" else {"method": "value_thresholds", "thresholds": [400, 150, 60, 20]}
    policy = GradePolicy.from_config(config)
    fitted = policy.fit(features, potential)
    rng = np.random.default_rng(3)
    low = potential * rng.uniform(0.0, 1.0, len(potential))
    high = potential * rng.uniform(1.0, 4.0, len(potential))
    at_low, at_high = fitted.grade_codes_at(features, [low, high])
    assert at_low.tolist() == fitted.grade(features, low)["grade"].tolist()
    assert at_high.tolist() == fitted.grade(features, high)["grade"].tolist()
    rank = {g.code: i for i, g in enumerate([*policy.grades, policy.new_customer])}
    here = fitted.grade(features, potential)["grade"].map(rank).to_numpy()
    assert (pd.Series(at_low).map(rank).to_numpy() >= here).all()
    assert (pd.Series(at_high).map(rank).to_numpy() <= here).all()
    assert fitted.grade_codes_at(features, []) == []


def test_refit_boundaries_follows_a_new_population(training, fitted):
    features, potential = training
    richer = features.assign(spend_365d=features["spend_365d"] * 3)
    drifted = fitted.grade(richer, potential * 3)
    a_share = (drifted["grade"] == "A").sum() / features["has_purchases"].sum()
    assert a_share > 0.10  # frozen boundaries: grade sizes move with the population
    refitted = fitted.refit_boundaries(richer, potential * 3)
    assert refitted.value_reference == fitted.value_reference
    counts = refitted.grade(richer, potential * 3)["grade"].value_counts()
    assert abs(counts["A"] - 0.05 * features["has_purchases"].sum()) <= 1
    assert fitted.grade_thresholds != refitted.grade_thresholds

    fixed = GradePolicy.from_config({"method": "score_thresholds", "thresholds": [0.8, 0.6, 0.4, 0.2]})
    with pytest.raises(ConfigError, match="nothing to re-derive"):
        fixed.fit(features, potential).refit_boundaries(features, potential)


# --------------------------------------------------------------------------------------------------------------
# New customers, matrix, output


def test_new_customers_get_the_new_grade(training, fitted):
    features, potential = training
    potential = potential.copy()
    new = ~features["has_purchases"].to_numpy()
    assert new.sum() > 0
    potential[np.flatnonzero(new)[:5]] = np.nan  # no prediction for some newcomers is fine
    grades = fitted.grade(features, potential)
    assert grades["grade"].notna().all()
    assert (grades.loc[new, "grade"] == "N").all()
    assert (grades.loc[~new, "grade"] != "N").all()
    assert grades.loc[new, "score"].isna().all()
    assert (grades.loc[new, "matrix_cell"] == fitted.policy.new_customer.matrix_cell).all()
    assert grades.loc[new, "value_level"].isna().all()
    assert (grades.loc[new, "strategy"] == fitted.policy.new_customer.strategy).all()


def test_matrix_cells_assignment():
    policy = GradePolicy.from_config({})
    fitted = uniform_fitted(policy)
    value = np.array([900.0, 600.0, 500.0, 100.0, 799.0, 800.0])
    potential = np.array([900.0, 100.0, 800.0, 100.0, 500.0, 499.0])
    features = pd.DataFrame(
        {
            "customer_id": [str(i) for i in range(len(value))],
            "has_purchases": True,
            "spend_365d": value,
            "active_months_share": 0.5,
            "repurchase": 1.0,
        }
    )
    grades = fitted.grade(features, potential)
    np.testing.assert_allclose(grades["value_rank"], value / 1000)
    expected = ["high_high", "mid_low", "mid_high", "low_low", "mid_mid", "high_low"]
    assert list(grades["value_level"] + "_" + grades["potential_level"]) == expected
    assert list(grades["matrix_cell"]) == [policy.matrix.cells[key] for key in expected]

    table = matrix_table(grades)
    assert table.shape == (3, 3)
    assert list(table.index) == ["high", "mid", "low"] and list(table.columns) == ["high", "mid", "low"]
    assert table.to_numpy().sum() == len(grades)
    assert table.loc["mid", "high"] == 1 and table.loc["high", "low"] == 1 and table.loc["low", "mid"] == 0
    labelled = matrix_table(grades, fitted)
    assert labelled.loc["high", "high"] == f"{policy.matrix.cells['high_high']}: 1"


def test_grade_output_columns(training, fitted):
    features, potential = training
    grades = fitted.grade(features, potential)
    assert list(grades.columns) == [
        "customer_id",
        "grade",
        "grade_name",
        "score",
        "value_rank",
        "potential_rank",
        "growth_rank",
        "loyalty_rank",
        "value_level",
        "potential_level",
        "matrix_cell",
        "strategy",
    ]
    assert list(grades["customer_id"]) == list(features["customer_id"])
    by_code = {g.code: g for g in fitted.policy.grades}
    sample = grades[grades["grade"] != "N"].head(20)
    assert all(by_code[c].name == n for c, n in zip(sample["grade"], sample["grade_name"], strict=True))


def test_grade_summary(training, fitted):
    features, potential = training
    grades = fitted.grade(features, potential)
    future = potential * 0.5
    summary = grade_summary(grades, features["spend_365d"], future, policy=fitted)
    assert list(summary["grade"]) == ["A", "B", "C", "D", "E", "N"]
    assert summary["n"].sum() == len(grades)
    assert summary["share"].sum() == pytest.approx(1.0)
    assert summary["value_share"].sum() == pytest.approx(1.0)
    assert summary["future_value_share"].sum() == pytest.approx(1.0)
    a = summary.set_index("grade").loc["A"]
    in_a = (grades["grade"] == "A").to_numpy()
    assert a["value_mean"] == pytest.approx(features.loc[in_a, "spend_365d"].mean())
    assert a["cost_total"] == pytest.approx(500 * in_a.sum())
    assert a["future_value_per_cost"] == pytest.approx(future[in_a].sum() / (500 * in_a.sum()))
    assert summary["value_mean"].iloc[:5].is_monotonic_decreasing  # better grades hold more value

    bare = grade_summary(grades, features["spend_365d"])
    assert "cost_total" not in bare.columns
    assert bare["grade"].iloc[0] == "A" and bare["grade"].iloc[-1] == "N"


def test_bad_inputs_name_the_problem(training, fitted):
    features, potential = training
    with pytest.raises(InputFileError, match=r"missing column 'spend_365d'.*policy\.value_feature"):
        fitted.grade(features.drop(columns="spend_365d"), potential)
    with pytest.raises(InputFileError, match=r"potential: 10 predictions for a feature table of 1997 rows"):
        fitted.grade(features, potential[:10])
    broken = potential.copy()
    broken[np.flatnonzero(features["has_purchases"].to_numpy())[:3]] = np.nan
    with pytest.raises(InputFileError, match=r"potential: 3 of \d+ customers with purchases"):
        fitted.grade(features, broken)
    with pytest.raises(InputFileError, match="none of the 3 rows"):
        GradePolicy.from_config({}).fit(features.head(3).assign(has_purchases=False), potential[:3])


# --------------------------------------------------------------------------------------------------------------
# Serialisation


def test_dict_and_yaml_round_trip(training, fitted, tmp_path):
    features, potential = training
    document = fitted.to_dict()
    assert FittedPolicy.from_dict(document) == fitted
    assert FittedPolicy.from_dict(document).to_dict() == document
    again = FittedPolicy.from_yaml(fitted.to_yaml())
    assert again == fitted
    assert again.to_yaml() == fitted.to_yaml()
    pd.testing.assert_frame_equal(again.grade(features, potential), fitted.grade(features, potential))
    path = fitted.save(tmp_path / "policy.yaml")
    assert FittedPolicy.load(path) == fitted


def test_cjk_names_survive_yaml(training):
    features, potential = training
    policy = GradePolicy.from_config(
        {
            "grades": [
                {"code": "A", "name": "高净值客户", "share": 0.1, "strategy": "专属客户经理"},
                {"code": "B", "name": "VIP客户", "share": 0.2, "strategy": "优先服务"},
                {"code": "C", "name": "普通客户", "share": 0.4, "strategy": "定期关怀"},
                {"code": "D", "name": "潜力客户", "share": 0.3, "strategy": "培育激活"},
            ],
            "new_customer": {"code": "新", "name": "新客户", "strategy": "新客欢迎礼"},
            "matrix": {"cells": {"high_high": "明星客户"}},
        }
    )
    fitted = policy.fit(features, potential)
    text = fitted.to_yaml()
    assert "高净值客户" in text and "新客欢迎礼" in text  # stored readable, not \\u-escaped
    again = FittedPolicy.from_yaml(text)
    assert [g.name for g in again.policy.grades] == ["高净值客户", "VIP客户", "普通客户", "潜力客户"]
    assert again.policy.new_customer.code == "新"
    grades = again.grade(features, potential)
    assert set(grades["grade_name"]) == {"高净值客户", "VIP客户", "普通客户", "潜力客户", "新客户"}
    assert "明星客户" in set(grades["matrix_cell"])


def test_from_dict_rejects_tampered_documents(fitted):
    document = fitted.to_dict()
    with pytest.raises(ConfigError, match="not a segml.fitted_policy"):
        FittedPolicy.from_dict({**document, "format": "other"})
    with pytest.raises(ConfigError, match="format_version 99"):
        FittedPolicy.from_dict({**document, "format_version": 99})
    short = {**document, "reference": {**document["reference"], "value": document["reference"]["value"][:10]}}
    with pytest.raises(ConfigError, match=r"reference\.value must hold 1001"):
        FittedPolicy.from_dict(short)
    bad_policy = {**document, "policy": {**document["policy"], "extra": 1}}
    with pytest.raises(ConfigError, match="'policy.extra'"):
        FittedPolicy.from_dict(bad_policy)


# --------------------------------------------------------------------------------------------------------------
# The potential axis: expected growth against customers of similar current value


def _growth_population(n: int = 3000, seed: int = 4) -> tuple[pd.DataFrame, np.ndarray]:
    """A forecast that mostly repeats current value (as a good forecast does), plus a growth signal."""
    features, _ = make_features(n, seed=seed)
    rng = np.random.default_rng(seed)
    spend = features["spend_365d"].to_numpy()
    potential = spend * 0.7 * np.exp(rng.normal(0, 0.6, n))
    return features, potential


def test_growth_axis_fills_all_nine_cells_when_the_forecast_repeats_value():
    features, potential = _growth_population()
    by_forecast = GradePolicy.from_config({"matrix": {"potential_axis": "forecast"}}).fit(features, potential)
    by_growth = GradePolicy.from_config({}).fit(features, potential)
    assert by_growth.policy.matrix.potential_axis == "growth"  # the default
    old = matrix_table(by_forecast.grade(features, potential))
    new = matrix_table(by_growth.grade(features, potential))
    # ranking the forecast itself repeats the value axis: "at risk" (high value, low potential) is almost empty
    assert old.loc["high", "low"] < 0.02 * len(features)
    # growth ranks within value bands: every value row holds the potential cuts' shares (50 / 30 / 20 %)
    assert (new.to_numpy() > 0).all()
    for level in ("high", "mid", "low"):
        row = new.loc[level]
        assert row["low"] / row.sum() == pytest.approx(0.5, abs=0.06)
        assert row["high"] / row.sum() == pytest.approx(0.2, abs=0.06)


def test_growth_rank_orders_by_forecast_relative_to_current_value():
    features, potential = _growth_population()
    fitted = GradePolicy.from_config({}).fit(features, potential)
    grades = fitted.grade(features, potential)
    # two customers with the same current value: the one forecast to spend more ranks higher on growth
    row = features.iloc[[10, 10]].reset_index(drop=True)
    forecast = np.array([potential[10] * 0.5, potential[10] * 2.0])
    twin = fitted.grade(row, forecast)
    assert twin.loc[0, "value_rank"] == twin.loc[1, "value_rank"]
    assert twin.loc[0, "growth_rank"] < twin.loc[1, "growth_rank"]
    # the grade score still uses the forecast's own rank
    assert (grades["potential_rank"].notna()).all()
    np.testing.assert_array_equal(
        grades["score"].to_numpy(),
        GradePolicy.from_config({"matrix": {"potential_axis": "forecast"}})
        .fit(features, potential)
        .grade(features, potential)["score"]
        .to_numpy(),
    )
    # the forecast axis reports no growth rank
    forecast_policy = GradePolicy.from_config({"matrix": {"potential_axis": "forecast"}}).fit(
        features, potential
    )
    assert forecast_policy.grade(features, potential)["growth_rank"].isna().all()


def test_growth_reference_round_trips_and_is_batch_independent(tmp_path):
    features, potential = _growth_population(800)
    fitted = GradePolicy.from_config({}).fit(features, potential)
    document = fitted.to_dict()
    assert document["format_version"] == 2
    assert len(document["growth_reference"]["bands"]) == 10
    again = FittedPolicy.from_yaml(fitted.to_yaml())
    assert again == fitted
    full = fitted.grade(features, potential)
    pd.testing.assert_frame_equal(again.grade(features, potential), full)
    for row in (0, 17, 799):
        alone = again.grade(features.iloc[[row]], potential[[row]])
        pd.testing.assert_frame_equal(alone, full.iloc[[row]].reset_index(drop=True))
    broken = {**document, "growth_reference": {**document["growth_reference"], "bands": [None]}}
    with pytest.raises(ConfigError, match="1 bands"):
        FittedPolicy.from_dict(broken)
    with pytest.raises(ConfigError, match="no growth_reference"):
        FittedPolicy.from_dict({**document, "growth_reference": None})


def test_version_1_documents_still_read_with_the_forecast_axis():
    features, potential = _growth_population(500)
    fitted = GradePolicy.from_config({"matrix": {"potential_axis": "forecast"}}).fit(features, potential)
    document = fitted.to_dict()
    matrix = {
        k: v for k, v in document["policy"]["matrix"].items() if k not in ("potential_axis", "growth_bands")
    }
    old = {**document, "format_version": 1, "policy": {**document["policy"], "matrix": matrix}}
    old.pop("growth_reference")
    again = FittedPolicy.from_dict(old)
    assert again.policy.matrix.potential_axis == "forecast"
    pd.testing.assert_frame_equal(again.grade(features, potential), fitted.grade(features, potential))


def test_axis_potential_keeps_the_growth_axis_on_another_forecast():
    features, potential = _growth_population(1500)
    # the grade score on a scorer that repeats current value (a fallback such as past spend) ...
    repeat_value = features["spend_365d"].to_numpy() * 0.75
    fitted = GradePolicy.from_config({}).fit(features, repeat_value, axis_potential=potential)
    grades = fitted.grade(features, repeat_value, axis_potential=potential)
    # ... while the matrix keeps ranking the potential model's growth: the same cells as a policy fitted on it
    reference = GradePolicy.from_config({}).fit(features, potential).grade(features, potential)
    np.testing.assert_array_equal(grades["growth_rank"].to_numpy(), reference["growth_rank"].to_numpy())
    assert (matrix_table(grades).to_numpy() > 0).all()
    with pytest.raises(InputFileError, match="axis_potential: 3 values"):
        fitted.grade(features, repeat_value, axis_potential=np.ones(3))


# --------------------------------------------------------------------------------------------------------------
# policy.value_measure: revenue | margin (resolved when the experiment is loaded)

_MEASURE_EXPERIMENT = """
data:
  transactions:
    - path: t.csv
      columns: {{customer_id: id, timestamp: ts, amount: amt{cost}}}
cutoffs:
  calibration_end: 2024-01-31
features:
  windows: [30, 61]
{policy}
"""


def _load_measure(tmp_path: Path, *, cost: bool, policy: str = ""):
    from segml.config import load_experiment

    path = tmp_path / "exp.yaml"
    text = _MEASURE_EXPERIMENT.format(cost=", cost: c" if cost else "", policy=policy)
    path.write_text(text, encoding="utf-8")
    return load_experiment(path, root=tmp_path)


def test_value_measure_defaults_to_margin_when_a_cost_is_mapped(tmp_path):
    cfg = _load_measure(tmp_path, cost=True)
    policy = GradePolicy.from_config(cfg.policy)
    assert (policy.value_measure, policy.value_feature) == ("margin", "margin_61d")
    assert policy.to_dict()["value_measure"] == "margin"
    assert GradePolicy.from_config(policy.to_dict(), merge_defaults=False) == policy


def test_value_measure_defaults_to_revenue_without_cost(tmp_path):
    policy = GradePolicy.from_config(_load_measure(tmp_path, cost=False).policy)
    assert (policy.value_measure, policy.value_feature) == (None, "spend_61d")
    # the policy document is the one written before value_measure existed
    assert "value_measure" not in policy.to_dict()
    explicit = _load_measure(tmp_path, cost=False, policy="policy:\n  value_measure: revenue\n")
    assert GradePolicy.from_config(explicit.policy).value_feature == "spend_61d"


def test_value_measure_revenue_with_a_cost_and_explicit_feature(tmp_path):
    cfg = _load_measure(tmp_path, cost=True, policy="policy:\n  value_measure: revenue\n")
    assert GradePolicy.from_config(cfg.policy).value_feature == "spend_61d"
    cfg = _load_measure(tmp_path, cost=True, policy="policy:\n  value_feature: margin_30d\n")
    assert GradePolicy.from_config(cfg.policy).value_feature == "margin_30d"


def test_value_measure_margin_without_cost_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"policy\.value_measure: margin needs a 'cost' or 'margin' role"):
        _load_measure(tmp_path, cost=False, policy="policy:\n  value_measure: margin\n")
    with pytest.raises(ConfigError, match=r"policy\.value_feature: feature 'margin_61d' is not built"):
        _load_measure(tmp_path, cost=False, policy="policy:\n  value_feature: margin_61d\n")
    with pytest.raises(ConfigError, match=r"policy\.value_measure"):
        _load_measure(tmp_path, cost=True, policy="policy:\n  value_measure: profit\n")


def test_margin_value_measure_grades_on_margin():
    features, potential = _growth_population(600)
    rng = np.random.default_rng(3)
    # a margin that ranks customers differently from their spend
    features = features.assign(margin_365d=features["spend_365d"] * rng.uniform(-0.2, 0.5, len(features)))
    by_margin = GradePolicy.from_config({"value_measure": "margin", "value_feature": "margin_365d"})
    graded = by_margin.fit(features, potential).grade(features, potential)
    by_spend = GradePolicy.from_config({}).fit(features, potential).grade(features, potential)
    assert not graded["grade"].equals(by_spend["grade"])
    spend_only = features.drop(columns="margin_365d")
    with pytest.raises(InputFileError, match="margin_365d"):
        by_margin.fit(spend_only, potential)


def test_tafeng_grades_on_margin():
    """Ta Feng maps its line cost (ASSET): the policy's current value is margin over the longest window."""
    from segml.config import load_experiment

    root = Path(__file__).resolve().parents[1]
    cfg = load_experiment(root / "experiments" / "tafeng.yaml", root=root)
    assert cfg.data.transactions[0].columns["cost"] == "ASSET"
    policy = GradePolicy.from_config(cfg.policy)
    assert (policy.value_measure, policy.value_feature) == ("margin", "margin_365d")
