"""Baselines: RFM quintile score, past spend, BG/NBD + Gamma-Gamma (with its degenerate-fit fallback),
and the CDNOW reference figures."""

from __future__ import annotations

import importlib.resources
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segml.evaluate import decile_mape, decile_table, normalized_gini, top_k_capture, total_error
from segml.models.baselines import (
    RETRY_PENALIZER,
    BTYDModel,
    PastSpend,
    RFMScore,
    bgnbd_expected_purchases,
)

ROOT = Path(__file__).resolve().parents[2]
CDNOW = ROOT / "data" / "raw" / "cdnow" / "CDNOW_master.txt"


def simulated_features(n: int = 400, seed: int = 7) -> pd.DataFrame:
    """Feature-table columns the baselines read, for customers following a BG/NBD-like process.

    Each customer buys at a gamma-distributed daily rate and may drop out after every purchase; three customers
    never bought; a few repeat customers have zero or negative repeat spend (free items, returns).
    """
    rng = np.random.default_rng(seed)
    age = rng.integers(30, 366, n).astype(float)
    rate = rng.gamma(0.6, 1 / 15, n)
    dropout = rng.beta(1.0, 4.0, n)
    gaps = rng.exponential(1.0, (n, 40)) / rate[:, None]
    times = np.cumsum(gaps, axis=1)
    # purchase j (1-based repeat) happens if the customer survived the j previous purchases and it is before T
    alive = np.cumprod(rng.random((n, 40)) > dropout[:, None], axis=1)
    made = (times <= age[:, None]) & (alive == 1)
    frequency = made.sum(axis=1).astype(float)
    recency = np.where(frequency > 0, np.max(np.where(made, times, 0.0), axis=1), 0.0)
    spend_level = rng.gamma(4.0, 10.0, n)
    repeat_spend = np.where(frequency > 0, spend_level * rng.gamma(8.0, 1 / 8, n), 0.0)
    repeaters = np.flatnonzero(frequency > 0)
    repeat_spend[repeaters[:3]] = 0.0
    repeat_spend[repeaters[3]] = -5.0
    first_spend = spend_level * rng.gamma(8.0, 1 / 8, n)
    features = pd.DataFrame(
        {
            "customer_id": [f"{i:05d}" for i in range(n)],
            "has_purchases": True,
            "recency_days": age - recency,
            "t_days": age,
            "btyd_recency_days": recency,
            "frequency": frequency,
            "btyd_monetary": repeat_spend,
            "n_purchase_days": frequency + 1,
            "monetary_total": first_spend + frequency * repeat_spend,
        }
    )
    never = pd.DataFrame(
        {
            "customer_id": ["n0001", "n0002", "n0003"],
            "has_purchases": False,
            "recency_days": np.nan,
            "t_days": np.nan,
            "btyd_recency_days": np.nan,
            "frequency": 0.0,
            "btyd_monetary": 0.0,
            "n_purchase_days": 0.0,
            "monetary_total": 0.0,
        }
    )
    return pd.concat([features, never], ignore_index=True)


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    return simulated_features()


@pytest.fixture(scope="module")
def btyd(features: pd.DataFrame) -> BTYDModel:
    return BTYDModel().fit(features)


# --------------------------------------------------------------------------------------------------------------
# RFM


