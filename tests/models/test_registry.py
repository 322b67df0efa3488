"""The model-family registry and interface: every family builds, fits, scores through ``predict_value`` and
comes back from its JSON state through ``load_model``. The potential model's own round trip is in
test_potential.py (it needs a lattice fit)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from segml.config import FeatureConfig
from segml.datasets.synthetic import SynthSpec, generate
from segml.features import NUMERIC_FEATURES, training_frame
from segml.models.base import ModelFamily, TrainingInput
from segml.models.registry import (
    FAMILIES,
    build_family,
    config_key,
    family,
    family_names,
    load_model,
    model_names,
    money_models,
)

SPEC = FeatureConfig()
CUTOFF = dt.date(2025, 6, 30)
HORIZON = 180


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Synthetic customers who bought by the cutoff, with their spend over the next HORIZON days."""
    data = generate(SynthSpec(n_customers=400, seed=3))
    transactions = data.transactions.rename(columns={"order_ts": "timestamp"})
    table = training_frame(transactions, [CUTOFF], HORIZON, SPEC)
    table = table[table["has_purchases"]].reset_index(drop=True)
    return table.assign(target=table["future_spend"].clip(lower=0))


def test_families_and_models_in_order():
    assert family_names() == ("baselines", "clustering", "tree", "potential")
    assert model_names() == ("rfm", "rfm_sum", "past_spend", "btyd", "clustering", "spend_tree", "potential")
    assert money_models() == {
        "rfm": False,
        "rfm_sum": False,
        "past_spend": True,
        "btyd": True,
        "clustering": True,
        "spend_tree": True,
        "potential": True,
    }
    assert {name: spec.fit_input for name, spec in FAMILIES.items()} == {
        "baselines": "features",
        "clustering": "training_frame",
        "tree": "training_frame",
        "potential": "transactions",
    }
    with pytest.raises(KeyError, match="known: baselines, clustering, tree, potential"):
        family("forest")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_model_follows_the_interface(name):
    spec = FAMILIES[name]
    models = spec.build(None, seed=5, horizon_days=HORIZON, feature_config=SPEC)
    assert tuple(models) == spec.model_names
    for model_spec, model in zip(spec.models, models.values(), strict=True):
        assert type(model) is model_spec.cls
        assert isinstance(model, ModelFamily)
        # the registry's flag is the class's own, and the class names its family for load_model
        assert type(model).predicts_money is model_spec.predicts_money
        assert type(model).family == name
        assert "random_state" not in model.get_params() or model.get_params()["random_state"] == 5


@dataclass
class ClusteringSettings:  # the shape of a settings section: any object with the setting attributes
    k_min: int = 3
    k_max: int = 8
    method: str = "kmeans"


def test_build_reads_settings_by_attribute_or_key():
    clustering = build_family("clustering", ClusteringSettings(k_min=2, k_max=4), 1, HORIZON)["clustering"]
    assert clustering.k_range == (2, 4) and clustering.random_state == 1
    same = build_family("clustering", {"k_min": 2, "k_max": 4}, 1, HORIZON)["clustering"]
    assert same.get_params() == clustering.get_params()
    potential = build_family("potential", {"objective": "tweedie"}, 1, 273)["potential"]
    assert potential.objective == "tweedie" and potential.horizon_days == 273
    tree = build_family("tree", None, 1, HORIZON, feature_config=SPEC)["spend_tree"]
    assert tree.features == NUMERIC_FEATURES(SPEC)
    assert build_family("tree", None, 1, HORIZON)["spend_tree"].features is None
    baselines = build_family("baselines", {"rfm_bins": 4}, 1, HORIZON)
    assert baselines["rfm"].n_bins == 4 and baselines["btyd"].horizon_days == HORIZON


@pytest.mark.parametrize("name", ["baselines", "clustering", "tree"])
def test_fit_predict_value_and_load_model_round_trip(name, frame):
    spec = FAMILIES[name]
    models = spec.build(None, seed=0, horizon_days=HORIZON, feature_config=SPEC)
    y = frame["target"].to_numpy() if spec.fit_input == "training_frame" else None
    with threadpool_limits(1):
        for model in models.values():
            assert model.fit(frame, y) is model
            value = model.predict_value(frame)
            assert value.shape == (len(frame),) and np.isfinite(value).all()
            state = json.loads(json.dumps(model.to_dict(), allow_nan=False))
            assert state["family"] == name
            restored = load_model(state)
            assert type(restored) is type(model)
            np.testing.assert_array_equal(restored.predict_value(frame), value)


def test_predict_value_is_the_models_own_score(frame):
    models = build_family("baselines", None, 0, HORIZON)
    for model in models.values():
        model.fit(frame)
    np.testing.assert_array_equal(models["rfm"].predict_value(frame), models["rfm"].predict_rank_key(frame))
    np.testing.assert_array_equal(
        models["past_spend"].predict_value(frame), models["past_spend"].predict(frame, HORIZON)
    )
    np.testing.assert_array_equal(models["btyd"].predict_value(frame), models["btyd"].predict(frame, HORIZON))
    tree = build_family("tree", None, 0, HORIZON, feature_config=SPEC)["spend_tree"]
    tree.fit(frame, frame["target"])
    np.testing.assert_array_equal(tree.predict_value(frame), tree.predict(frame))


def test_potential_fit_takes_a_training_input():
    model = build_family("potential", None, 0, HORIZON)["potential"]
    # the documented deviation: X is a TrainingInput; a settings error names the parameter before any work
    model.set_params(objective="poisson")
    with pytest.raises(ValueError, match="PotentialValueModel: objective 'poisson'"):
        model.fit(TrainingInput(pd.DataFrame(), CUTOFF), None)


def test_config_keys_name_the_yaml_setting_of_a_parameter():
    assert config_key("potential", "objective") == "models.potential.objective"
    assert config_key("potential", "horizon_days") == "cutoffs.horizon_days"
    assert config_key("baselines", "n_bins") == "models.baselines.rfm_bins"
    assert config_key("clustering", "random_state") == "seed"


def test_states_without_a_family_key_still_load(frame):
    tree = build_family("tree", None, 0, HORIZON, feature_config=SPEC)["spend_tree"]
    tree.fit(frame, frame["target"])
    legacy = {k: v for k, v in tree.to_dict().items() if k != "family"}
    np.testing.assert_array_equal(load_model(legacy).predict_value(frame), tree.predict_value(frame))


def test_load_model_refuses_states_it_cannot_place(frame):
    with pytest.raises(ValueError, match="no 'family' key"):
        load_model({"model": "segml.models.baselines.RFMScore"})
    with pytest.raises(ValueError, match="unknown family 'forest'"):
        load_model({"family": "forest"})
    state = build_family("baselines", None, 0, HORIZON)["rfm"].fit(frame).to_dict()
    with pytest.raises(ValueError, match="is not one of"):
        load_model({**state, "model": "segml.models.baselines.Other"})
