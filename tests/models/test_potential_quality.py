"""Slow regression floors of the potential-value model beyond CDNOW: Ta Feng and planted-truth synthetic data.

Floors are the figures of the commit the generalisation work started from (measured with this file's own
pipeline, numbers in docs/potential.md), so a change that makes the model worse on a data set it was not
tuned to fails here. The Ta Feng files are read in place from ``$SEGML_TAFENG`` (default
``../shared/data/tafeng`` next to the repository); they are never copied into it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segml import evaluate
from segml.config import FeatureConfig, load_experiment
from segml.features import build_features, build_labels
from segml.models.baselines import BTYDModel, PastSpend, RFMScore
from segml.models.intervals import coverage
from segml.models.potential import PotentialValueModel

REPO = Path(__file__).resolve().parents[2]
#: lapsed customers' mean forecast ÷ mean realised spend may not exceed this (the start commit's 1.44)
LAPSED_RATIO_FLOOR = 1.4  # measured 1.34x with the recency calibration (1.46x without; start commit 1.44x)
TAFENG = Path(os.environ.get("SEGML_TAFENG", REPO.parent / "shared" / "data" / "tafeng"))


def _money(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "gini": evaluate.normalized_gini(actual, predicted),
        "decile_mape": evaluate.decile_mape(evaluate.decile_table(actual, predicted)),
        "total_error": evaluate.total_error(actual, predicted),
    }


@pytest.fixture(scope="module")
def tafeng(tmp_path_factory):
    assert (TAFENG / "transactions.parquet").is_file(), (
        f"{TAFENG}: Ta Feng data not found; set SEGML_TAFENG to the folder holding transactions.parquet"
    )
    root = tmp_path_factory.mktemp("tafeng")
    (root / "experiments").mkdir()
    (root / "experiments" / "tafeng.yaml").write_text(
        (REPO / "experiments" / "tafeng.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    env = {**os.environ, "SEGML_ROOT": str(root), "MLFLOW_DISABLE_TELEMETRY": "true"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "segml.cli",
            "ingest",
            "experiments/tafeng.yaml",
            "--set",
            f"data.transactions.0.path={TAFENG / 'transactions.parquet'}",
            "--set",
            f"data.customers.path={TAFENG / 'customers.parquet'}",
        ],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
    )
    cfg = load_experiment(root / "experiments" / "tafeng.yaml", root=root)
    transactions = pd.read_parquet(cfg.paths.clean_transactions)
    customers = pd.read_parquet(cfg.paths.clean_customers)
    calibration_end, horizon = cfg.cutoffs.calibration_end, 59
    model = PotentialValueModel(horizon, random_state=cfg.seed).fit(
        transactions, calibration_end, cfg.features, customers
    )
    features = build_features(transactions, calibration_end, cfg.features, customers)
    features = features[features["has_purchases"].astype(bool)].reset_index(drop=True)
    labels = build_labels(transactions, calibration_end, horizon)
    actual = (
        features[["customer_id"]]
        .merge(labels, on="customer_id", how="left")["future_spend"]
        .fillna(0.0)
        .to_numpy(dtype=float)
    )
    predicted = model.predict(features)
    past = PastSpend().fit(features).predict(features, horizon)
    btyd = BTYDModel().fit(features).predict(features, horizon)
    diff, low, high = evaluate.paired_bootstrap_gini_diff(actual, predicted, past, n_boot=500, seed=0)
    lapsed = features["recency_days"].to_numpy(dtype=float) > 30
    return {
        "interval": coverage(actual, *model.predict_interval(features, predicted)),
        "lapsed": {
            "customers": int(lapsed.sum()),
            "predicted_mean": float(predicted[lapsed].mean()),
            "realised_mean": float(actual[lapsed].mean()),
        },
        "model": model,
        "potential": _money(actual, predicted),
        "past_spend": _money(actual, past),
        "btyd": _money(actual, btyd),
        "gain_vs_past_spend": (diff, low, high),
    }


@pytest.mark.slow
def test_tafeng_ranking_and_money_floors(tafeng):
    """Start commit on this split: Gini gain over past spend −0.020 (CI [−0.025, −0.015]), decile MAPE 23 %,
    BG/NBD's 19 %, |total error| 13 %."""
    diff, low, high = tafeng["gain_vs_past_spend"]
    potential = tafeng["potential"]
    print(
        f"Ta Feng: gain vs past spend {diff:+.4f} [{low:+.4f}, {high:+.4f}], potential {potential}, "
        f"past spend {tafeng['past_spend']}, BG/NBD {tafeng['btyd']}, blend {tafeng['model'].params_.get('blend')}"
    )
    assert high > -0.015  # the start commit's whole interval was below this
    # measured on main with the population rule (undated customers enter at their first purchase) and the
    # recency calibration: decile MAPE 22.2 %, total error +12.0 % (26.5 %, +15.1 % without the calibration;
    # start commit 23 %) — still worse than BG/NBD's 18.6 %: a reported miss; these floors only stop it from
    # getting worse
    assert potential["decile_mape"] < 0.235
    assert potential["decile_mape"] < tafeng["past_spend"]["decile_mape"]
    assert abs(potential["total_error"]) <= 0.135


