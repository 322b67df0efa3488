"""Explanations: TreeSHAP contributions, global importance, plain-words reason codes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from segml.config import FeatureConfig
from segml.errors import InputFileError
from segml.explain import (
    feature_contributions,
    global_importance,
    reason_codes,
    reference_stats,
    shap_summary_plot,
    with_reasons,
)

LGB_PARAMS = {
    "num_threads": 1,
    "deterministic": True,
    "seed": 7,
    "verbose": -1,
    "num_leaves": 8,
    "min_data_in_leaf": 10,
}


def make_customers(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": [f"{i:05d}" for i in range(n)],
            "has_purchases": True,
            "spend_90d": rng.lognormal(5.0, 1.0, n),
            "recency_days": rng.integers(0, 400, n).astype(float),
            "active_months_share": rng.integers(0, 13, n) / 12,
            "repurchase": (rng.random(n) < 0.5).astype(float),
            "industry": rng.choice(["retail", "manufacturing", "services"], n),
        }
    )


def model_input(features: pd.DataFrame) -> pd.DataFrame:
    X = features.drop(columns=["customer_id", "has_purchases"])
    X["industry"] = pd.Categorical(X["industry"], categories=["manufacturing", "retail", "services"])
    return X


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return make_customers(600, seed=1)


@pytest.fixture(scope="module")
def model(customers) -> lgb.Booster:
    rng = np.random.default_rng(2)
    retail = (customers["industry"] == "retail").to_numpy()
    future = (
        customers["spend_90d"] * (1 + customers["repurchase"]) * np.exp(-customers["recency_days"] / 200)
        + 40 * customers["active_months_share"]
        + 30 * retail
        + rng.gamma(1.0, 5.0, len(customers))
    )
    params = {**LGB_PARAMS, "objective": "tweedie"}
    return lgb.train(params, lgb.Dataset(model_input(customers), future), num_boost_round=40)


@pytest.fixture(scope="module")
def contributions(model, customers) -> pd.DataFrame:
    return feature_contributions(model, model_input(customers))


# --------------------------------------------------------------------------------------------------------------
# Contributions and importance


def test_pred_contrib_sums_to_the_raw_score(model, customers, contributions):
    X = model_input(customers)
    assert list(contributions.columns) == [*X.columns, "bias"]
    np.testing.assert_allclose(contributions.sum(axis=1), model.predict(X, raw_score=True), rtol=0, atol=1e-9)
    # tweedie: the raw score is the log of the prediction
    np.testing.assert_allclose(np.exp(contributions.sum(axis=1)), model.predict(X), rtol=1e-9)


def test_pred_contrib_matches_shap_tree_explainer(model, customers, contributions):
    import shap

    X = model_input(customers).head(50)
    values = shap.TreeExplainer(model).shap_values(X)
    np.testing.assert_allclose(contributions.drop(columns="bias").head(50).to_numpy(), values, atol=1e-9)


def test_feature_contributions_accepts_sklearn_wrappers(customers):
    X = model_input(customers)
    y = customers["spend_90d"].to_numpy()
    regressor = lgb.LGBMRegressor(n_estimators=10, **LGB_PARAMS).fit(X, y)
    contrib = feature_contributions(regressor, X)
    np.testing.assert_allclose(contrib.sum(axis=1), regressor.predict(X, raw_score=True), atol=1e-9)
    with pytest.raises(TypeError, match="LightGBM Booster"):
        feature_contributions(object(), X)


def test_global_importance(contributions):
    table = global_importance(contributions)
    assert "bias" not in set(table["feature"])
    assert table["mean_abs_contribution"].is_monotonic_decreasing
    assert table["share"].sum() == pytest.approx(1.0)
    top = table.iloc[0]
    assert top["mean_abs_contribution"] == pytest.approx(contributions[top["feature"]].abs().mean())
    assert top["mean_contribution"] == pytest.approx(contributions[top["feature"]].mean())


@pytest.mark.parametrize("plot_type", ["dot", "bar"])
def test_shap_summary_plot_returns_axes(model, customers, plot_type):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes

    fig, ax = plt.subplots()
    returned = shap_summary_plot(
        model, model_input(customers).head(200), ax=ax, plot_type=plot_type, max_display=5
    )
    assert isinstance(returned, Axes)
    labels = [t.get_text() for t in returned.get_yticklabels()]
    assert any("spend_90d" in label for label in labels)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------------
# Reference statistics


def test_reference_stats_over_purchasers_and_json_able():
    features = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "has_purchases": [True, True, True, False],
            "spend_90d": [10.0, 20.0, 30.0, 0.0],
            "interpurchase_mean_days": [np.nan, np.nan, np.nan, np.nan],
            "industry": ["x", "y", "x", "z"],
        }
    )
    reference = reference_stats(features)
    assert reference["spend_90d"] == 20.0
    assert reference["interpurchase_mean_days"] is None
    assert "industry" not in reference and "customer_id" not in reference
    assert json.loads(json.dumps(reference)) == reference


# --------------------------------------------------------------------------------------------------------------
# Reason codes: ordering


def _tiny(contrib_rows: list[list[float]], names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    contrib = pd.DataFrame(contrib_rows, columns=names).assign(bias=1.0)
    features = pd.DataFrame({"customer_id": [f"c{i}" for i in range(len(contrib))]})
    for name in names:
        features[name] = 1.0
    return contrib, features


def test_top3_ordering_follows_the_customers_direction():
    names = ["spend_90d", "recency_days", "orders_90d", "repurchase", "active_months_share"]
    contrib, features = _tiny(
        [
            [0.5, -0.9, 0.2, 0.7, 0.0],  # sum +0.5: raises first (0.7, 0.5, 0.2)
            [0.1, -0.9, -0.2, 0.3, 0.0],  # sum -0.7: lowers first (-0.9, -0.2), then the largest raise (0.3)
            [0.0, 0.0, 0.0, 0.4, 0.0],  # one non-zero contribution: one reason
        ],
        names,
    )
    reasons = reason_codes(contrib, features, reference={})
    assert list(reasons.columns) == [
        "customer_id",
        *[f"reason_{i}{suffix}" for i in (1, 2, 3) for suffix in ("", "_feature", "_contribution")],
    ]
    features_by_rank = (
        reasons[["reason_1_feature", "reason_2_feature", "reason_3_feature"]].to_numpy().tolist()
    )
    assert features_by_rank[0] == ["repurchase", "spend_90d", "orders_90d"]
    assert features_by_rank[1] == ["recency_days", "orders_90d", "repurchase"]
    assert features_by_rank[2] == ["repurchase", None, None]
    assert reasons.loc[0, "reason_1_contribution"] == 0.7
    assert reasons.loc[1, "reason_1_contribution"] == -0.9
    assert math.isnan(reasons.loc[2, "reason_2_contribution"])
    assert reasons.loc[2, "reason_2"] is None
    assert reasons.loc[1, "reason_1"].endswith("(lowers predicted value)")
    assert reasons.loc[1, "reason_3"].endswith("(raises predicted value)")


def test_other_directions():
    names = ["spend_90d", "recency_days", "orders_90d"]
    contrib, features = _tiny([[0.5, -0.9, 0.2], [0.5, -0.9, 0.2]], names)
    by_magnitude = reason_codes(contrib, features, {}, direction="magnitude")
    assert list(by_magnitude.loc[0, ["reason_1_feature", "reason_2_feature", "reason_3_feature"]]) == [
        "recency_days",
        "spend_90d",
        "orders_90d",
    ]
    raises = reason_codes(contrib, features, {}, direction="raises", top_k=1)
    assert list(raises["reason_1_feature"]) == ["spend_90d", "spend_90d"]
    per_customer = reason_codes(contrib, features, {}, direction=np.array([1, -1]), top_k=1)
    assert list(per_customer["reason_1_feature"]) == ["spend_90d", "recency_days"]
    quiet = reason_codes(contrib, features, {}, top_k=1, sign_words=False)
    assert "predicted value" not in quiet.loc[0, "reason_1"]


def test_reason_codes_on_a_lightgbm_model(model, customers, contributions):
    reference = reference_stats(customers)
    reasons = reason_codes(contributions, customers, reference)
    assert list(reasons["customer_id"]) == list(customers["customer_id"])
    values = contributions.drop(columns="bias")
    for row in range(40):  # independent, slow reference implementation
        c = values.iloc[row]
        direction = 1.0 if c.sum() >= 0 else -1.0
        nonzero = c[c != 0]
        preferred = nonzero[nonzero * direction > 0].abs().sort_values(ascending=False, kind="stable")
        other = nonzero[nonzero * direction < 0].abs().sort_values(ascending=False, kind="stable")
        expected = [*preferred.index, *other.index][:3]
        got = [reasons.loc[row, f"reason_{i}_feature"] for i in (1, 2, 3)]
        assert got[: len(expected)] == expected
        for i, feature in enumerate(expected, start=1):
            assert reasons.loc[row, f"reason_{i}_contribution"] == c[feature]
            assert isinstance(reasons.loc[row, f"reason_{i}"], str)
    spend = reasons[reasons["reason_1_feature"] == "spend_90d"]
    assert (
        spend["reason_1"].str.contains(r"the median in the last 90 days|in the last 90 days, median is").all()
    )


# --------------------------------------------------------------------------------------------------------------
# Reason codes: wording per feature kind


WORDING_CASES = [
    ("spend_90d", 310.0, 100.0, 1.0, "spent 3.1× the median in the last 90 days (raises predicted value)"),
    ("spend_30d", 0.0, 50.0, -1.0, "spent 0 in the last 30 days, median is 50 (lowers predicted value)"),
    (
        "monetary_total",
        12_500.0,
        0.0,
        1.0,
        "net spend to date is 12,500, median is 0 (raises predicted value)",
    ),
    ("recency_days", 212.0, 48.0, -1.0, "last purchase 212 days ago, median is 48 (lowers predicted value)"),
    (
        "orders_90d",
        7.0,
        2.0,
        1.0,
        "bought on 7 days in the last 90 days, median is 2 (raises predicted value)",
    ),
    (
        "active_months_share",
        0.75,
        0.5,
        1.0,
        "active in 9 of the last 12 months, median is 6 (raises predicted value)",
    ),
    ("returns_rate", 0.12, 0.0, -1.0, "returned 12% of gross spend, median is 0% (lowers predicted value)"),
    ("repurchase", 1.0, 1.0, 1.0, "has bought again after the first purchase (raises predicted value)"),
    ("repurchase", 0.0, 1.0, -1.0, "has not bought again yet (lowers predicted value)"),
    (
        "trend_ratio",
        math.log(2.3),
        0.0,
        1.0,
        "spend in the last 90 days is 2.3× the 90 days before (raises predicted value)",
    ),
    (
        "churn_risk_ratio",
        3.2,
        1.1,
        -1.0,
        "time since last purchase is 3.2× the usual gap between purchases, median is 1.1× (lowers predicted value)",
    ),
    (
        "interpurchase_mean_days",
        30.0,
        45.0,
        1.0,
        "buys every 30 days on average, median is 45 (raises predicted value)",
    ),
    ("seasonality_index", 1.5, 1.0, 1.0, "seasonality index: 1.5, median is 1 (raises predicted value)"),
]


@pytest.mark.parametrize(("feature", "value", "median", "contribution", "expected"), WORDING_CASES)
def test_wording_per_feature_kind(feature, value, median, contribution, expected, monkeypatch):
    monkeypatch.setattr("segml.explain._feature_descriptions", lambda names: {})
    features = pd.DataFrame({"customer_id": ["c0"], feature: [value]})
    contrib = pd.DataFrame({feature: [contribution], "bias": [0.0]})
    reasons = reason_codes(contrib, features, {feature: median}, top_k=1)
    assert reasons.loc[0, "reason_1"] == expected


def test_wording_of_categories_missing_values_and_spec():
    features = pd.DataFrame(
        {
            "customer_id": ["c0", "c1", "c2"],
            "industry": ["retail", None, "retail"],
            "interpurchase_mean_days": [np.nan, 10.0, 12.0],
            "active_months_share": [0.5, 0.5, 1.0],
        }
    )
    contrib = pd.DataFrame(
        {
            "industry": [0.3, -0.2, 0.3],
            "interpurchase_mean_days": [0.1, 0.0, 0.0],
            "active_months_share": [0.0, 0.0, 0.1],
        }
    )
    reasons = reason_codes(
        contrib,
        features,
        {"interpurchase_mean_days": 20.0, "active_months_share": 0.5},
        feature_config=FeatureConfig(active_months=6),
    )
    assert reasons.loc[0, "reason_1"] == "industry = retail (raises predicted value)"
    assert reasons.loc[1, "reason_1"] == "industry unknown (lowers predicted value)"
    assert reasons.loc[0, "reason_2"].startswith("no value for ")
    assert (
        reasons.loc[2, "reason_2"] == "active in 6 of the last 6 months, median is 3 (raises predicted value)"
    )


def test_feature_descriptions_are_used_for_unknown_features(monkeypatch):
    monkeypatch.setattr(
        "segml.explain._feature_descriptions", lambda names: {"visits_30d": "web visits in the last 30 days"}
    )
    features = pd.DataFrame({"customer_id": ["c0"], "visits_30d": [12.0]})
    contrib = pd.DataFrame({"visits_30d": [0.2]})
    reasons = reason_codes(contrib, features, {"visits_30d": 3.0}, top_k=1, sign_words=False)
    assert reasons.loc[0, "reason_1"] == "web visits in the last 30 days: 12, median is 3"


def test_missing_values_are_worded_with_the_catalog_description_of_any_window():
    features = pd.DataFrame({"customer_id": ["c0"], "spend_45d": [np.nan], "visits_30d": [np.nan]})
    contrib = pd.DataFrame({"spend_45d": [0.2], "visits_30d": [0.1]})
    reasons = reason_codes(contrib, features, {}, top_k=2, sign_words=False)
    assert reasons.loc[0, "reason_1"] == "no value for net spend in the last 45 days"
    assert reasons.loc[0, "reason_2"] == "no value for visits 30d"  # not in the catalog: its own name


def test_bad_inputs_are_reported():
    features = pd.DataFrame({"customer_id": ["c0", "c1"], "spend_90d": [1.0, 2.0]})
    with pytest.raises(InputFileError, match="missing column 'recency_days'"):
        reason_codes(pd.DataFrame({"recency_days": [0.1, 0.2]}), features, {})
    with pytest.raises(InputFileError, match="1 rows for a feature table of 2 rows"):
        reason_codes(pd.DataFrame({"spend_90d": [0.1]}), features, {})


def test_with_reasons_stores_reasons_next_to_grades():
    grades = pd.DataFrame({"customer_id": ["a", "b"], "grade": ["A", "B"]})
    reasons = pd.DataFrame({"customer_id": ["a", "b"], "reason_1": ["x", "y"]})
    assert list(with_reasons(grades, reasons).columns) == ["customer_id", "grade", "reason_1"]
    with pytest.raises(InputFileError, match="does not match"):
        with_reasons(grades, reasons.iloc[::-1])


def test_reason_codes_are_vectorised_on_200k_rows():
    n, n_features = 200_000, 30
    rng = np.random.default_rng(5)
    names = [f"spend_{w}d" for w in (30, 90, 180, 365)] + [f"orders_{w}d" for w in (30, 90, 180, 365)]
    names += ["recency_days", "active_months_share", "repurchase", "returns_rate", "trend_ratio"]
    names += [f"extra_{i}" for i in range(n_features - len(names))]
    features = pd.DataFrame(rng.gamma(2.0, 50.0, (n, len(names))), columns=names)
    features["active_months_share"] = rng.integers(0, 13, n) / 12
    features["repurchase"] = (rng.random(n) < 0.5).astype(float)
    features.insert(0, "customer_id", np.arange(n).astype(str))
    contrib = pd.DataFrame(rng.normal(0.0, 1.0, (n, len(names))), columns=names)
    reasons = reason_codes(contrib, features, reference_stats(features))
    assert len(reasons) == n
    assert reasons["reason_3"].notna().all()
    row = 12_345
    top = contrib.iloc[row].abs().sort_values(ascending=False)
    assert reasons.loc[row, "reason_1_feature"] in set(top.index)


def test_scoring_imports_need_neither_shap_nor_matplotlib():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["shap"] = None          # any import of these now fails
        sys.modules["matplotlib"] = None
        import pandas as pd
        from segml.policy import GradePolicy
        from segml.explain import reason_codes, feature_contributions, reference_stats
        features = pd.DataFrame({"customer_id": ["a"], "spend_90d": [200.0]})
        out = reason_codes(pd.DataFrame({"spend_90d": [0.4]}), features, {"spend_90d": 100.0})
        assert out.loc[0, "reason_1"].startswith("spent 2.0× the median"), out.loc[0, "reason_1"]
        GradePolicy.from_config({})
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_reason_codes_do_not_depend_on_the_batch(customers, contributions):
    reference = reference_stats(customers)
    full = reason_codes(contributions, customers, reference)
    for row in (0, 17, 599):
        alone = reason_codes(contributions.iloc[[row]], customers.iloc[[row]], reference)
        pd.testing.assert_frame_equal(alone, full.iloc[[row]].reset_index(drop=True))
