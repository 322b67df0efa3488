"""Value-ordered clustering on small synthetic feature tables with planted value groups."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from segml.models.clustering import (
    DEFAULT_CLUSTER_FEATURES,
    ValueClustering,
    feature_kind,
    fill_missing,
    fit_missing_fills,
    grades_by_cumulative_share,
)

# (size, net spend, repeat purchase days, recency days, active-months share, future spend) per planted group,
# most valuable first
PLANTED_GROUPS = [
    (40, 5000.0, 20.0, 10.0, 0.9, 3000.0),
    (80, 500.0, 5.0, 60.0, 0.4, 300.0),
    (160, 40.0, 0.5, 250.0, 0.08, 20.0),
]


def planted_feature_table(
    seed: int = 0, groups=PLANTED_GROUPS
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Feature-contract columns for well-separated groups (tight on the log scale), the group of each row
    (0 = most valuable) and a future spend per row."""
    rng = np.random.default_rng(seed)
    frames, group_ids, future = [], [], []
    for group, (size, spend, freq, recency, active, future_spend) in enumerate(groups):

        def around(level: float, n: int = size) -> np.ndarray:
            return np.expm1(rng.normal(np.log1p(level), 0.08, n))

        frames.append(
            pd.DataFrame(
                {
                    "recency_days": rng.normal(recency, recency * 0.08, size),
                    "frequency": around(freq),
                    "monetary_total": around(spend),
                    "monetary_mean": around(spend / (freq + 1)),
                    "spend_365d": around(spend * 0.6),
                    "active_months_share": np.clip(rng.normal(active, 0.02, size), 0, 1),
                    "t_days": recency + rng.normal(300.0, 10.0, size),
                }
            )
        )
        group_ids.append(np.full(size, group))
        future.append(around(future_spend))
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "customer_id", [f"{i:05d}" for i in range(len(table))])
    return table, np.concatenate(group_ids), np.concatenate(future)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One OpenMP/BLAS thread: the machine is shared, and small fits are faster without thread hand-offs."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def planted():
    return planted_feature_table()


@pytest.fixture(scope="module")
def fitted_kmeans(planted):
    table, _, future = planted
    return ValueClustering(method="kmeans", k_range=(2, 6), random_state=0).fit(table, future)


@pytest.fixture(scope="module")
def fitted_gmm(planted):
    table, _, _ = planted
    return ValueClustering(method="gmm", k_range=(2, 5), random_state=0).fit(table)


# -- grades from cumulative share ---------------------------------------------------------------------------


def test_grade_rule_k3_uses_midpoint_of_cumulative_share():
    # midpoints 0.04 (A: [0, .05)), 0.18 (B: [.05, .20)), 0.64 (D: [.50, .80))
    assert grades_by_cumulative_share([0.08, 0.20, 0.72]) == ["A", "B", "D"]


def test_grade_rule_k8_uses_midpoint_of_cumulative_share():
    shares = [0.02, 0.04, 0.10, 0.14, 0.20, 0.20, 0.15, 0.15]
    # cumulative ends .02 .06 .16 .30 .50 .70 .85 1.0 -> midpoints .01 .04 .11 .23 .40 .60 .775 .925
    assert grades_by_cumulative_share(shares) == ["A", "A", "B", "C", "C", "D", "D", "E"]


def test_grade_rule_boundary_midpoint_goes_to_lower_grade():
    # midpoints 0.25 and 0.75 against custom boundaries at 0.25 / 0.75
    assert grades_by_cumulative_share([0.5, 0.5], [0.25, 0.5, 0.25], ["X", "Y", "Z"]) == ["Y", "Z"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.001, max_value=1.0), min_size=1, max_size=12))
def test_any_k_maps_monotonically_into_a_to_e(sizes):
    grades = grades_by_cumulative_share(sizes)
    assert len(grades) == len(sizes)
    assert set(grades) <= set("ABCDE")
    assert grades == sorted(grades)  # more valuable cluster never gets a worse grade