def test_rfm_quintiles_hand_computed() -> None:
    # values 10..50: linear quantiles at 0.2..0.8 sit at positions 0.8, 1.6, 2.4, 3.2 -> edges 18, 26, 34, 42
    frame = pd.DataFrame(
        {
            "recency_days": [10.0, 20.0, 30.0, 40.0, 50.0],
            "n_purchase_days": [1.0, 1.0, 1.0, 2.0, 3.0],  # edges 1, 1, 1.4, 2.2
            "monetary_total": [10.0, 20.0, 30.0, 40.0, 50.0],
        }
    )
    model = RFMScore().fit(frame)
    assert model.monetary_edges_ == pytest.approx([18, 26, 34, 42])
    assert model.frequency_edges_ == pytest.approx([1, 1, 1.4, 2.2])
    parts = model.predict_components(frame)
    assert parts["m_score"].tolist() == [1, 2, 3, 4, 5]
    assert parts["r_score"].tolist() == [5, 4, 3, 2, 1]  # lower recency is better
    # a value on an edge gets the better score: F = 1 + #(edges <= value): 1 -> 3, 2 -> 4, 3 -> 5
    assert parts["f_score"].tolist() == [3, 3, 3, 4, 5]
    assert model.predict(frame).tolist() == [9.0, 9.0, 9.0, 10.0, 11.0]
    # recency on an edge: edges of 5, 5, 5, 10, 20 are 5, 5, 7, 12; R = 5 − #(edges < value): 5 -> 5, 10 -> 2
    tied = frame.assign(recency_days=[5.0, 5.0, 5.0, 10.0, 20.0])
    assert RFMScore().fit(tied).predict_components(tied)["r_score"].tolist() == [5, 5, 5, 2, 1]


def test_rfm_range_and_never_bought(features: pd.DataFrame) -> None:
    model = RFMScore().fit(features)
    scores = model.predict(features)
    assert scores.min() >= 3 and scores.max() <= 15
    assert np.all(scores == np.round(scores))
    never = features["has_purchases"].to_numpy() == 0
    assert np.all(scores[never] == 3)  # R = 1 without purchases; F and M are at their floor
    assert model.n_customers_fit_ == int((~never).sum())


def test_rfm_is_batch_independent(features: pd.DataFrame) -> None:
    model = RFMScore().fit(features)
    in_batch = model.predict_rank_key(features)
    for row in (0, 17, 150, len(features) - 1):
        alone = model.predict_rank_key(features.iloc[[row]])
        assert alone[0] == in_batch[row]
    shuffled = features.sample(frac=1.0, random_state=0)
    assert np.array_equal(model.predict_rank_key(shuffled), in_batch[shuffled.index.to_numpy()])


def test_rfm_rank_key_breaks_ties_by_monetary(features: pd.DataFrame) -> None:
    model = RFMScore().fit(features)
    score = model.predict(features)
    key = model.predict_rank_key(features)
    monetary = features["monetary_total"].to_numpy()
    assert np.all(np.floor(key) == score)  # the tie-break never crosses a score
    by_key = np.argsort(-key, kind="stable")
    by_score_then_money = np.lexsort((-monetary, -score))
    assert np.array_equal(key[by_key], key[by_score_then_money])


def test_rfm_requires_columns() -> None:
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['monetary_total'\]"):
        RFMScore().fit(pd.DataFrame({"recency_days": [1.0], "n_purchase_days": [1.0]}))


# --------------------------------------------------------------------------------------------------------------
# Past spend


def test_past_spend_scales_to_horizon() -> None:
    frame = pd.DataFrame({"t_days": [99.0, 10.0, 50.0], "monetary_total": [200.0, 50.0, -20.0]})
    model = PastSpend().fit(frame)
    assert model.calibration_days_ == 100.0  # max t_days + 1
    # 200 · 50/100, 50 · 50/100, net returns -> 0
    assert model.predict(frame, 50).tolist() == [100.0, 25.0, 0.0]
    assert PastSpend(calibration_days=25).fit(frame).predict(frame, 50).tolist() == [400.0, 100.0, 0.0]


def test_past_spend_horizon_from_the_constructor() -> None:
    frame = pd.DataFrame({"t_days": [99.0, 10.0], "monetary_total": [200.0, 50.0]})
    model = PastSpend(horizon_days=50).fit(frame)
    assert model.predict_value(frame).tolist() == [100.0, 25.0] == model.predict(frame).tolist()
    assert model.predict(frame, 100).tolist() == [200.0, 50.0]  # an explicit horizon wins
    with pytest.raises(ValueError, match="horizon_days"):
        PastSpend().fit(frame).predict_value(frame)


