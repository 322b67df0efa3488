"""The synthetic generator: determinism, schema, planted structure, clean/dirty guarantees, ground truth."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from segml.datasets.synthetic import SynthData, SynthSpec, generate, write_synthetic
from segml.errors import ConfigError
from segml.schema import QUARANTINE_PRECEDENCE, QuarantineReason

FILES = (
    "transactions.parquet",
    "customers.parquet",
    "invoices.parquet",
    "interactions.parquet",
    "truth.parquet",
    "truth.json",
)
START, END = pd.Timestamp("2023-07-01"), pd.Timestamp("2026-06-30")
NON_PRODUCT_CODES = ["POSTAGE", "FEE", "ADJUST"]


@pytest.fixture(scope="module")
def clean() -> SynthData:
    return generate(SynthSpec(n_customers=1500, seed=7, planted=True))


@pytest.fixture(scope="module")
def flat() -> SynthData:
    return generate(SynthSpec(n_customers=1500, seed=7, seasonality=False))


@pytest.fixture(scope="module")
def dirty() -> SynthData:
    return generate(SynthSpec(n_customers=800, seed=3, dirty=True, planted=True))


def digests(folder) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILES}


def orders_only(tx: pd.DataFrame) -> pd.DataFrame:
    return tx[tx["order_id"].str.startswith("O")]


def spend_by_customer(data: SynthData) -> pd.Series:
    return data.transactions.groupby("customer_id")["amount"].sum()


# ---------------------------------------------------------------------------------------------------------
# Determinism and files


@pytest.mark.parametrize("dirty_mode", [False, True])
def test_same_seed_gives_byte_identical_files(tmp_path, dirty_mode):
    spec = SynthSpec(n_customers=300, seed=5, dirty=dirty_mode, planted=True)
    first = write_synthetic(spec, tmp_path / "a")
    second = write_synthetic(spec, tmp_path / "b")
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert first == second
    other = write_synthetic(
        SynthSpec(n_customers=300, seed=6, dirty=dirty_mode, planted=True), tmp_path / "c"
    )
    assert digests(tmp_path / "c")["transactions.parquet"] != digests(tmp_path / "a")["transactions.parquet"]
    assert other["seed"] == 6


def test_written_files_match_generate(tmp_path):
    spec = SynthSpec(n_customers=300, seed=5, planted=True)
    truth = write_synthetic(spec, tmp_path)
    data = generate(spec)
    assert json.loads((tmp_path / "truth.json").read_text()) == json.loads(json.dumps(data.truth_json))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "transactions.parquet"), data.transactions)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "truth.parquet"), data.truth)
    assert truth["transactions"] == len(data.transactions)
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_synth_writes_the_folder(tmp_path):
    from segml.cli import app

    result = CliRunner().invoke(app, ["synth", "--customers", "200", "--seed", "4", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert all((tmp_path / name).is_file() for name in FILES)
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert f"{truth['transactions']:,} transaction rows" in result.output
    assert truth["customers"] == 200
    assert truth["spec"]["planted"] is True  # the command plants the effects by default


# ---------------------------------------------------------------------------------------------------------
# Schema


def test_transaction_schema(clean: SynthData):
    tx = clean.transactions
    assert list(tx.columns) == [
        "customer_id",
        "order_id",
        "order_ts",
        "amount",
        "cost",
        "quantity",
        "product_id",
        "channel",
    ]
    assert pd.api.types.is_datetime64_any_dtype(tx["order_ts"])
    assert tx["amount"].dtype == "float64"
    assert tx["quantity"].dtype == "int64"
    assert tx["customer_id"].str.fullmatch(r"C\d{7}").all()
    assert tx["order_id"].str.fullmatch(r"[OR]\d{8}").all()
    assert tx["product_id"].str.fullmatch(r"P\d{4}").all()
    assert set(tx["channel"]) == {"online", "offline", "sales_rep"}
    assert (tx["order_ts"].dt.floor("D") != tx["order_ts"]).mean() > 0.99  # a time of day
    assert (tx["amount"].round(2) == tx["amount"]).all()
    assert tx["order_ts"].is_monotonic_increasing


def test_customer_and_truth_schema(clean: SynthData):
    customers, truth = clean.customers, clean.truth
    assert list(customers.columns) == ["customer_id", "signup_date", "industry", "size", "region", "org_type"]
    assert customers["customer_id"].is_unique and len(customers) == 1500
    assert isinstance(customers["signup_date"].iloc[0], dt.date)
    assert set(customers["size"]) == {"1-9", "10-49", "50-249", "250+"}
    assert set(customers["org_type"]) == {"private", "state_owned", "foreign", "individual"}
    for column in ["customer_id", "tier", "purchase_rate", "mean_basket", "alive_at_cutoff", "dropout_date"]:
        assert column in truth.columns
    assert list(truth["customer_id"]) == list(customers["customer_id"])
    assert truth["alive_at_cutoff"].dtype == bool
    assert truth["dropout_date"].isna().any() and truth["dropout_date"].notna().any()
    assert (truth["purchase_rate"] >= 0).all() and (truth["true_expected_spend"] >= 0).all()


def test_truth_json(clean: SynthData):
    info = clean.truth_json
    assert info["seed"] == 7 and info["customers"] == 1500
    assert info["transactions"] == info["clean_rows"] == len(clean.transactions)
    assert info["truth_cutoff"] == "2025-06-30" and info["horizon_days"] == 365
    assert info["spec"]["start"] == "2023-07-01" and info["spec"]["truth_cutoff"] == "2025-06-30"
    assert sum(info["tiers"].values()) == 1500
    assert info["tiers"] == clean.truth["tier"].value_counts().to_dict() | {
        t: 0 for t in info["tiers"] if t not in set(clean.truth["tier"])
    }
    assert len(info["month_profile"]) == 12
    assert info["injected"] == {}
    assert isinstance(info["notes"], str) and info["notes"]
    json.dumps(info)


# ---------------------------------------------------------------------------------------------------------
# Planted structure


def test_spend_is_heavy_tailed(clean: SynthData):
    spend = spend_by_customer(clean).sort_values(ascending=False)
    top = spend.head(len(spend) // 10).sum() / spend.sum()
    assert top > 0.4


def test_tier_mix_and_attribute_signal(clean: SynthData):
    truth = clean.truth.merge(clean.customers, on="customer_id")
    share = truth["tier"].value_counts(normalize=True)
    assert set(share.index) == {"vip", "regular", "occasional", "churning", "rising", "attributes_only"}
    assert 0.01 < share["vip"] < 0.12
    assert share["occasional"] > share["regular"] > share["vip"]
    assert 0.05 < share["rising"] < 0.25 and 0.05 < share["churning"] < 0.30
    vip_by_size = truth.groupby("size")["tier"].apply(lambda t: (t == "vip").mean())
    assert vip_by_size["250+"] > 3 * vip_by_size["1-9"]  # attributes carry signal ...
    assert (truth.groupby("size")["tier"].nunique() >= 4).all()  # ... but do not determine the tier


def test_mean_spend_follows_tier(clean: SynthData):
    spend = clean.truth.groupby("tier")["realized_spend"].mean()
    assert spend["vip"] > spend["regular"] > spend["occasional"]


def test_rising_tier_spend_rises(clean: SynthData):
    tx = clean.transactions.merge(clean.truth[["customer_id", "tier"]], on="customer_id")
    late = tx["order_ts"] >= pd.Timestamp("2025-01-01")
    halves = tx.groupby(["tier", late])["amount"].sum().unstack()
    growth = halves[True] / halves[False]
    assert growth["rising"] > 1.8
    assert growth["rising"] > 1.5 * growth["regular"]
    assert growth["churning"] < growth["regular"]


def month_of_year_ratio(data: SynthData) -> float:
    orders = orders_only(data.transactions).drop_duplicates("order_id")
    days = pd.Series([31, 28.33, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], index=range(1, 13))
    per_day = orders["order_ts"].dt.month.value_counts().sort_index() / days
    return float((per_day[11] + per_day[12]) / 2 / per_day[2])


def test_seasonality_visible_when_on_and_absent_when_off(clean: SynthData, flat: SynthData):
    assert month_of_year_ratio(clean) > 1.5
    assert 0.75 < month_of_year_ratio(flat) < 1.3
    profile = clean.truth_json["month_profile"]
    assert profile[10] > 1.5 and profile[11] > 1.6 and profile[1] < 0.75
    assert flat.truth_json["month_profile"] == [1.0] * 12


def test_attributes_only_customers_exist(clean: SynthData):
    buyers = set(clean.transactions["customer_id"])
    never = clean.customers[~clean.customers["customer_id"].isin(buyers)]
    assert 0.02 < len(never) / len(clean.customers) < 0.08
    planted = clean.truth[clean.truth["tier"] == "attributes_only"]
    assert len(planted) > 0 and not planted["customer_id"].isin(buyers).any()
    assert (planted["true_expected_spend"] == 0).all()


def test_orders_have_one_to_five_distinct_products(clean: SynthData):
    lines = orders_only(clean.transactions).groupby("order_id")["product_id"].agg(["size", "nunique"])
    assert lines["size"].between(1, 5).all() and (lines["size"] == lines["nunique"]).all()
    assert set(lines["size"]) == {1, 2, 3, 4, 5}
    orders = orders_only(clean.transactions)
    assert (orders.groupby("order_id")[["customer_id", "order_ts", "channel"]].nunique() == 1).all().all()


def test_amount_is_quantity_times_unit_price(clean: SynthData):
    tx = clean.transactions
    unit_price = (tx["amount"] / tx["quantity"]).round(2)
    assert (unit_price > 0).all()
    assert (unit_price.groupby(tx["product_id"]).nunique() == 1).all()


def test_returns_are_later_negative_lines_of_earlier_orders(clean: SynthData):
    tx = clean.transactions
    returns = tx[tx["order_id"].str.startswith("R")]
    orders = orders_only(tx)
    share = len(returns) / orders["order_id"].nunique()
    assert 0.02 < share < 0.06
    assert (returns["amount"] < 0).all() and (returns["quantity"] < 0).all()
    assert returns["order_id"].is_unique and (returns["order_ts"] <= END + pd.Timedelta(days=1)).all()
    matched = returns.reset_index().merge(
        orders.assign(quantity=-orders["quantity"], amount=-orders["amount"]),
        on=["customer_id", "product_id", "quantity", "amount"],
        suffixes=("", "_order"),
    )
    lag = matched["order_ts"] - matched["order_ts_order"]
    matched = matched[(lag >= pd.Timedelta(days=1)) & (lag <= pd.Timedelta(days=120))]
    assert matched["index"].nunique() == len(returns)


def test_clean_data_breaks_no_quarantine_rule(clean: SynthData):
    tx = clean.transactions
    assert tx["customer_id"].notna().all() and (tx["customer_id"].str.strip() != "").all()
    assert tx["order_ts"].notna().all()
    assert (tx["order_ts"] >= START).all() and (tx["order_ts"] < END + pd.Timedelta(days=1)).all()
    assert np.isfinite(tx["amount"]).all()
    assert (tx["amount"] != 0).all() and (tx["amount"].abs() <= 1_000_000).all()
    assert not tx["product_id"].isin(NON_PRODUCT_CODES).any()
    assert not tx.duplicated(["order_id", "product_id"]).any()
    assert not tx.duplicated().any()


# ---------------------------------------------------------------------------------------------------------
# Dirty mode


def classify_independently(tx: pd.DataFrame) -> pd.Series:
    """Quarantine reason per row under experiments/synthetic.yaml, first matching reason wins."""
    customer = tx["customer_id"].fillna("").str.strip()
    ts = pd.to_datetime(tx["order_ts"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    amount = pd.to_numeric(tx["amount"], errors="coerce")
    finite = np.isfinite(amount)
    faults = {
        QuarantineReason.MISSING_CUSTOMER_ID: customer == "",
        QuarantineReason.UNPARSEABLE_TIMESTAMP: ts.isna(),
        QuarantineReason.TIMESTAMP_OUT_OF_RANGE: ts < pd.Timestamp("1970-01-01"),
        QuarantineReason.FUTURE_TIMESTAMP: ts.dt.normalize() > END,
        QuarantineReason.NON_NUMERIC_AMOUNT: ~finite,
        QuarantineReason.NON_PRODUCT: tx["product_id"].isin(NON_PRODUCT_CODES),
        QuarantineReason.DUPLICATE_ROW: tx.duplicated(keep="first"),
        QuarantineReason.ZERO_AMOUNT: finite & (amount == 0),
        QuarantineReason.OUTLIER_AMOUNT: finite & (amount.abs() > 1_000_000),
    }
    hits = pd.DataFrame(faults)
    assert (hits.sum(axis=1) <= 1).all(), "an injected row carries more than one fault"
    reason = pd.Series(None, index=tx.index, dtype=object)
    for r in QUARANTINE_PRECEDENCE:
        if r in faults:
            reason = reason.where(reason.notna() | ~faults[r], str(r))
    return reason


def test_dirty_counts_per_reason_match_truth(dirty: SynthData):
    reason = classify_independently(dirty.transactions)
    counted = reason.value_counts().to_dict()
    injected = dirty.truth_json["injected"]
    assert counted == injected
    assert set(injected) == {
        "missing_customer_id",
        "unparseable_timestamp",
        "timestamp_out_of_range",
        "future_timestamp",
        "non_numeric_amount",
        "non_product",
        "duplicate_row",
        "zero_amount",
        "outlier_amount",
    }
    assert all(3 <= n <= 40 for n in injected.values())
    assert dirty.truth_json["clean_rows"] == len(dirty.transactions) - sum(injected.values())
    assert dirty.truth_json["transactions"] == len(dirty.transactions)


def test_dirty_variants_and_interleaving(dirty: SynthData):
    tx = dirty.transactions
    assert tx["order_ts"].dtype == object and tx["amount"].dtype == object
    assert {None, "", "   "} <= set(tx["customer_id"].where(tx["customer_id"].notna(), None))
    assert {"not a date", "2024-13-45", ""} <= set(tx["order_ts"])
    assert {"n/a", "abc", "", "inf", "nan"} <= set(tx["amount"])
    assert tx["amount"].str.fullmatch(r"-?\d+\.\d\d|n/a|abc|inf|nan|").all()
    bad = np.flatnonzero(classify_independently(tx).notna())
    assert bad.min() < len(tx) / 3 and bad.max() > 2 * len(tx) / 3  # spread, not appended


def test_dirty_keeps_the_clean_rows(dirty: SynthData):
    clean = generate(SynthSpec(n_customers=800, seed=3, planted=True)).transactions
    kept = dirty.transactions[classify_independently(dirty.transactions).isna()].reset_index(drop=True)
    as_text = clean.assign(
        order_ts=clean["order_ts"].dt.strftime("%Y-%m-%d %H:%M:%S"),
        amount=clean["amount"].map("{:.2f}".format),
    )
    pd.testing.assert_frame_equal(kept, as_text)


def test_dirty_parquet_stores_text_columns(tmp_path):
    write_synthetic(SynthSpec(n_customers=200, seed=2, dirty=True), tmp_path)
    schema = pq.read_schema(tmp_path / "transactions.parquet")
    assert str(schema.field("order_ts").type) == "string" and str(schema.field("amount").type) == "string"
    write_synthetic(SynthSpec(n_customers=200, seed=2), tmp_path / "clean")
    schema = pq.read_schema(tmp_path / "clean" / "transactions.parquet")
    assert (
        str(schema.field("order_ts").type).startswith("timestamp")
        and str(schema.field("amount").type) == "double"
    )


# ---------------------------------------------------------------------------------------------------------
# Ground truth


def test_realized_spend_is_the_window_sum(clean: SynthData):
    tx = clean.transactions
    day = tx["order_ts"].dt.normalize()
    window = (day > pd.Timestamp("2025-06-30")) & (day <= pd.Timestamp("2025-06-30") + pd.Timedelta(days=365))
    expected = tx[window].groupby("customer_id")["amount"].sum()
    realized = clean.truth.set_index("customer_id")["realized_spend"]
    np.testing.assert_allclose(expected.reindex(realized.index, fill_value=0.0), realized, atol=0.011)


def test_expected_spend_tracks_realized(clean: SynthData):
    truth = clean.truth
    rho = spearmanr(truth["true_expected_spend"], truth["realized_spend"]).statistic
    assert rho > 0.6
    total_ratio = truth["realized_spend"].sum() / truth["true_expected_spend"].sum()
    assert 0.7 < total_ratio < 1.3


def test_inactive_at_cutoff_expect_nothing(clean: SynthData):
    truth = clean.truth
    dropped = truth["dropout_date"].notna() & (
        pd.to_datetime(truth["dropout_date"]) <= pd.Timestamp("2025-06-30")
    )
    assert dropped.any()
    assert (truth.loc[dropped, "true_expected_spend"] == 0).all()
    assert not truth.loc[dropped, "alive_at_cutoff"].any()
    assert truth.loc[truth["alive_at_cutoff"], "true_expected_spend"].gt(0).all()


@pytest.mark.parametrize("planted", [False, True])
def test_horizon_past_end_is_still_expected_analytically(planted):
    data = generate(SynthSpec(n_customers=800, seed=4, truth_cutoff=dt.date(2026, 1, 31), planted=planted))
    truth = data.truth
    assert data.truth_json["truth_cutoff"] == "2026-01-31"
    # realized covers five months of the twelve-month horizon
    assert truth["realized_spend"].sum() < 0.7 * truth["true_expected_spend"].sum()
    assert spearmanr(truth["true_expected_spend"], truth["realized_spend"]).statistic > 0.5


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"n_customers": 0}, "n_customers"),
        ({"end": dt.date(2023, 1, 1)}, "end"),
        ({"horizon_days": 0}, "horizon_days"),
        ({"n_products": 3}, "n_products"),
        ({"truth_cutoff": dt.date(2030, 1, 1)}, "truth_cutoff"),
    ],
)
def test_invalid_spec_is_a_config_error(changes, field):
    with pytest.raises(ConfigError, match=field):
        generate(SynthSpec(**({"n_customers": 50} | changes)))


# ---------------------------------------------------------------------------------------------------------
# Cost, invoices, interactions and the planted behaviour

CUTOFF = pd.Timestamp("2025-06-30")
KIND_LABELS = {
    "Complaint": "complaint",
    "Support ticket": "ticket",
    "Email sent": "campaign_send",
    "Email clicked": "campaign_response",
    "Web login": "login",
    "Store visit": "visit",
    "NPS survey": "survey",
}


def test_cost_is_a_per_product_margin_rate(clean: SynthData):
    tx = clean.transactions
    assert tx["cost"].dtype == "float64" and (tx["cost"].round(2) == tx["cost"]).all()
    sold, returned = tx[tx["amount"] > 0], tx[tx["amount"] < 0]
    assert (sold["cost"] >= 0).all() and (sold["cost"] < sold["amount"]).all()
    assert (returned["cost"] < 0).all() and (returned["cost"] > returned["amount"]).all()
    rate = 1 - sold["cost"] / sold["amount"]
    by_product = rate.groupby(sold["product_id"]).agg(["min", "max"])
    assert ((by_product["max"] - by_product["min"]) < 0.02).all()  # one rate per product, cent rounding
    assert by_product["max"].max() - by_product["min"].min() > 0.2  # that differs between products
    margin = (tx["amount"] - tx["cost"]).groupby(tx["customer_id"]).sum()
    share = margin / tx.groupby("customer_id")["amount"].sum()
    assert share[tx.groupby("customer_id")["amount"].sum() > 500].std() > 0.02  # varies with the mix
    assert 0.2 < margin.sum() / tx["amount"].sum() < 0.36


def test_invoice_schema_and_one_invoice_per_order(clean: SynthData):
    inv = clean.invoices
    assert list(inv.columns) == ["invoice_id", "customer_id", "issued", "due", "paid", "amount"]
    assert inv["invoice_id"].is_unique and inv["invoice_id"].str.fullmatch(r"I\d{8}").all()
    for column in ("issued", "due", "paid"):
        assert isinstance(inv[column].dropna().iloc[0], dt.date)
    assert ((pd.to_datetime(inv["due"]) - pd.to_datetime(inv["issued"])).dt.days == 30).all()
    paid = inv["paid"].dropna()
    assert (paid >= inv.loc[paid.index, "issued"]).all() and (pd.to_datetime(paid) <= END).all()
    assert 0.01 < inv["paid"].isna().mean() < 0.15
    orders = orders_only(clean.transactions)
    totals = orders.groupby("order_id").agg(
        customer_id=("customer_id", "first"), day=("order_ts", "min"), amount=("amount", "sum")
    )
    assert len(inv) == len(totals) == clean.truth_json["invoices"]
    merged = inv.assign(order_id="O" + inv["invoice_id"].str[1:]).merge(totals, on="order_id")
    assert (merged["customer_id_x"] == merged["customer_id_y"]).all()
    assert (pd.to_datetime(merged["issued"]) == merged["day"].dt.normalize()).all()
    np.testing.assert_allclose(merged["amount_x"], merged["amount_y"], atol=0.005)


def test_interaction_schema_and_vocabulary(clean: SynthData):
    events = clean.interactions
    assert list(events.columns) == ["customer_id", "timestamp", "kind", "channel", "outcome", "score"]
    assert pd.api.types.is_datetime64_any_dtype(events["timestamp"])
    assert events["timestamp"].is_monotonic_increasing
    assert (events["timestamp"] >= START).all() and (events["timestamp"] < END + pd.Timedelta(days=1)).all()
    assert set(events["kind"]) == set(KIND_LABELS)
    assert events["customer_id"].isin(set(clean.customers["customer_id"])).all()
    survey = events["kind"] == "NPS survey"
    assert events.loc[survey, "score"].between(0, 10).all() and events.loc[~survey, "score"].isna().all()
    assert (events.loc[survey, "score"] % 1 == 0).all()
    assert set(events.loc[events["kind"] == "Web login", "channel"]) == {"web"}
    kinds = clean.truth_json["interaction_kinds"]
    assert {label: entry["kind"] for label, entry in kinds.items()} == KIND_LABELS
    assert {label: entry["rows"] for label, entry in kinds.items()} == events["kind"].value_counts().to_dict()
    assert not events.duplicated().any()


def _before_cutoff_profile(data: SynthData) -> pd.DataFrame:
    """Per customer, what the data shows on or before the truth cutoff (complaints, payments, spend)."""
    events = data.interactions[data.interactions["timestamp"] < CUTOFF + pd.Timedelta(days=1)]
    complaints_90 = (
        events[(events["kind"] == "Complaint") & (events["timestamp"] > CUTOFF - pd.Timedelta(days=89))]
        .groupby("customer_id")
        .size()
    )
    inv = data.invoices.assign(
        issued=pd.to_datetime(data.invoices["issued"]),
        due=pd.to_datetime(data.invoices["due"]),
        paid=pd.to_datetime(data.invoices["paid"]),
    )
    inv = inv[inv["issued"] <= CUTOFF]
    known = inv["paid"] <= CUTOFF
    overdue = inv[~known & (inv["due"] < CUTOFF)].groupby("customer_id")["amount"].sum()
    late = (inv["paid"] - inv["due"]).dt.days.clip(lower=0).where(known)
    recent = inv["issued"] > CUTOFF - pd.Timedelta(days=180)
    days_late = late[recent].groupby(inv.loc[recent, "customer_id"]).mean()
    tx = data.transactions
    recent_tx = tx[
        (tx["order_ts"] < CUTOFF + pd.Timedelta(days=1)) & (tx["order_ts"] > CUTOFF - pd.Timedelta(days=180))
    ]
    spend_180 = recent_tx.groupby("customer_id")["amount"].sum()
    orders_180 = (
        recent_tx[recent_tx["order_id"].str.startswith("O")].groupby("customer_id")["order_id"].nunique()
    )
    frame = data.truth.set_index("customer_id")
    return frame.assign(
        complaints_90d=complaints_90.reindex(frame.index, fill_value=0),
        overdue_amount=overdue.reindex(frame.index, fill_value=0.0),
        days_late_recent=days_late.reindex(frame.index),
        spend_180d=spend_180.reindex(frame.index, fill_value=0.0),
        orders_180d=orders_180.reindex(frame.index, fill_value=0),
    )


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    return _before_cutoff_profile(generate(SynthSpec(n_customers=4000, seed=11, planted=True)))


def test_lapse_shows_in_complaints_and_payments_before_the_cutoff_not_in_spend(planted):
    alive = planted[planted["alive_at_cutoff"]]
    distressed, others = alive[alive["distressed_at_cutoff"]], alive[~alive["distressed_at_cutoff"]]
    assert len(distressed) > 50
    assert distressed["complaints_90d"].mean() > 4 * others["complaints_90d"].mean()
    assert distressed["days_late_recent"].mean() > 1.3 * others["days_late_recent"].mean()
    assert (distressed["overdue_amount"] > 0).mean() > 2 * (others["overdue_amount"] > 0).mean()
    assert (distressed["complaints_planted"] > 0).mean() > 0.35
    assert (others["complaints_planted"] == 0).all()
    # purchases before the cutoff do not give them away: relative to the latent rate they are as usual
    expected_180d = alive["purchase_rate"] * 180
    flag = alive["distressed_at_cutoff"]
    ratio = (alive["orders_180d"][flag].sum() / expected_180d[flag].sum()) / (
        alive["orders_180d"][~flag].sum() / expected_180d[~flag].sum()
    )
    assert 0.8 < ratio < 1.25


def test_lapse_is_in_the_truth(planted):
    alive = planted[planted["alive_at_cutoff"] & (planted["purchase_rate"] > 0)]
    # expected orders over the horizon per unit of rate at the cutoff: the known lapse cuts it
    per_rate = alive["true_expected_spend"] / (alive["purchase_rate"] * alive["mean_basket"])
    distressed = alive["distressed_at_cutoff"]
    assert per_rate[distressed].median() < 0.5 * per_rate[~distressed].median()
    assert (per_rate[distressed] < 125).all()  # at most the lead days are left
    # at equal past spend (deciles of spend over the 180 days before the cutoff), lower true spend
    bins = pd.qcut(alive["spend_180d"].rank(method="first"), 5, labels=False)
    means = alive.groupby([bins, distressed])["true_expected_spend"].median().unstack()
    assert (means[True] < 0.6 * means[False]).all()


def test_responders_grow_after_their_first_response(clean: SynthData):
    truth = clean.truth.set_index("customer_id")
    responded = truth[truth["first_response_date"].notna() & truth["alive_at_cutoff"]]
    assert len(responded) > 50 and responded["responder"].mean() > 0.6
    tx = orders_only(clean.transactions).drop_duplicates("order_id")
    tx = tx[tx["customer_id"].isin(responded.index)]
    first = pd.to_datetime(responded["first_response_date"]).reindex(tx["customer_id"]).to_numpy()
    after = tx["order_ts"].to_numpy() >= first
    lifetimes = truth.loc[responded.index]
    del lifetimes
    # orders per day before and after the response, pooled over the responders (with a year either side)
    window = np.abs((tx["order_ts"].to_numpy() - first) / np.timedelta64(1, "D")) <= 180
    assert (after & window).sum() > 1.3 * (~after & window).sum()
    events = clean.interactions
    clicked = (
        events[events["kind"] == "Email clicked"].groupby("customer_id")["timestamp"].min().dt.normalize()
    )
    np.testing.assert_array_equal(
        pd.to_datetime(truth["first_response_date"].dropna()).sort_index().to_numpy(),
        clicked.sort_index().to_numpy(),
    )
    info = clean.truth_json["planted_effects"]["campaign_response"]
    assert info["responded_by_cutoff"] == int(truth["responded_by_cutoff"].sum())
    assert info["rate_multiplier"] == 2.0


def test_planted_effects_in_truth_json(clean: SynthData):
    effects = clean.truth_json["planted_effects"]
    assert set(effects) == {"lapse", "late_payer", "campaign_response", "margin"}
    truth = clean.truth
    lapse = effects["lapse"]
    assert lapse["prone_customers"] == int(truth["planted_lapse"].sum()) > 0
    assert lapse["distressed_at_cutoff"] == int(truth["distressed_at_cutoff"].sum()) > 0
    assert lapse["complaints_planted_by_cutoff"] == int(truth["complaints_planted"].sum())
    assert effects["late_payer"]["customers"] == int(truth["late_payer"].sum()) > 0
    assert truth.loc[~truth["planted_lapse"], "lapse_date"].isna().all()
    lapsed = truth["lapse_date"].notna()
    assert lapse["lapsed_in_period"] == int(lapsed.sum())
    gap = pd.to_datetime(truth.loc[lapsed, "lapse_date"]) - pd.to_datetime(
        truth.loc[lapsed, "lapse_onset_date"]
    )
    assert gap.dt.days.between(119, 120).all()
    # no purchase after the lapse
    tx = clean.transactions.merge(truth.loc[lapsed, ["customer_id", "lapse_date"]], on="customer_id")
    assert (
        tx.loc[tx["amount"] > 0, "order_ts"]
        < pd.to_datetime(tx.loc[tx["amount"] > 0, "lapse_date"]) + pd.Timedelta(days=1)
    ).all()
    json.dumps(effects)


def test_late_payers_pay_late_and_buy_normally(clean: SynthData):
    inv = clean.invoices.merge(clean.truth[["customer_id", "late_payer", "planted_lapse"]], on="customer_id")
    late = (pd.to_datetime(inv["paid"]) - pd.to_datetime(inv["due"])).dt.days.clip(lower=0)
    steady = ~inv["planted_lapse"]
    assert late[steady & inv["late_payer"]].mean() > late[steady & ~inv["late_payer"]].mean() + 10
    truth = clean.truth[clean.truth["alive_at_cutoff"] & ~clean.truth["planted_lapse"]]
    per_rate = truth["true_expected_spend"] / (truth["purchase_rate"] * truth["mean_basket"])
    ratio = per_rate[truth["late_payer"]].median() / per_rate[~truth["late_payer"]].median()
    assert 0.8 < ratio < 1.25


def test_expected_margin_tracks_realized(clean: SynthData):
    truth = clean.truth
    assert (truth["true_expected_margin"] >= 0).all()
    assert (truth["true_expected_margin"] < truth["true_expected_spend"] + 0.01).all()
    assert spearmanr(truth["true_expected_margin"], truth["realized_margin"]).statistic > 0.6
    assert 0.7 < truth["realized_margin"].sum() / truth["true_expected_margin"].sum() < 1.3
    tx = clean.transactions
    day = tx["order_ts"].dt.normalize()
    window = (day > CUTOFF) & (day <= CUTOFF + pd.Timedelta(days=365))
    margin = (tx["amount"] - tx["cost"])[window].groupby(tx.loc[window, "customer_id"]).sum()
    realized = truth.set_index("customer_id")["realized_margin"]
    np.testing.assert_allclose(margin.reindex(realized.index, fill_value=0.0), realized, atol=0.011)


def test_dirty_invoices_and_interactions_carry_the_recorded_faults(dirty: SynthData):
    by_file = dirty.truth_json["injected_by_file"]
    assert by_file["transactions"] == dirty.truth_json["injected"]
    inv = dirty.invoices
    found = {
        "missing_invoice_id": int(inv["invoice_id"].isna().sum()),
        "paid_before_issued": int((inv["paid"].notna() & (inv["paid"] < inv["issued"])).sum()),
        "negative_amount": int((inv["amount"] < 0).sum()),
    }
    assert found == by_file["invoices"] and all(2 <= n <= 20 for n in found.values())
    assert (
        dirty.truth_json["invoices"] == len(inv) == dirty.truth_json["clean_invoices"] + sum(found.values())
    )
    assert inv["invoice_id"].dropna().is_unique
    events = dirty.interactions
    assert events["timestamp"].dtype == object
    ts = pd.to_datetime(events["timestamp"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    customer = events["customer_id"].fillna("").str.strip()
    found = {
        "bad_timestamp": int(ts.isna().sum()),
        "unknown_kind": int((~events["kind"].isin(KIND_LABELS)).sum()),
        "missing_customer_id": int((customer == "").sum()),
    }
    assert found == by_file["interactions"] and all(2 <= n <= 20 for n in found.values())
    faults = (
        ts.isna().astype(int) + (~events["kind"].isin(KIND_LABELS)).astype(int) + (customer == "").astype(int)
    )
    assert faults.max() == 1
    # plus well-formed events of customers outside the population (ids U…), counted apart
    strangers = customer.str.startswith("U")
    assert int(strangers.sum()) == dirty.truth_json["unknown_customer_events"] >= 2
    assert customer[strangers].nunique() == dirty.truth_json["unknown_customer_ids"]
    assert not customer[strangers].isin(dirty.customers["customer_id"]).any()
    assert (
        dirty.truth_json["interactions"]
        == len(events)
        == dirty.truth_json["clean_interactions"] + sum(found.values()) + int(strangers.sum())
    )
    bad = np.flatnonzero(faults.to_numpy())
    assert bad.min() < len(events) / 3 and bad.max() > 2 * len(events) / 3  # spread, not appended


def test_dirty_keeps_clean_invoices_and_interactions(dirty: SynthData):
    clean = generate(SynthSpec(n_customers=800, seed=3, planted=True))
    inv = dirty.invoices
    bad = (
        inv["invoice_id"].isna() | (inv["amount"] < 0) | (inv["paid"].notna() & (inv["paid"] < inv["issued"]))
    )
    kept = inv[~bad]
    kept = kept[kept["invoice_id"].str[1:].astype(int) <= len(clean.invoices)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, clean.invoices)
    events = dirty.interactions
    ts = pd.to_datetime(events["timestamp"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    customer = events["customer_id"].fillna("").str.strip()
    good = ts.notna() & events["kind"].isin(KIND_LABELS) & (customer != "") & ~customer.str.startswith("U")
    kept = events[good].reset_index(drop=True)
    expected = clean.interactions.assign(
        timestamp=clean.interactions["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")
    )
    pd.testing.assert_frame_equal(kept, expected)


def test_product_mix_moves_the_margin_rate(clean: SynthData):
    truth = clean.truth
    expected = truth[truth["true_expected_spend"] > 0]
    rate = (expected["true_expected_margin"] / expected["true_expected_spend"]).groupby(
        expected["product_mix"]
    )
    rate = rate.median()
    assert rate["value"] + 0.015 < rate["standard"] < rate["premium"] - 0.015
    buyers = truth[truth["realized_spend"] > 200]
    realized = (buyers["realized_margin"] / buyers["realized_spend"]).groupby(buyers["product_mix"]).median()
    assert realized["value"] < realized["standard"] < realized["premium"]
    info = clean.truth_json["planted_effects"]["margin"]["expected_order_margin_rate"]
    assert info["value"] < info["standard"] < info["premium"]


def test_truth_expects_the_growth_of_responders_yet_to_respond(clean: SynthData):
    truth = clean.truth
    waiting = truth[
        truth["alive_at_cutoff"]
        & ~truth["responded_by_cutoff"]
        & ~truth["planted_lapse"]
        & (truth["purchase_rate"] > 0)
    ]
    per_rate = waiting["true_expected_spend"] / (waiting["purchase_rate"] * waiting["mean_basket"])
    by_responder = per_rate.groupby(waiting["responder"]).median()
    assert waiting["responder"].sum() > 30
    assert by_responder[True] > 1.1 * by_responder[False]


def test_unplanted_data_has_no_planted_effects():
    data = generate(SynthSpec(n_customers=600, seed=5))  # the spec's default
    truth = data.truth
    assert not truth["planted_lapse"].any() and not truth["distressed_at_cutoff"].any()
    assert truth["lapse_date"].isna().all() and (truth["complaints_planted"] == 0).all()
    assert set(truth["product_mix"]) == {"standard"}
    effects = data.truth_json["planted_effects"]
    assert effects["lapse"]["prone_customers"] == 0
    assert effects["campaign_response"]["rate_multiplier"] == 1.0
    assert data.truth_json["spec"]["planted"] is False
    assert len(data.invoices) == data.truth_json["orders"] and len(data.interactions) > 0
    # the response does not move the rate: the truth per unit of rate is the same for responders
    alive = truth[truth["alive_at_cutoff"] & (truth["purchase_rate"] > 0)]
    per_rate = alive["true_expected_spend"] / (alive["purchase_rate"] * alive["mean_basket"])
    medians = per_rate.groupby(alive["responded_by_cutoff"]).median()
    assert 0.8 < medians[True] / medians[False] < 1.25


def test_cli_synth_options(tmp_path):
    from segml.cli import app

    args = ["synth", "--customers", "150", "--seed", "2", "--no-planted", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["spec"]["planted"] is False
    output = " ".join(result.output.split())  # the console may wrap the line
    assert f"{truth['invoices']:,} invoices" in output
    assert f"{truth['interactions']:,} interactions" in output
