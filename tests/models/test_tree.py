"""Readable tree models on small synthetic feature tables with planted rules."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from segml.models.tree import (
    MAX_RULE_DEPTH,
    GradeRulesTree,
    SpendTree,
    default_tree_features,
    describe_feature,
    format_threshold,
)

N_CUSTOMERS = 1200


def planted_table(seed: int = 0) -> pd.DataFrame:
    """Feature-contract columns plus planted future spend and grades.

    Future spend: 3,000 for recent heavy spenders (spend_365d > 1,000 and recency_days <= 60), 400 for other
    heavy spenders, 150 for spend_365d in (200, 1,000], 10 below; multiplicative noise. Grades: A/B/C/D/E by
    the same cuts with 5 % of grades shuffled (so rules cannot be 100 % faithful). Never-bought customers
    (NaN recency) are included.
    """
    rng = np.random.default_rng(seed)
    spend_365d = np.exp(rng.uniform(np.log(5.0), np.log(5000.0), N_CUSTOMERS))
    recency = rng.uniform(1.0, 365.0, N_CUSTOMERS)
    never_bought = rng.random(N_CUSTOMERS) < 0.05
    spend_365d[never_bought] = 0.0
    recency[never_bought] = np.nan
    table = pd.DataFrame(
        {
            "customer_id": [f"{i:05d}" for i in range(N_CUSTOMERS)],
            "has_purchases": ~never_bought,
            "recency_days": recency,
            "frequency": rng.poisson(3.0, N_CUSTOMERS).astype(float),
            "spend_365d": spend_365d,
            "monetary_total": spend_365d * rng.uniform(1.0, 2.0, N_CUSTOMERS),
            "active_months_share": rng.uniform(0.0, 1.0, N_CUSTOMERS),
            "industry": rng.choice(["retail", "food"], N_CUSTOMERS),
        }
    )
    heavy = spend_365d > 1000
    recent = recency <= 60  # NaN compares False: never-bought customers are not recent
    level = np.select([heavy & recent, heavy, spend_365d > 200], [3000.0, 400.0, 150.0], 10.0)
    table["future_spend"] = level * rng.lognormal(0.0, 0.2, N_CUSTOMERS)
    grades = np.select(
        [heavy & recent, heavy, spend_365d > 200, recency <= 180], ["A", "B", "C", "D"], "E"
    ).astype(object)
    shuffled = rng.random(N_CUSTOMERS) < 0.05
    grades[shuffled] = rng.choice(list("ABCDE"), int(shuffled.sum()))
    table["grade"] = grades
    return table


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return planted_table()


@pytest.fixture(scope="module")
def spend_tree(table) -> SpendTree:
    return SpendTree(max_depth=3, random_state=0).fit(table, table["future_spend"])


@pytest.fixture(scope="module")
def grade_tree(table) -> GradeRulesTree:
    return GradeRulesTree(max_depth=4, random_state=0).fit(table, table["grade"])


def leaf_values_from_rules(rules: list[dict], frame: pd.DataFrame, payload: str) -> np.ndarray:
    """Apply JSON rules to raw feature values (missing -> ``missing_satisfies``); each row must match one."""
    matched = np.zeros(len(frame), dtype=int)
    result = np.empty(len(frame), dtype=object)
    for rule in rules:
        hit = np.ones(len(frame), dtype=bool)
        for condition in rule["conditions"]:
            x = frame[condition["feature"]].to_numpy(dtype=float)
            satisfied = x <= condition["threshold"] if condition["op"] == "<=" else x > condition["threshold"]
            hit &= np.where(np.isnan(x), condition["missing_satisfies"], satisfied)
        matched += hit
        result[hit] = rule[payload]
    assert (matched == 1).all(), "every customer must match exactly one rule"
    return result


# -- depth ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", [SpendTree, GradeRulesTree])
def test_depth_above_four_is_refused(model_class, table):
    target = table["future_spend"] if model_class is SpendTree else table["grade"]
    with pytest.raises(ValueError, match="max_depth"):
        model_class(max_depth=MAX_RULE_DEPTH + 1).fit(table, target)
    with pytest.raises(ValueError, match="max_depth"):
        model_class(max_depth=0).fit(table, target)
    model = model_class(max_depth=MAX_RULE_DEPTH).fit(table, target)
    assert 1 <= model.depth_ <= model.estimator_.get_depth() <= MAX_RULE_DEPTH


# -- SpendTree --------------------------------------------------------------------------------------------------


def test_spend_tree_default_features_exclude_labels_and_ids(spend_tree):
    assert spend_tree.features_ == [
        "recency_days",
        "frequency",
        "spend_365d",
        "monetary_total",
        "active_months_share",
    ]


def test_default_tree_features_drop_label_like_columns():
    frame = pd.DataFrame(
        {"customer_id": ["1"], "cutoff": [0.0], "future_orders": [1.0], "future_x": [2.0], "t_days": [3]}
    )
    assert default_tree_features(frame) == ["t_days"]


def test_spend_tree_predicts_leaf_mean_in_currency(spend_tree, table):
    predicted = spend_tree.predict(table)
    leaves = spend_tree.apply(table)
    leaf_means = table["future_spend"].groupby(leaves).transform("mean").to_numpy()
    np.testing.assert_allclose(predicted, leaf_means, rtol=1e-9)
    # the planted top segment (recent heavy spenders) gets the highest prediction
    top = (table["spend_365d"] > 1000) & (table["recency_days"] <= 60)
    assert predicted[top.to_numpy()].min() > predicted[~top.to_numpy()].max()
    assert predicted[top.to_numpy()].mean() == pytest.approx(3000.0 * np.exp(0.02), rel=0.1)


@pytest.mark.parametrize("target", ["log1p", "raw"])
def test_spend_tree_targets_keep_currency(target, table):
    model = SpendTree(max_depth=2, target=target, random_state=0).fit(table, table["future_spend"])
    assert model.target_ == target
    assert model.target_selection_ == {}
    leaves = model.apply(table)
    np.testing.assert_allclose(
        model.predict(table), table["future_spend"].groupby(leaves).transform("mean").to_numpy(), rtol=1e-9
    )


def test_auto_target_records_validation_gini(spend_tree):
    scores = spend_tree.target_selection_
    assert set(scores) == {"log1p", "raw"}
    assert all(-1.0 <= s <= 1.0 for s in scores.values())
    expected = "raw" if scores["raw"] > scores["log1p"] else "log1p"
    assert spend_tree.target_ == expected


def test_spend_rules_text_one_line_per_leaf(spend_tree):
    text = spend_tree.rules_text(currency="CNY")
    lines = text.splitlines()
    rules = spend_tree.rules_json()
    assert len(lines) == len(rules) == spend_tree.n_leaves_
    assert sorted(rule["leaf"] for rule in rules) == np.flatnonzero(spend_tree.node_feature_ < 0).tolist()
    pattern = re.compile(
        r"^IF .+ THEN expected future spend ≈ [\d,.]+ CNY \(n=[\d,]+, \d+\.\d % of customers\)$"
    )
    for line, rule in zip(lines, rules, strict=True):
        assert pattern.match(line), line
        assert f"n={rule['n']:,}," in line
    assert sum(rule["n"] for rule in rules) == N_CUSTOMERS
    assert sum(rule["share"] for rule in rules) == pytest.approx(1.0)
    values = [rule["value"] for rule in rules]
    assert values == sorted(values, reverse=True)


def test_spend_rules_json_conditions_reproduce_predict(spend_tree, table):
    rules = spend_tree.rules_json()
    from_rules = leaf_values_from_rules(rules, table, "value").astype(float)
    np.testing.assert_array_equal(from_rules, spend_tree.predict(table))
    for rule in rules:
        keys = [(c["feature"], c["op"]) for c in rule["conditions"]]
        assert len(keys) == len(set(keys)), "repeated bounds on one feature are merged"


def test_spend_tree_dict_round_trip_matches_scikit_learn(table):
    model = SpendTree(max_depth=4, target="raw", random_state=0).fit(table, table["future_spend"])
    data = json.loads(json.dumps(model.to_dict(), allow_nan=False))
    restored = SpendTree.from_dict(data)
    assert not hasattr(restored, "estimator_")
    filled = table.assign(recency_days=table["recency_days"].fillna(model.fill_values_["recency_days"]))
    np.testing.assert_array_equal(
        restored.predict(table), model.estimator_.predict(filled[model.features_].to_numpy())
    )
    assert restored.rules_json() == model.rules_json()
    assert restored.to_dict() == data


def test_spend_tree_dict_is_nested_tree(spend_tree):
    root = spend_tree.to_dict()["tree"]
    assert {"feature", "threshold", "left", "right", "value", "n"} <= set(root)
    assert root["n"] == N_CUSTOMERS
    assert root["left"]["n"] + root["right"]["n"] == root["n"]


def test_log1p_round_trip_same_leaves_as_scikit_learn(spend_tree, table):
    restored = SpendTree.from_dict(json.loads(json.dumps(spend_tree.to_dict())))
    filled = table.assign(recency_days=table["recency_days"].fillna(spend_tree.fill_values_["recency_days"]))
    np.testing.assert_array_equal(
        restored.apply(table), spend_tree.estimator_.apply(filled[spend_tree.features_].to_numpy())
    )
    np.testing.assert_array_equal(restored.predict(table), spend_tree.predict(table))


def test_spend_tree_is_deterministic(table):
    first = SpendTree(random_state=3).fit(table, table["future_spend"]).to_dict()
    second = SpendTree(random_state=3).fit(table, table["future_spend"]).to_dict()
    assert first == second


def test_spend_tree_errors(table):
    for unfitted in (SpendTree().predict, GradeRulesTree().predict, SpendTree().apply):
        with pytest.raises(NotFittedError):
            unfitted(table)
    with pytest.raises(NotFittedError):
        GradeRulesTree().rules_json()
    with pytest.raises(ValueError, match="target"):
        SpendTree(target="log").fit(table, table["future_spend"])
    with pytest.raises(ValueError, match="missing or infinite"):
        SpendTree().fit(table, table["future_spend"].where(table.index > 0))
    model = SpendTree(features=["spend_365d"]).fit(table, table["future_spend"])
    with pytest.raises(ValueError, match="lacks column"):
        model.predict(table.drop(columns=["spend_365d"]))


# -- wording ----------------------------------------------------------------------------------------------------


def test_rules_use_catalog_descriptions_of_any_window(table):
    model = SpendTree(max_depth=1, features=["spend_365d"], target="raw").fit(table, table["future_spend"])
    assert "IF net spend in the last 365 days " in model.rules_text()
    assert describe_feature("spend_45d") == "net spend in the last 45 days"
    assert describe_feature("industry_score") == "industry_score"  # not in the catalog: its own name


def test_range_on_one_feature_reads_as_one_clause(table):
    model = SpendTree(max_depth=2, features=["spend_365d"], target="raw", min_samples_leaf=50)
    model.fit(table, table["future_spend"])
    ranged = [rule for rule in model.rules_json() if len(rule["conditions"]) == 2]
    assert ranged, "a depth-2 tree on one feature has a leaf bounded on both sides"
    low, high = sorted(c["threshold"] for c in ranged[0]["conditions"])
    line = model._conditions_text(ranged[0]["conditions"])
    assert line == f"IF {describe_feature('spend_365d')} > {low:,.2f} and <= {high:,.2f}"


def test_threshold_rounding_by_kind():
    assert format_threshold("spend_365d", 1234.5678) == "1,234.57"
    assert format_threshold("recency_days", 44.7) == "44.5"
    assert format_threshold("recency_days", 45.2) == "45"
    assert format_threshold("frequency", 2.5) == "2.5"
    assert format_threshold("active_months_share", 0.4166) == "0.42"
    assert format_threshold("industry_score", 0.123456) == "0.1235"


def test_single_leaf_tree_reads_as_any_customer(table):
    model = SpendTree(max_depth=1, min_samples_leaf=0.9, target="raw").fit(table, table["future_spend"])
    assert model.n_leaves_ == 1
    assert model.rules_text().startswith("IF any customer THEN expected future spend ≈ ")
    np.testing.assert_allclose(model.predict(table), table["future_spend"].mean())


# -- GradeRulesTree ---------------------------------------------------------------------------------------------


def test_grade_fidelity_equals_independent_accuracy(grade_tree, table):
    predicted = grade_tree.predict(table)
    grades = table["grade"].to_numpy()
    assert grade_tree.fidelity_["accuracy"] == pytest.approx(float(np.mean(predicted == grades)), abs=0)
    assert grade_tree.fidelity_["n"] == N_CUSTOMERS
    for grade in "ABCDE":
        mask = grades == grade
        assert grade_tree.fidelity_["recall"][grade] == pytest.approx(
            np.mean(predicted[mask] == grade), abs=0
        )
    # 5 % of the grades were shuffled: the rules find the planted cuts but cannot be perfect
    assert 0.85 < grade_tree.fidelity_["accuracy"] < 1.0


def test_grade_tree_predicts_like_scikit_learn(grade_tree, table):
    filled = table.assign(recency_days=table["recency_days"].fillna(grade_tree.fill_values_["recency_days"]))
    expected = grade_tree.estimator_.predict(filled[grade_tree.features_].to_numpy())
    np.testing.assert_array_equal(grade_tree.predict(table), expected)


def test_grade_rules_text_and_json(grade_tree, table):
    rules = grade_tree.rules_json()
    lines = grade_tree.rules_text().splitlines()
    assert len(lines) == len(rules) == grade_tree.n_leaves_
    assert len({rule["leaf"] for rule in rules}) == len(rules)
    pattern = re.compile(r"^IF .+ THEN grade ([A-E]) \(n=[\d,]+, \d+ % of these customers are \1\)$")
    for line, rule in zip(lines, rules, strict=True):
        assert pattern.match(line), line
        assert sum(rule["counts"].values()) == rule["n"]
        assert rule["purity"] == pytest.approx(rule["counts"][rule["grade"]] / rule["n"])
    from_rules = leaf_values_from_rules(rules, table, "grade")
    np.testing.assert_array_equal(from_rules, grade_tree.predict(table))


def test_merged_leaves_predict_like_the_full_tree(grade_tree, table):
    full = GradeRulesTree(max_depth=4, merge_same_grade_leaves=False, random_state=0).fit(
        table, table["grade"]
    )
    assert full.n_leaves_ == full.estimator_.get_n_leaves()
    assert grade_tree.n_leaves_ < full.n_leaves_  # the planted data has same-grade sibling leaves
    np.testing.assert_array_equal(grade_tree.predict(table), full.predict(table))
    assert grade_tree.fidelity_ == full.fidelity_
    leaf = grade_tree.node_feature_ < 0
    for node in np.flatnonzero(~leaf):
        left, right = grade_tree.node_left_[node], grade_tree.node_right_[node]
        if leaf[left] and leaf[right]:
            assert grade_tree.node_grade_index_[left] != grade_tree.node_grade_index_[right]


def test_grade_tree_round_trip(grade_tree, table):
    data = json.loads(json.dumps(grade_tree.to_dict(), allow_nan=False))
    restored = GradeRulesTree.from_dict(data)
    np.testing.assert_array_equal(restored.predict(table), grade_tree.predict(table))
    assert restored.rules_text() == grade_tree.rules_text()
    assert restored.fidelity_ == grade_tree.fidelity_
    with pytest.raises(ValueError, match="not a SpendTree export"):
        SpendTree.from_dict(data)


def test_grade_tree_rejects_missing_grades(table):
    with pytest.raises(ValueError, match="missing grades"):
        GradeRulesTree().fit(table, table["grade"].where(table.index > 2))