# --------------------------------------------------------------------------------------------------------------
# Model-family interface: predict_value and JSON state


def test_baselines_state_round_trips_through_json(btyd: BTYDModel, features: pd.DataFrame) -> None:
    rfm = RFMScore().fit(features)
    past = PastSpend(horizon_days=180).fit(features)
    model = BTYDModel(horizon_days=180).fit(features)
    for fitted in (rfm, past, model):
        state = json.loads(json.dumps(fitted.to_dict(), allow_nan=False))
        assert state["family"] == "baselines"
        restored = type(fitted).from_dict(state)
        np.testing.assert_array_equal(restored.predict_value(features), fitted.predict_value(features))
        assert restored.get_params() == fitted.get_params()
    np.testing.assert_array_equal(rfm.predict_value(features), rfm.predict_rank_key(features))
    np.testing.assert_array_equal(model.predict_value(features), btyd.predict(features, 180))
    with pytest.raises(ValueError, match="not a PastSpend export"):
        PastSpend.from_dict(rfm.to_dict())


# --------------------------------------------------------------------------------------------------------------
# BG/NBD + Gamma-Gamma


def test_btyd_predictions_finite_nonnegative(btyd: BTYDModel, features: pd.DataFrame) -> None:
    spend = btyd.predict(features, 180)
    assert spend.shape == (len(features),)
    assert np.all(np.isfinite(spend)) and np.all(spend >= 0)
    never = ~features["has_purchases"].to_numpy(dtype=bool)
    assert np.all(spend[never] == 0)
    assert btyd.diagnostics_["converged"] and not btyd.diagnostics_["fallback_used"]
    assert set(btyd.diagnostics_["params"]) == {"r", "alpha", "a", "b", "p", "q", "v"}
    # Gamma-Gamma saw only repeat customers with positive spend (3 zero and 1 negative left out)
    positive = int(((features["frequency"] > 0) & (features["btyd_monetary"] > 0)).sum())
    assert btyd.diagnostics_["n_gamma_gamma_customers"] == positive
    # more horizon, more expected purchases
    assert np.all(btyd.expected_purchases(features, 360) >= btyd.expected_purchases(features, 180))


def test_btyd_matches_lifetimes(btyd: BTYDModel, features: pd.DataFrame) -> None:
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    buyers = features[features["has_purchases"]]
    reference = BetaGeoFitter().fit(buyers["frequency"], buyers["btyd_recency_days"], buyers["t_days"])
    for name in ("r", "alpha", "a", "b"):
        assert btyd.bgnbd_params_[name] == pytest.approx(reference.params_[name], rel=1e-4)
    expected = reference.conditional_expected_number_of_purchases_up_to_time(
        180, buyers["frequency"], buyers["btyd_recency_days"], buyers["t_days"]
    )
    assert btyd.expected_purchases(buyers, 180) == pytest.approx(expected.to_numpy(), rel=1e-6)
    repeat = buyers[(buyers["frequency"] > 0) & (buyers["btyd_monetary"] > 0)]
    scale = repeat["btyd_monetary"].mean()
    # Gamma-Gamma is fitted on spend / mean spend (lifetimes loses precision on raw currency here) and v is
    # reported back in currency units; the CDNOW test compares with a raw-currency lifetimes fit
    gamma_gamma = GammaGammaFitter().fit(repeat["frequency"], repeat["btyd_monetary"] / scale)
    assert btyd.gg_params_["p"] == pytest.approx(gamma_gamma.params_["p"], rel=1e-6)
    assert btyd.gg_params_["q"] == pytest.approx(gamma_gamma.params_["q"], rel=1e-6)
    assert btyd.gg_params_["v"] == pytest.approx(gamma_gamma.params_["v"] * scale, rel=1e-6)