@pytest.mark.slow
def test_tafeng_forecast_interval_holds(tafeng):
    """P10 / P90 on the holdout. Measured: 6.2 % of buyers above the P90 (nominal 10 %: conservative, the
    validation window is 30 of the 59 days), none below the P10 (every P10 is 0)."""
    got = tafeng["interval"]
    print(f"Ta Feng interval: {got}")
    assert got["rows"] > 20_000
    assert 0.03 <= got["above"] <= 0.15
    assert got["below"] <= 0.10


@pytest.mark.slow
def test_tafeng_lapsed_customers_are_not_over_forecast(tafeng):
    """Customers whose last purchase is more than 30 days before the cutoff (8,142): mean forecast against
    their mean realised holdout spend (1,151). Start commit 1,654 (1.44×); on main 1,685 (1.46×) without the
    recency calibration, 1,544 (1.34×) with it."""
    lapsed = tafeng["lapsed"]
    print(f"Ta Feng lapsed > 30 days: {lapsed}")
    assert lapsed["predicted_mean"] <= LAPSED_RATIO_FLOOR * lapsed["realised_mean"]


def _synthetic(seasonality: bool):
    from segml.datasets.synthetic import SynthSpec, generate

    spec = SynthSpec(n_customers=5000, seed=3, seasonality=seasonality)
    data = generate(spec)
    raw = data.transactions
    transactions = pd.DataFrame(
        {
            "customer_id": raw["customer_id"].astype(str),
            "order_id": raw["order_id"].astype(str),
            "timestamp": pd.to_datetime(raw["order_ts"]),
            "amount": raw["amount"].astype(float),
            "quantity": raw["quantity"].astype(float),
            "product_id": raw["product_id"].astype(str),
            "channel": raw["channel"].astype(str),
        }
    )
    spec_features = FeatureConfig()
    model = PotentialValueModel(spec.horizon_days, random_state=7).fit(
        transactions, spec.cutoff, spec_features, data.customers
    )
    features = build_features(transactions, spec.cutoff, spec_features, data.customers)
    features = features[features["has_purchases"].astype(bool)].reset_index(drop=True)
    truth = features[["customer_id"]].merge(data.truth, on="customer_id", how="left")
    expected = truth["true_expected_spend"].fillna(0.0).to_numpy(dtype=float)
    tier = truth["tier"].to_numpy()
    predicted = model.predict(features)
    rfm = RFMScore().fit(features).predict_rank_key(features)
    past = PastSpend().fit(features).predict(features, spec.horizon_days)
    top_true = np.zeros(len(expected), dtype=bool)
    k = round(0.2 * len(expected))
    top_true[np.argsort(-expected, kind="stable")[:k]] = True
    rising = top_true & (tier == "rising")

    def recall(score: np.ndarray) -> float:
        top = np.zeros(len(score), dtype=bool)
        top[np.argsort(-score, kind="stable")[:k]] = True
        return float((top & rising).sum() / rising.sum())

    # the P10 / P90 against the realised holdout spend of the truth's window
    labels = build_labels(transactions, spec.cutoff, spec.horizon_days)
    realised = (
        features[["customer_id"]]
        .merge(labels, on="customer_id", how="left")["future_spend"]
        .fillna(0.0)
        .to_numpy(dtype=float)
    )
    ratios = {
        level: float(predicted[tier == level].sum() / expected[tier == level].sum())
        for level in sorted(set(tier))
        if expected[tier == level].sum() > 0
    }
    return {
        "spearman": evaluate.spearman(expected, predicted),
        "spearman_rfm": evaluate.spearman(expected, rfm),
        "recall": {"potential": recall(predicted), "rfm": recall(rfm), "past_spend": recall(past)},
        "tier_ratio": ratios,
        "params": model.params_,
        "interval": coverage(realised, *model.predict_interval(features, predicted)),
    }


@pytest.mark.slow
@pytest.mark.parametrize("seasonality", [False, True], ids=["flat", "seasonal"])
def test_synthetic_planted_truth_behaviours(seasonality):
    """Planted tiers (5,000 customers, seed 3). Start commit: Spearman with the true expected spend 0.6725 flat
    / 0.6729 seasonal; predicted ÷ true churning 2.87 / 3.10, rising 0.44 / 0.49. Measured now: 0.6866 /
    0.6729; churning 2.90 / 3.10, rising 0.43 / 0.49 (the issue's [0.7, 1.4] per tier is missed, see
    docs/potential.md). Floors: no worse than the start commit beyond a small tolerance."""
    result = _synthetic(seasonality)
    print(
        f"synthetic seasonality={seasonality}: Spearman vs truth {result['spearman']:.4f} "
        f"(RFM {result['spearman_rfm']:.4f}), rising recall {result['recall']}, tiers {result['tier_ratio']}, "
        f"blend {result['params'].get('blend')}"
    )
    assert result["spearman"] > result["spearman_rfm"]
    assert result["spearman"] >= 0.667
    ratios = result["tier_ratio"]
    assert ratios["churning"] <= 3.2
    assert ratios["rising"] >= 0.42
    assert ratios["churning"] > ratios["regular"] > ratios["rising"]
    # P10 / P90 on the realised holdout (flat measured: 11.0 % above the P90, 0.05 % below the P10)
    interval = result["interval"]
    assert 0.05 <= interval["above"] <= 0.15
    assert interval["below"] <= 0.10
