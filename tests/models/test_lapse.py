"""Recency calibration of the potential forecast (segml.models.lapse)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from test_potential import planted_data  # same module object pytest collected (rootdir-prepend import)

from segml.config import FeatureConfig
from segml.features import build_features
from segml.models.lapse import choose_lapse, lapse_factors
from segml.models.potential import PotentialValueModel


def _fold(n: int, seed: int, lapse_effect: bool) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """A validation fold whose forecast ranks well. With ``lapse_effect`` it keeps a floor under every customer
    (as a booster that never reaches zero does), so the long-lapsed, who realise almost nothing, are
    over-forecast; without it the forecast is the truth's mean."""
    rng = np.random.default_rng(seed)
    recency = rng.integers(0, 365, n).astype(float)
    mean = rng.gamma(2.0, 50.0, n) * np.exp(-recency / 60.0) * 3.0
    predicted = mean + 40.0 if lapse_effect else mean
    actual = rng.poisson(mean / 25.0) * 25.0
    features = pd.DataFrame({"customer_id": [f"C{i:05d}" for i in range(n)], "recency_days": recency})
    return features, actual.astype(float), predicted


def test_overforecast_lapsed_bands_are_pulled_down_and_adopted():
    features, actual, predicted = _fold(20_000, 1, lapse_effect=True)
    state = choose_lapse(features, actual, predicted)
    assert state["adopted"]
    factors = np.asarray(state["factors"])
    assert np.all(np.diff(factors) <= 1e-12), "a longer lapse never gets a higher factor"
    assert factors.min() > 0 and factors[-1] < factors[0]
    assert factors[-1] < 0.5 < factors[0] + 1e-9
    check = state["check"]
    assert check["cross_fitted"]["decile_mape"] < check["without"]["decile_mape"]
    assert check["cross_fitted"]["gini"] >= check["without"]["gini"] - 0.01
    json.dumps(state)  # JSON state


def test_calibrated_forecast_is_left_alone():
    features, actual, predicted = _fold(20_000, 2, lapse_effect=False)
    state = choose_lapse(features, actual, predicted)
    # either not adopted, or the factors stay close to 1 (no band is pulled down by much)
    assert not state["adopted"] or min(state["factors"]) > 0.85


def test_rows_without_a_purchase_keep_their_forecast():
    features, actual, predicted = _fold(5_000, 3, lapse_effect=True)
    state = choose_lapse(features, actual, predicted)
    scored = pd.DataFrame({"recency_days": [np.nan, 0.0, 400.0]})
    factors = lapse_factors(state, scored)
    assert factors[0] == 1.0
    assert factors[2] <= factors[1]
    assert np.all(lapse_factors({**state, "adopted": False}, scored) == 1.0)
    assert np.all(lapse_factors(None, scored) == 1.0)


def test_too_small_a_fold_is_not_calibrated():
    features, actual, predicted = _fold(10, 4, lapse_effect=True)
    assert choose_lapse(features, actual, predicted)["adopted"] is False


SPEC = FeatureConfig(windows=[30, 90])


@pytest.fixture(scope="module")
def adopted_model():
    transactions, _ = planted_data(400, "2023-01-01", "2024-12-31", seed=5, peak_factor=1.0)
    end = dt.date(2024, 6, 30)
    model = PotentialValueModel(180, objective="tweedie", max_estimators=60, blend="none").fit(
        transactions, end, SPEC
    )
    features = build_features(transactions, end, SPEC)
    # a planted calibration: the longest-lapsed band at a third of the forecast
    model.params_["lapse"] = {
        "adopted": True,
        "centres": [30.0, 90.0],
        "factors": [1.0, 1.0 / 3.0],
        "check": None,
    }
    return model, features


def test_model_applies_the_factors_round_trips_and_explains_exactly(adopted_model):
    model, features = adopted_model
    predicted = model.predict(features)
    state = model.params_.pop("lapse")
    plain = model.predict(features)
    model.params_["lapse"] = state
    recency = features["recency_days"].to_numpy(float)
    lapsed = recency >= 90  # flat beyond the last centre
    assert lapsed.any()
    np.testing.assert_allclose(predicted[lapsed], plain[lapsed] / 3.0)
    np.testing.assert_allclose(predicted[recency <= 30], plain[recency <= 30])
    between = (recency > 30) & (recency < 90)
    assert np.all((predicted[between] < plain[between]) & (predicted[between] > plain[between] / 3.0))
    restored = PotentialValueModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_array_equal(restored.predict(features), predicted)
    buyers = predicted > 0
    contrib = restored.predict_contrib(features)
    np.testing.assert_allclose(contrib.sum(axis=1)[buyers], np.log(predicted[buyers]), atol=1e-9)


def test_fit_records_the_lapse_decision(adopted_model):
    transactions, _ = planted_data(400, "2023-01-01", "2024-12-31", seed=5, peak_factor=1.0)
    model = PotentialValueModel(180, objective="tweedie", max_estimators=60).fit(
        transactions, dt.date(2024, 6, 30), SPEC
    )
    state = model.params_["lapse"]
    assert set(state) >= {"adopted", "centres", "factors", "check"}
    off = PotentialValueModel(180, objective="tweedie", max_estimators=60, lapse="none")
    assert off.get_params()["lapse"] == "none"