def test_btyd_first_time_buyers_get_population_mean(btyd: BTYDModel, features: pd.DataFrame) -> None:
    p, q, v = (btyd.gg_params_[name] for name in ("p", "q", "v"))
    spend = btyd.expected_spend_per_purchase(features)
    one_timers = (features["frequency"] == 0) & features["has_purchases"]
    assert spend[one_timers.to_numpy()] == pytest.approx(p * v / (q - 1))
    negative = (features["btyd_monetary"] < 0).to_numpy()
    assert np.all(spend[negative] > 0)  # shrunk towards the population mean from 0, never negative


def test_btyd_is_batch_independent(btyd: BTYDModel, features: pd.DataFrame) -> None:
    in_batch = btyd.predict(features, 120)
    for row in (0, 5, 200):
        assert btyd.predict(features.iloc[[row]], 120)[0] == pytest.approx(in_batch[row], rel=1e-12)


def test_btyd_degenerate_fit_falls_back() -> None:
    # Everyone bought on each of the last 100 days: no heterogeneity and no dropout, BG/NBD cannot be fitted
    # (a collapses towards 0 or the optimiser fails) and Gamma-Gamma has no spread to fit either.
    frame = pd.DataFrame(
        {
            "customer_id": [f"{i:03d}" for i in range(50)],
            "has_purchases": True,
            "frequency": 100.0,
            "btyd_recency_days": 100.0,
            "t_days": 100.0,
            "btyd_monetary": 10.0,
        }
    )
    model = BTYDModel().fit(frame)
    diagnostics = model.diagnostics_
    assert diagnostics["fallback_used"] and not diagnostics["converged"]
    assert model.bgnbd_params_ is None and diagnostics["bgnbd"]["fallback_used"]
    assert [a["penalizer"] for a in diagnostics["bgnbd"]["attempts"]] == [0.0, RETRY_PENALIZER]
    assert all(a["problem"] for a in diagnostics["bgnbd"]["attempts"])
    assert any("BG/NBD: both fits degenerate" in message for message in diagnostics["warnings"])
    # fallback rate: (100 + mean frequency 100) / (100 + mean age 100) per day × 50 days
    assert model.expected_purchases(frame, 50) == pytest.approx(np.full(50, 50.0))
    spend = model.predict(frame, 50)
    assert np.all(np.isfinite(spend)) and np.all(spend > 0)
    # a configured penalizer is retried with 0
    penalized = BTYDModel(penalizer=0.5).fit(frame)
    assert [a["penalizer"] for a in penalized.diagnostics_["bgnbd"]["attempts"]][0] == 0.5


def test_btyd_no_repeat_customers_still_predicts() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "has_purchases": True,
            "frequency": 0.0,
            "btyd_recency_days": 0.0,
            "t_days": rng.integers(0, 300, 40).astype(float),
            "btyd_monetary": 0.0,
            "monetary_mean": 25.0,
        }
    )
    model = BTYDModel().fit(frame)
    assert model.diagnostics_["gamma_gamma"]["fallback_used"] and model.gg_params_ is None
    assert "only 0 repeat customers" in " ".join(model.diagnostics_["warnings"])
    # no repeat spend to learn from: the mean spend per purchase day stands in for every customer
    assert model.fallback_mean_spend_ == 25.0
    assert model.expected_spend_per_purchase(frame) == pytest.approx(np.full(40, 25.0))
    spend = model.predict(frame, 90)
    assert np.all(np.isfinite(spend)) and np.all(spend >= 0)


def test_btyd_rejects_inconsistent_histories(features: pd.DataFrame) -> None:
    broken = features.copy()
    broken.loc[0, "btyd_recency_days"] = broken.loc[0, "t_days"] + 5
    with pytest.raises(ValueError, match="1 of .* customers: btyd_recency_days"):
        BTYDModel().fit(broken)
    with pytest.raises(ValueError, match="time_unit"):
        BTYDModel(time_unit="M").fit(features)