def test_grade_rule_rejects_bad_shares():
    with pytest.raises(ValueError, match="grade shares"):
        grades_by_cumulative_share([0.5, 0.5], [0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="cluster shares"):
        grades_by_cumulative_share([])


# -- fitting on planted groups ------------------------------------------------------------------------------


@pytest.mark.parametrize("model_fixture", ["fitted_kmeans", "fitted_gmm"])
def test_recovers_planted_groups_in_value_order(model_fixture, planted, request):
    model = request.getfixturevalue(model_fixture)
    table, groups, _ = planted
    assert model.k_ == 3
    clusters = model.predict(table)
    assert adjusted_rand_score(groups, clusters) == 1.0
    # cluster 0 is the most valuable planted group, and so on
    assert (clusters == groups).all()
    assert np.all(np.diff(model.cluster_values_) < 0)


def test_selection_records_each_k_and_picks_best(fitted_kmeans, fitted_gmm):
    assert sorted(fitted_kmeans.selection_) == [2, 3, 4, 5, 6]
    assert fitted_kmeans.selection_criterion_ == "silhouette"
    assert max(fitted_kmeans.selection_, key=fitted_kmeans.selection_.get) == fitted_kmeans.k_
    assert fitted_gmm.selection_criterion_ == "bic"
    assert min(fitted_gmm.selection_, key=fitted_gmm.selection_.get) == fitted_gmm.k_


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_selection_picks_planted_k_for_five_groups(method):
    groups = [
        (30, 20000.0, 40.0, 5.0, 1.0, 0.0),
        (40, 3000.0, 12.0, 20.0, 0.7, 0.0),
        (60, 600.0, 4.0, 80.0, 0.4, 0.0),
        (80, 100.0, 1.0, 200.0, 0.15, 0.0),
        (100, 15.0, 0.0, 400.0, 0.02, 0.0),
    ]
    table, planted_groups, _ = planted_feature_table(seed=3, groups=groups)
    model = ValueClustering(method=method, k_range=(2, 8), random_state=1).fit(table)
    assert model.k_ == 5
    assert (model.predict(table) == planted_groups).all()


def test_value_is_mean_future_spend_when_y_given(fitted_kmeans, planted):
    table, groups, future = planted
    assert fitted_kmeans.value_source_ == "y"
    expected = np.array([future[groups == g].mean() for g in range(3)])
    np.testing.assert_allclose(fitted_kmeans.cluster_values_, expected, rtol=1e-12)
    np.testing.assert_allclose(fitted_kmeans.predict_value(table), expected[groups], rtol=1e-12)


def test_value_is_mean_value_column_without_y(fitted_gmm, planted):
    table, groups, _ = planted
    assert fitted_gmm.value_source_ == "monetary_total"
    expected = table.groupby(groups)["monetary_total"].mean().to_numpy()
    np.testing.assert_allclose(fitted_gmm.cluster_values_, expected, rtol=1e-12)


def test_grades_follow_value_order(fitted_kmeans, planted):
    table, _, _ = planted
    # sizes 40/80/160 of 280: midpoints .071 (B), .286 (C), .714 (D)
    assert fitted_kmeans.cluster_grades_ == ["B", "C", "D"]
    clusters = fitted_kmeans.predict(table)
    grades = fitted_kmeans.predict_grade(table)
    assert (grades == np.array(["B", "C", "D"], dtype=object)[clusters]).all()


def test_ordering_by_y_can_differ_from_current_value(planted):
    """Value order follows y when given: reversing future spend reverses the cluster numbering."""
    table, groups, _ = planted
    reversed_future = np.array([0.0, 100.0, 200.0])[groups]
    model = ValueClustering(k_range=(3, 3), random_state=0).fit(table, reversed_future)
    assert (model.predict(table) == 2 - groups).all()
    assert model.cluster_grades_ == sorted(model.cluster_grades_)


# -- profile --------------------------------------------------------------------------------------------------


def test_profile_sums_and_columns(fitted_kmeans, planted):
    table, groups, future = planted
    profile = fitted_kmeans.profile(table, pd.Series(future, name="future_spend"))
    assert list(profile["cluster"]) == [0, 1, 2]
    assert profile["size"].sum() == len(table)
    assert profile["share_customers"].sum() == pytest.approx(1.0)
    assert profile["share_value"].sum() == pytest.approx(1.0)
    assert profile["share_future_spend"].sum() == pytest.approx(1.0)
    for column in ("mean_monetary_total", "median_monetary_total", "mean_recency_days", "mean_frequency"):
        assert column in profile
    np.testing.assert_allclose(
        profile["median_monetary_total"], table.groupby(groups)["monetary_total"].median().to_numpy()
    )
    np.testing.assert_allclose(profile["mean_future_spend"], fitted_kmeans.cluster_values_)
    assert list(profile["grade"]) == fitted_kmeans.cluster_grades_


def test_profile_keeps_clusters_absent_from_x(fitted_kmeans, planted):
    table, groups, _ = planted
    profile = fitted_kmeans.profile(table[groups == 2], y=np.ones(int((groups == 2).sum())))
    assert list(profile["size"]) == [0, 0, int((groups == 2).sum())]
    assert profile["share_y"].tolist()[2] == pytest.approx(1.0)
    assert np.isnan(profile["mean_y"].iloc[0])


# -- export and determinism -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model_fixture", ["fitted_kmeans", "fitted_gmm"])
def test_to_dict_json_round_trip_predicts_identically(model_fixture, planted, request):
    model = request.getfixturevalue(model_fixture)
    table, _, _ = planted
    rng = np.random.default_rng(5)
    # fresh customers between the groups test more than the training points
    fresh = table.sample(frac=1.0, random_state=1).reset_index(drop=True)
    fresh["monetary_total"] = fresh["monetary_total"] * rng.uniform(0.05, 20.0, len(fresh))
    fresh.loc[::7, "recency_days"] = np.nan
    data = json.loads(json.dumps(model.to_dict(), allow_nan=False))
    restored = ValueClustering.from_dict(data)
    for frame in (table, fresh):
        np.testing.assert_array_equal(restored.predict(frame), model.predict(frame))
        np.testing.assert_array_equal(restored.predict_grade(frame), model.predict_grade(frame))
        np.testing.assert_array_equal(restored.predict_value(frame), model.predict_value(frame))
    assert restored.selection_ == model.selection_
    assert restored.to_dict() == data


def test_gmm_export_holds_mixture_parameters(fitted_gmm):
    clusters = fitted_gmm.to_dict()["clusters"]
    assert set(clusters) == {"weights", "means", "covariances", "precisions_cholesky"}
    assert len(clusters["weights"]) == fitted_gmm.n_clusters_


def test_gmm_assignment_matches_scikit_learn(planted):
    """Our JSON-side mixture density reproduces GaussianMixture.predict on the same parameters."""
    from sklearn.mixture import GaussianMixture

    table, _, _ = planted
    model = ValueClustering(method="gmm", k_range=(4, 4), n_init=1, random_state=2).fit(table)
    params = model.cluster_params_
    mixture = GaussianMixture(n_components=len(params["weights"]), covariance_type="full")
    mixture.weights_, mixture.means_ = params["weights"], params["means"]
    mixture.covariances_, mixture.precisions_cholesky_ = params["covariances"], params["precisions_cholesky"]
    scaled = model._scaled(table, "test")
    np.testing.assert_array_equal(mixture.predict(scaled), model.predict(table))


def test_same_seed_same_model(planted):
    table, _, future = planted
    first = ValueClustering(k_range=(2, 4), random_state=7).fit(table, future).to_dict()
    second = ValueClustering(k_range=(2, 4), random_state=7).fit(table, future).to_dict()
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


# -- missing values, features and errors ------------------------------------------------------------------


def test_never_bought_customers_get_stated_imputation(planted):
    table, _, _ = planted
    with_new = table.copy()
    with_new.loc[:4, ["recency_days", "t_days"]] = np.nan
    with_new.loc[
        :4, ["frequency", "monetary_total", "monetary_mean", "spend_365d", "active_months_share"]
    ] = 0.0
    model = ValueClustering(k_range=(3, 3), random_state=0).fit(with_new)
    assert model.fill_values_["recency_days"] == table["recency_days"].iloc[5:].max()
    assert model.fill_values_["t_days"] == 0.0
    # never-bought customers land in the least valuable cluster
    assert (model.predict(with_new.loc[:4]) == model.n_clusters_ - 1).all()


def test_fill_rules_per_kind():
    frame = pd.DataFrame(
        {
            "recency_days": [1.0, 9.0, np.nan],
            "spend_90d": [np.nan, 5.0, 7.0],
            "returns_rate": [np.nan, 0.5, 0.1],
            "industry_score": [1.0, 3.0, np.nan],
        }
    )
    fills = fit_missing_fills(frame, list(frame.columns))
    assert fills == {"recency_days": 9.0, "spend_90d": 0.0, "returns_rate": 0.0, "industry_score": 2.0}
    filled = fill_missing(frame, fills)
    assert np.isfinite(filled).all()
    assert feature_kind("spend_90d") == "money" and feature_kind("orders_30d") == "count"
    assert feature_kind("t_days") == "days" and feature_kind("industry_score") == "numeric"


def test_default_features_are_contract_columns(fitted_kmeans):
    assert fitted_kmeans.features_ == list(DEFAULT_CLUSTER_FEATURES)
    assert set(fitted_kmeans.log_features_) == {"frequency", "monetary_total", "monetary_mean", "spend_365d"}


def test_custom_features_and_missing_column_error(planted):
    table, groups, _ = planted
    model = ValueClustering(features=["monetary_total", "frequency"], k_range=(3, 3), random_state=0).fit(
        table
    )
    assert (model.predict(table) == groups).all()
    with pytest.raises(ValueError, match="lacks column"):
        model.predict(table.drop(columns=["frequency"]))


def test_invalid_parameters_raise():
    table, _, _ = planted_feature_table()
    with pytest.raises(ValueError, match="bic"):
        ValueClustering(method="kmeans", selection="bic").fit(table)
    with pytest.raises(ValueError, match="k_range"):
        ValueClustering(k_range=(1, 3)).fit(table)
    with pytest.raises(ValueError, match="method"):
        ValueClustering(method="dbscan").fit(table)
    with pytest.raises(ValueError, match="y has"):
        ValueClustering().fit(table, np.ones(3))


@pytest.mark.parametrize("method", ["predict", "predict_grade", "predict_value", "profile", "to_dict"])
def test_use_before_fit_raises(method, planted):
    model = ValueClustering()
    with pytest.raises(NotFittedError):
        getattr(model, method)(planted[0]) if method != "to_dict" else model.to_dict()


def test_k_range_capped_by_distinct_rows():
    table, _, _ = planted_feature_table()
    tiny = pd.concat([table.iloc[[0]], table.iloc[[-1]]] * 3, ignore_index=True)
    model = ValueClustering(k_range=(2, 5), random_state=0).fit(tiny)
    assert sorted(model.selection_) == [2]
    assert model.k_ == 2
    with pytest.raises(ValueError, match="distinct"):
        ValueClustering(k_range=(3, 5)).fit(tiny)