def test_bgnbd_formula_handles_weekly_units(features: pd.DataFrame) -> None:
    daily = BTYDModel().fit(features)
    weekly = BTYDModel(time_unit="W").fit(features)
    # r, a, b do not depend on the unit; alpha scales with it; predictions agree
    assert weekly.bgnbd_params_["alpha"] * 7 == pytest.approx(daily.bgnbd_params_["alpha"], rel=1e-3)
    assert weekly.predict(features, 91) == pytest.approx(daily.predict(features, 91), rel=1e-3)
    params = daily.bgnbd_params_
    zero = bgnbd_expected_purchases(params, 0.0, np.array([2.0]), np.array([10.0]), np.array([50.0]))
    assert zero == pytest.approx([0.0], abs=1e-12)


# --------------------------------------------------------------------------------------------------------------
# CDNOW reference figures


def cdnow_features(calibration_end: str = "1997-09-30") -> pd.DataFrame:
    """Feature columns at the calibration cutoff and the holdout spend, built from the raw CDNOW file with pandas
    (one purchase day = net spend of a customer on a calendar day)."""
    raw = pd.read_csv(CDNOW, sep=r"\s+", dtype={"customer_id": str, "date": str})
    raw["day"] = pd.to_datetime(raw["date"], format="%Y%m%d")
    daily = raw.groupby(["customer_id", "day"], as_index=False)["dollar_value"].sum()
    cutoff = pd.Timestamp(calibration_end)
    calibration = daily[daily["day"] <= cutoff].sort_values(["customer_id", "day"])
    by_customer = calibration.groupby("customer_id")
    first_day, last_day = by_customer["day"].min(), by_customer["day"].max()
    n_days = by_customer["day"].size().astype(float)
    total = by_customer["dollar_value"].sum()
    first_spend = by_customer["dollar_value"].first()
    frequency = n_days - 1
    holdout = daily[daily["day"] > cutoff].groupby("customer_id")["dollar_value"].sum()
    frame = pd.DataFrame(
        {
            "has_purchases": True,
            "recency_days": (cutoff - last_day).dt.days.astype(float),
            "t_days": (cutoff - first_day).dt.days.astype(float),
            "btyd_recency_days": (last_day - first_day).dt.days.astype(float),
            "frequency": frequency,
            "btyd_monetary": ((total - first_spend) / frequency.clip(lower=1)).where(frequency > 0, 0.0),
            "n_purchase_days": n_days,
            "monetary_total": total,
        }
    )
    frame["holdout_spend"] = holdout.reindex(frame.index).fillna(0.0)
    return frame.rename_axis("customer_id").reset_index()


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    if not CDNOW.is_file():
        pytest.fail(f"{CDNOW} is missing: the CDNOW reference test needs the shipped raw file")
    return cdnow_features()


def test_cdnow_published_bgnbd_parameters(cdnow: pd.DataFrame) -> None:
    # Fader, Hardie & Lee (2005) fitted BG/NBD on the 1/10 sample of the cohort (2,357 customers, shipped
    # with lifetimes as CDNOW_sample.txt, first column = master id) in weeks: r=0.243, α=4.414, a=0.793, b=2.426.
    sample_file = importlib.resources.files("lifetimes.datasets") / "CDNOW_sample.txt"
    sample_ids = set(pd.read_csv(sample_file, sep=r"\s+", header=None, dtype=str)[0])
    sample = cdnow[cdnow["customer_id"].isin(sample_ids)]
    assert len(sample) == 2357
    model = BTYDModel(time_unit="W").fit(sample)
    assert model.diagnostics_["converged"]
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert model.bgnbd_params_[name] == pytest.approx(value, rel=2e-3)


def test_cdnow_reference_metrics(cdnow: pd.DataFrame) -> None:
    assert len(cdnow) == 23570
    actual = cdnow["holdout_spend"].to_numpy()
    ids = cdnow["customer_id"].to_numpy()
    horizon = 273  # 1997-10-01 .. 1998-06-30

    rfm_key = RFMScore().fit(cdnow).predict_rank_key(cdnow)
    assert normalized_gini(actual, rfm_key) == pytest.approx(0.716, abs=0.005)
    assert top_k_capture(actual, rfm_key, 0.2, ids) == pytest.approx(0.685, abs=0.005)

    past = PastSpend().fit(cdnow).predict(cdnow, horizon)
    assert normalized_gini(actual, past) == pytest.approx(0.696, abs=0.005)
    assert top_k_capture(actual, past, 0.2, ids) == pytest.approx(0.661, abs=0.005)
    assert decile_mape(decile_table(actual, past, ids)) == pytest.approx(1.36, abs=0.005)
    assert total_error(actual, past) == pytest.approx(1.22, abs=0.005)

    # Gamma-Gamma fitted on scaled spend equals the raw-currency lifetimes fit (p=6.275, q=3.624, v=14.98)
    from lifetimes import GammaGammaFitter

    repeat = cdnow[(cdnow["frequency"] > 0) & (cdnow["btyd_monetary"] > 0)]
    raw_gamma_gamma = GammaGammaFitter().fit(repeat["frequency"], repeat["btyd_monetary"])
    fitted = BTYDModel().fit(cdnow)
    for name in ("p", "q", "v"):
        assert fitted.gg_params_[name] == pytest.approx(raw_gamma_gamma.params_[name], rel=1e-3)

    # The reference BG/NBD + Gamma-Gamma figures come from a BG/NBD penalizer of 1e-3 (daily units).
    btyd = BTYDModel(penalizer=1e-3).fit(cdnow)
    assert btyd.diagnostics_["converged"] and not btyd.diagnostics_["fallback_used"]
    spend = btyd.predict(cdnow, horizon)
    assert np.all(np.isfinite(spend)) and np.all(spend >= 0)
    assert normalized_gini(actual, spend) == pytest.approx(0.673, abs=0.005)
    assert top_k_capture(actual, spend, 0.2, ids) == pytest.approx(0.688, abs=0.005)
    assert 0.20 - 0.005 <= decile_mape(decile_table(actual, spend, ids)) <= 0.22 + 0.005
    assert -0.11 - 0.005 <= total_error(actual, spend) <= -0.09 + 0.005

    # Unpenalized (the default): same ranking quality, calibration total further off.
    default = fitted.predict(cdnow, horizon)
    assert normalized_gini(actual, default) == pytest.approx(0.673, abs=0.005)
    assert 0.20 - 0.005 <= decile_mape(decile_table(actual, default, ids)) <= 0.22 + 0.005
    assert not math.isnan(total_error(actual, default))


def test_baseline_predictions_names_and_labels(features: pd.DataFrame) -> None:
    from segml.models.baselines import BASELINE_LABELS, BASELINE_NAMES, baseline_predictions

    scores = baseline_predictions(features, 90.0)
    assert tuple(scores) == BASELINE_NAMES == ("rfm", "rfm_sum", "past_spend", "btyd")
    rfm = RFMScore().fit(features)
    # rfm: R+F+M with ties broken by M; rfm_sum: the plain sum (ties left tied)
    np.testing.assert_array_equal(scores["rfm"], rfm.predict_rank_key(features))
    np.testing.assert_array_equal(scores["rfm_sum"], rfm.predict(features))
    assert np.all(np.floor(scores["rfm"]) == scores["rfm_sum"])
    np.testing.assert_array_equal(scores["past_spend"], PastSpend().fit(features).predict(features, 90.0))
    assert "ties broken by M" in BASELINE_LABELS["rfm"] and "R+F+M" in BASELINE_LABELS["rfm_sum"]
    # fitted on one population, scoring another
    part = baseline_predictions(features.iloc[:50], 90.0, fit_features=features, names=["rfm_sum"])
    np.testing.assert_array_equal(part["rfm_sum"], scores["rfm_sum"][:50])
    with pytest.raises(ValueError, match="unknown name"):
        baseline_predictions(features, 90.0, names=["rfm_product"])
