"""Features, labels and training frames against an independent pandas computation on a hand-made fixture."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import INTERACTION_FEATURES, INVOICE_FEATURES

from segml.config import FeatureConfig
from segml.errors import ConfigError, InputFileError, SegmlError
from segml.features import (
    FEATURE_DESCRIPTIONS,
    LABEL_COLUMNS,
    NUMERIC_FEATURES,
    build_features,
    build_labels,
    describe_feature,
    feature_columns,
    training_frame,
)

AS_OF = dt.date(2024, 6, 30)
SPEC = FeatureConfig(threads=1)


def make_transactions() -> pd.DataFrame:
    """Clean transactions covering the awkward cases (all ids are strings, "00001" stays "00001").

    * 00001: order lines on one day (two rows, one order), a same-day return, a no-order-id day, product ids,
      a row just after midnight of the cutoff day (counts) and rows after the cutoff (must not count).
    * 00002: no order ids, no product ids, no quantities; identical same-day rows (real repeat purchases).
    * 00003: one purchase day only, then a return on a later day whose net is negative.
    * 00004: a single purchase day, 400 days before the cutoff (outside every window but 365 ... no: 400).
    * 00005: only rows after the cutoff: not a customer yet at the cutoff.
    * 00006: many purchase days spread over two years (windows, trend, active months, std).
    """
    rows = [
        # customer, order, timestamp, amount, quantity, product
        ("00001", "A1", "2024-01-10 09:00:00", 30.0, 1.0, "P1"),
        ("00001", "A1", "2024-01-10 09:00:00", 20.0, 2.0, "P2"),
        ("00001", "A2", "2024-01-10 18:30:00", -5.0, -1.0, "P2"),
        ("00001", None, "2024-03-05 12:00:00", 12.5, 1.0, "P3"),
        ("00001", "A3", "2024-06-29 23:59:59", 40.0, 4.0, "P1"),
        ("00001", "A4", "2024-06-30 00:00:01", 7.0, 1.0, None),
        ("00001", "A5", "2024-07-01 00:00:00", 1000.0, 9.0, "P9"),
        ("00001", "A6", "2024-09-01 10:00:00", -30.0, -1.0, "P1"),
        ("00002", None, "2023-11-20 10:00:00", 15.0, None, None),
        ("00002", None, "2023-11-20 10:00:00", 15.0, None, None),
        ("00002", None, "2024-02-01 08:00:00", 25.0, None, None),
        ("00002", None, "2024-05-15 08:00:00", 5.0, None, None),
        ("00002", None, "2024-07-20 08:00:00", 99.0, None, None),
        ("00003", "C1", "2024-04-01 10:00:00", 100.0, 2.0, "P4"),
        ("00003", "C2", "2024-04-20 10:00:00", -150.0, -3.0, "P4"),
        ("00004", "D1", "2023-05-27 10:00:00", 60.0, 1.0, "P5"),
        ("00005", "E1", "2024-07-02 10:00:00", 80.0, 1.0, "P6"),
        ("00006", "F1", "2022-08-15 10:00:00", 10.0, 1.0, "P1"),
        ("00006", "F2", "2023-01-03 10:00:00", 20.0, 1.0, "P2"),
        ("00006", "F3", "2023-07-30 10:00:00", 30.0, 1.0, "P3"),
        ("00006", "F4", "2023-12-24 10:00:00", 40.0, 1.0, "P1"),
        ("00006", "F5", "2024-02-28 10:00:00", 50.0, 1.0, "P1"),
        ("00006", "F6", "2024-03-31 10:00:00", 60.0, 1.0, "P2"),
        ("00006", "F7", "2024-04-02 10:00:00", 70.0, 1.0, "P3"),
        ("00006", "F8", "2024-06-01 10:00:00", 80.0, 1.0, "P7"),
        ("00006", "F8", "2024-06-01 10:00:00", -80.0, -1.0, "P7"),
        ("00006", "F9", "2024-06-30 10:00:00", 90.0, 1.0, "P8"),
    ]
    frame = pd.DataFrame(
        rows, columns=["customer_id", "order_id", "timestamp", "amount", "quantity", "product_id"]
    )
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    frame["channel"] = "web"
    frame["source"] = "orders"
    frame["source_row"] = np.arange(1, len(frame) + 1, dtype="int64")
    frame["is_return"] = frame["amount"] < 0
    frame["is_outlier"] = False
    return frame


def make_customers() -> pd.DataFrame:
    """Attributes: 00001/00003 with signup dates, 00004 no signup date (bought long ago), 00007 never bought
    (signed up before the cutoff), 00008 never bought and no signup date (not in the population unless
    undated customers are included), 00009 signs up after the cutoff (not a customer yet), 00002 has no row."""
    return pd.DataFrame(
        {
            "customer_id": ["00001", "00003", "00004", "00006", "00007", "00008", "00009"],
            "signup_date": pd.to_datetime(
                ["2023-12-01", "2024-03-30", None, "2022-01-01", "2024-06-01", None, "2024-07-15"]
            ).date,
            "industry": ["retail", "food", None, "retail", "tech", "food", "tech"],
            "size": ["S", "M", "L", "S", "M", None, "L"],
        }
    )


# --------------------------------------------------------------------------------------------------------------
# Independent reference: plain pandas, written from the contract's definitions.


def reference_features(
    tx: pd.DataFrame,
    as_of: dt.date,
    spec: FeatureConfig,
    customers: pd.DataFrame | None = None,
    undated: str = "exclude",
) -> pd.DataFrame:
    cutoff = pd.Timestamp(as_of)
    rows = tx.assign(day=tx["timestamp"].dt.normalize())
    rows = rows[rows["day"] <= cutoff]
    days = (
        rows.groupby(["customer_id", "day"], as_index=False)["amount"]
        .sum()
        .rename(columns={"amount": "spend"})
    )
    days = days.sort_values(["customer_id", "day"])
    days["gap"] = days.groupby("customer_id")["day"].diff().dt.days.astype(float)
    days["age"] = (cutoff - days["day"]).dt.days
    by_day = days.groupby("customer_id")
    ids = pd.Index(sorted(days["customer_id"].unique()), name="customer_id")
    out = pd.DataFrame(index=ids)
    first, last = by_day["day"].min(), by_day["day"].max()
    n_days = by_day.size()
    out["recency_days"] = (cutoff - last).dt.days.astype(float)
    out["t_days"] = (cutoff - first).dt.days.astype(float)
    out["btyd_recency_days"] = (last - first).dt.days.astype(float)
    out["frequency"] = (n_days - 1).astype(float)
    repeat = days[days["gap"].notna()].groupby("customer_id")["spend"].mean()
    out["btyd_monetary"] = repeat.reindex(ids).fillna(0.0)
    out["n_purchase_days"] = n_days.astype(float)
    with_order = rows[rows["order_id"].notna()].groupby("customer_id")["order_id"].nunique()
    without_order = rows[rows["order_id"].isna()].groupby("customer_id")["day"].nunique()
    out["n_orders"] = with_order.reindex(ids).fillna(0) + without_order.reindex(ids).fillna(0)
    out["tenure_days"] = out["t_days"]
    out["monetary_total"] = by_day["spend"].sum()
    out["gross_spend"] = rows["amount"].clip(lower=0).groupby(rows["customer_id"]).sum()
    out["return_amount"] = (-rows["amount"].clip(upper=0)).groupby(rows["customer_id"]).sum()
    out["returns_rate"] = np.where(out["gross_spend"] > 0, out["return_amount"] / out["gross_spend"], 0.0)
    out["monetary_mean"] = out["monetary_total"] / out["n_purchase_days"]
    out["monetary_max"] = by_day["spend"].max()
    out["interpurchase_mean_days"] = by_day["gap"].mean()
    out["interpurchase_std_days"] = by_day["gap"].std(ddof=1)
    for w in spec.windows:
        recent = days[days["age"] < w].groupby("customer_id")["spend"]
        out[f"spend_{w}d"] = recent.sum().reindex(ids).fillna(0.0)
    for w in spec.windows:
        recent = days[days["age"] < w].groupby("customer_id")["spend"]
        out[f"orders_{w}d"] = recent.size().reindex(ids).fillna(0).astype(float)
    tw = spec.trend_window
    recent = days[days["age"] < tw].groupby("customer_id")["spend"].sum().reindex(ids).fillna(0.0)
    before = days[(days["age"] >= tw) & (days["age"] < 2 * tw)].groupby("customer_id")["spend"].sum()
    before = before.reindex(ids).fillna(0.0)
    out["trend_ratio"] = np.log((recent.clip(lower=0) + 1) / (before.clip(lower=0) + 1))
    month = days["day"].dt.year * 12 + days["day"].dt.month
    in_window = (cutoff.year * 12 + cutoff.month) - month < spec.active_months
    active = days[in_window].assign(month=month[in_window]).groupby("customer_id")["month"].nunique()
    out["active_months_share"] = active.reindex(ids).fillna(0) / spec.active_months
    out["repurchase"] = (out["frequency"] > 0).astype(float)
    breadth = rows.groupby("customer_id")["product_id"].nunique()
    out["product_breadth"] = breadth.reindex(ids).replace(0, np.nan).astype(float)
    out["quantity_total"] = rows.groupby("customer_id")["quantity"].sum(min_count=1)
    out["churn_risk_ratio"] = out["recency_days"] / out["interpurchase_mean_days"]
    with_margin = "margin" in tx.columns
    if with_margin:
        margin_days = rows.groupby(["customer_id", "day"])["margin"].sum().reset_index()
        margin_days["age"] = (cutoff - margin_days["day"]).dt.days
        out["margin_total"] = margin_days.groupby("customer_id")["margin"].sum()
        for w in spec.windows:
            recent = margin_days[margin_days["age"] < w].groupby("customer_id")["margin"]
            out[f"margin_{w}d"] = recent.sum().reindex(ids).fillna(0.0)
        out["margin_rate"] = (out["margin_total"] / out["gross_spend"]).where(out["gross_spend"] > 0)
    out.insert(0, "has_purchases", True)
    out = out.reset_index()

    attributes: list[str] = []
    if customers is not None:
        attributes = [c for c in customers.columns if c not in ("customer_id", "signup_date")]
        signup = pd.to_datetime(customers["signup_date"])
        # signed up by the cutoff; no signup date: only once bought (buyers come from the transactions)
        eligible = customers[(signup <= cutoff) | (signup.isna() & (undated == "include"))]
        new = eligible[~eligible["customer_id"].isin(out["customer_id"])][["customer_id"]].copy()
        new["has_purchases"] = False
        zero_filled = [
            "frequency",
            "btyd_monetary",
            "n_purchase_days",
            "n_orders",
            "monetary_total",
            "gross_spend",
            "return_amount",
            "returns_rate",
            *[f"spend_{w}d" for w in spec.windows],
            *[f"orders_{w}d" for w in spec.windows],
            "trend_ratio",
            "active_months_share",
            "repurchase",
            *(["margin_total", *[f"margin_{w}d" for w in spec.windows]] if with_margin else []),
        ]
        for name in zero_filled:
            new[name] = 0.0
        out = pd.concat([out, new], ignore_index=True)
        out = out.merge(customers, on="customer_id", how="left")
        known = pd.to_datetime(out["signup_date"])
        out["tenure_days"] = np.where(known.notna(), (cutoff - known).dt.days, out["t_days"])
        out = out.drop(columns="signup_date")
    out["as_of"] = pd.Series(cutoff, index=out.index).astype("datetime64[ns]")
    out = out.sort_values("customer_id").reset_index(drop=True)
    numeric = NUMERIC_FEATURES(spec, with_margin=with_margin)
    columns = ["customer_id", "as_of", "has_purchases", *numeric, *attributes]
    out = out[columns]
    out[numeric] = out[numeric].astype("float64")
    out["has_purchases"] = out["has_purchases"].astype(bool)
    for name in attributes:
        out[name] = out[name].astype(object).where(out[name].notna(), None)
    return out


def reference_labels(
    tx: pd.DataFrame, cutoff: dt.date, horizon: int, label_end: dt.date | None
) -> pd.DataFrame:
    end = pd.Timestamp(cutoff) + pd.Timedelta(days=horizon)
    if label_end is not None:
        end = min(end, pd.Timestamp(label_end))
    day = tx["timestamp"].dt.normalize()
    window = tx[(day > pd.Timestamp(cutoff)) & (day <= end)].assign(day=day)
    grouped = window.groupby("customer_id")
    out = pd.DataFrame(
        {
            "future_spend": grouped["amount"].sum(),
            "future_orders": grouped["day"].nunique().astype(float),
        }
    )
    out["future_active"] = 1.0
    out["label_days"] = float((end - pd.Timestamp(cutoff)).days)
    return out.reset_index().sort_values("customer_id").reset_index(drop=True)


def assert_same(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(actual.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(actual, expected, check_exact=False, rtol=1e-9, atol=0.0)


# --------------------------------------------------------------------------------------------------------------
# Tests


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    return make_transactions()


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return make_customers()


@pytest.mark.parametrize("as_of", [AS_OF, dt.date(2024, 1, 10), dt.date(2024, 4, 20), dt.date(2025, 1, 1)])
def test_features_match_independent_pandas(transactions, as_of):
    actual = build_features(transactions, as_of, SPEC)
    assert_same(actual, reference_features(transactions, as_of, SPEC))


def with_margin(tx: pd.DataFrame) -> pd.DataFrame:
    """The fixture with a line margin: 30% of the amount less 2 per line, so small lines lose money and
    returns give margin back (the sign follows the amount)."""
    return tx.assign(margin=np.round(tx["amount"] * 0.3 - 2.0 * np.sign(tx["amount"]), 2))


@pytest.mark.parametrize("as_of", [AS_OF, dt.date(2024, 1, 10), dt.date(2024, 4, 20), dt.date(2025, 1, 1)])
def test_margin_features_match_independent_pandas(transactions, customers, as_of):
    tx = with_margin(transactions)
    assert_same(build_features(tx, as_of, SPEC), reference_features(tx, as_of, SPEC))
    actual = build_features(tx, as_of, SPEC, customers)
    assert_same(actual, reference_features(tx, as_of, SPEC, customers))
    # the other features are those of the table without margin, column for column
    plain = build_features(transactions, as_of, SPEC, customers)
    assert_same(actual[plain.columns], plain)


def test_margin_features_hand_checked(transactions, customers):
    spec = FeatureConfig(windows=[30, 90], threads=1)
    features = build_features(with_margin(transactions), AS_OF, spec, customers).set_index("customer_id")
    margin = [c for c in features.columns if c.startswith("margin_")]
    assert margin == ["margin_total", "margin_30d", "margin_90d", "margin_rate"]
    one = features.loc["00001"]
    # per line up to the cutoff: 30 -> 7, 20 -> 4, -5 -> 0.5, 12.5 -> 1.75, 40 -> 10, 7 -> 0.1
    assert one["margin_total"] == pytest.approx(7 + 4 + 0.5 + 1.75 + 10 + 0.1)
    assert one["margin_30d"] == pytest.approx(10.1)
    assert one["margin_rate"] == pytest.approx(23.35 / 109.5)
    three = features.loc["00003"]  # 100 -> 28 (90 days before: outside 90d), -150 -> -43 (71 days before)
    assert three["margin_total"] == pytest.approx(-15.0) and three["margin_90d"] == pytest.approx(-43.0)
    never = features.loc["00007"]  # signed up, never bought: no margin, and no rate without spend
    assert never["margin_total"] == 0.0 and np.isnan(never["margin_rate"])
    assert list(features.columns) == feature_columns(spec, ["industry", "size"], with_margin=True)[1:]
    assert describe_feature("margin_45d") == "margin (spend minus cost, returns netted) in the last 45 days"


@pytest.mark.parametrize("cutoff", [dt.date(2024, 1, 10), dt.date(2024, 4, 20)])
def test_margin_label_matches_independent_pandas(transactions, cutoff):
    """``future_margin``: the net margin in (cutoff, cutoff + horizon] (unclipped), only with margin."""
    tx = with_margin(transactions)
    frame = training_frame(tx, [cutoff], 120, SPEC).set_index("customer_id")
    day = pd.to_datetime(tx["timestamp"]).dt.normalize()
    inside = (day > pd.Timestamp(cutoff)) & (day <= pd.Timestamp(cutoff) + pd.Timedelta(days=120))
    # the population at the cutoff: customers who first buy later are not in it
    expected = tx[inside].groupby("customer_id")["margin"].sum().reindex(frame.index).fillna(0.0)
    got = frame["future_margin"]
    assert (expected != 0).any()
    assert got.to_dict() == pytest.approx(expected.to_dict())
    assert "future_margin" not in training_frame(transactions, [cutoff], 120, SPEC).columns


def test_no_margin_column_no_margin_features(transactions):
    features = build_features(transactions, AS_OF, SPEC)
    assert not [c for c in features.columns if c.startswith("margin")]
    assert list(features.columns) == feature_columns(SPEC)


def test_features_with_customers_match_independent_pandas(transactions, customers):
    actual = build_features(transactions, AS_OF, SPEC, customers)
    expected = reference_features(transactions, AS_OF, SPEC, customers)
    assert_same(actual, expected)
    assert actual["customer_id"].tolist() == ["00001", "00002", "00003", "00004", "00006", "00007"]


def test_undated_customers_enter_with_their_first_purchase(transactions, customers):
    """No signup date + no purchase by the cutoff = not in the population (00008); with a purchase they are
    (00004). ``undated: include`` keeps them at every cutoff, with one warning."""
    from segml import features as features_module

    expected = reference_features(transactions, AS_OF, SPEC, customers, undated="include")
    features_module._undated_warned = False
    with pytest.warns(features_module.UndatedCustomersWarning, match="undated: include"):
        included = build_features(transactions, AS_OF, SPEC, customers, undated="include")
    assert_same(included, expected)
    assert "00008" in included["customer_id"].tolist()
    # the warning is printed once per process
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_features(transactions, AS_OF, SPEC, customers, undated="include")
    with pytest.raises(ConfigError, match="undated"):
        build_features(transactions, AS_OF, SPEC, customers, undated="sometimes")

    # the training lattice follows the same rule at every cutoff
    early = dt.date(2024, 1, 10)
    frame = training_frame(transactions, [early, AS_OF], 30, SPEC, customers)
    for cutoff, rows in frame.groupby("cutoff"):
        expected_ids = reference_features(transactions, cutoff.date(), SPEC, customers)["customer_id"]
        assert rows["customer_id"].tolist() == expected_ids.tolist()
        assert "00008" not in rows["customer_id"].tolist()


def test_other_windows_match_independent_pandas(transactions):
    spec = FeatureConfig(windows=[7, 45, 400], trend_window=30, active_months=3, threads=1)
    assert_same(build_features(transactions, AS_OF, spec), reference_features(transactions, AS_OF, spec))


def test_hand_checked_values(transactions, customers):
    features = build_features(transactions, AS_OF, SPEC, customers).set_index("customer_id")
    one = features.loc["00001"]
    # purchase days: 01-10 (30 + 20 - 5 = 45), 03-05 (12.5), 06-29 (40), 06-30 (7); 07-01 and later excluded
    assert one["n_purchase_days"] == 4
    assert one["frequency"] == 3
    assert one["recency_days"] == 0
    assert one["t_days"] == 172  # 2024-01-10 .. 2024-06-30
    assert one["btyd_recency_days"] == 172
    assert one["monetary_total"] == pytest.approx(104.5)
    assert one["gross_spend"] == pytest.approx(109.5)
    assert one["return_amount"] == pytest.approx(5.0)
    assert one["returns_rate"] == pytest.approx(5.0 / 109.5)
    assert one["btyd_monetary"] == pytest.approx((12.5 + 40 + 7) / 3)
    assert one["monetary_max"] == pytest.approx(45.0)
    assert one["n_orders"] == 5  # A1, A2, A3, A4 + the day without an order id
    assert one["product_breadth"] == 3  # P1, P2, P3 (P9 comes after the cutoff)
    assert one["quantity_total"] == pytest.approx(8.0)
    assert one["interpurchase_mean_days"] == pytest.approx(172 / 3)  # gaps 55, 116, 1
    assert one["interpurchase_std_days"] == pytest.approx(np.std([55, 116, 1], ddof=1))
    assert one["spend_30d"] == pytest.approx(47.0)
    assert one["orders_90d"] == 2
    assert one["spend_180d"] == pytest.approx(104.5)
    assert one["tenure_days"] == 212  # signup 2023-12-01
    assert one["active_months_share"] == pytest.approx(3 / 12)  # Jan, Mar, Jun
    assert one["churn_risk_ratio"] == 0
    assert one["industry"] == "retail"

    two = features.loc["00002"]  # no order ids: orders = purchase days; identical rows are both purchases
    assert two["n_orders"] == two["n_purchase_days"] == 3
    assert two["monetary_total"] == pytest.approx(60.0)
    assert np.isnan(two["product_breadth"]) and np.isnan(two["quantity_total"])
    assert two["tenure_days"] == two["t_days"]  # no customer row
    assert two["industry"] is None

    three = features.loc["00003"]  # a later return nets the customer negative
    assert three["monetary_total"] == pytest.approx(-50.0)
    assert three["returns_rate"] == pytest.approx(1.5)
    assert three["btyd_monetary"] == pytest.approx(-150.0)
    # 04-01 is 90 days back (previous trend window, +100); 04-20 is recent (-150, clipped at 0)
    assert three["trend_ratio"] == pytest.approx(np.log(1 / 101))
    assert np.isnan(three["interpurchase_std_days"])  # one gap only

    four = features.loc["00004"]  # 400 days ago: outside every window
    assert four["frequency"] == 0 and four["btyd_monetary"] == 0 and four["repurchase"] == 0
    assert four["spend_365d"] == 0 and four["orders_365d"] == 0
    assert np.isnan(four["interpurchase_mean_days"]) and np.isnan(four["churn_risk_ratio"])

    six = features.loc["00006"]
    # trend: last 90 days (> 2024-04-01): 04-02 70, 06-01 0 (return nets out), 06-30 90 -> 160;
    # the 90 days before (2024-01-03 .. 2024-04-01): 02-28 50, 03-31 60 -> 110
    assert six["trend_ratio"] == pytest.approx(np.log(161 / 111))
    assert six["orders_30d"] == 2  # 06-01 counts as a purchase day although it nets to 0

    never = features.loc["00007"]
    assert not never["has_purchases"]
    assert np.isnan(never["recency_days"]) and never["n_purchase_days"] == 0 and never["monetary_total"] == 0
    assert never["tenure_days"] == 29
    assert "00008" not in features.index  # no signup date, no purchase: not a customer yet
    assert "00005" not in features.index and "00009" not in features.index


def test_output_contract(transactions, customers):
    features = build_features(transactions, AS_OF, SPEC, customers)
    assert list(features.columns) == feature_columns(SPEC, ["industry", "size"])
    assert features.index.equals(pd.RangeIndex(len(features)))
    assert features["customer_id"].is_monotonic_increasing
    assert str(features["as_of"].dtype) == "datetime64[ns]"
    assert (features["as_of"] == pd.Timestamp(AS_OF)).all()
    assert features["has_purchases"].dtype == bool
    assert all(features[c].dtype == "float64" for c in NUMERIC_FEATURES(SPEC))
    for name in NUMERIC_FEATURES(SPEC) + ["customer_id", "as_of", "has_purchases"]:
        assert describe_feature(name) and name in FEATURE_DESCRIPTIONS
    assert describe_feature("spend_45d") == "net spend in the last 45 days"


def test_parquet_input_equals_dataframe_input(tmp_path, transactions, customers):
    tx_path, cu_path = tmp_path / "tx.parquet", tmp_path / "cu.parquet"
    transactions.to_parquet(tx_path, index=False)
    customers.to_parquet(cu_path, index=False)
    assert_same(
        build_features(tx_path, AS_OF, SPEC, cu_path), build_features(transactions, AS_OF, SPEC, customers)
    )


def test_attribute_names_need_not_be_identifiers(transactions, customers):
    odd = customers.rename(columns={"industry": "order", "size": "org type"})
    features = build_features(transactions, AS_OF, SPEC, odd)
    assert list(features.columns[-2:]) == ["order", "org type"]
    assert features.set_index("customer_id").loc["00007", "order"] == "tech"
    with pytest.raises(InputFileError, match="clash with feature names"):
        build_features(transactions, AS_OF, SPEC, customers.rename(columns={"size": "spend_7d"}))


def test_missing_optional_columns(transactions):
    minimal = transactions[["customer_id", "timestamp", "amount"]]
    features = build_features(minimal, AS_OF, SPEC)
    full = build_features(transactions, AS_OF, SPEC)
    assert features["product_breadth"].isna().all() and features["quantity_total"].isna().all()
    assert (features["n_orders"] == features["n_purchase_days"]).all()
    pd.testing.assert_series_equal(features["monetary_total"], full["monetary_total"])


def test_input_errors(tmp_path, transactions, customers):
    with pytest.raises(InputFileError, match="missing column.*amount"):
        build_features(transactions.drop(columns="amount"), AS_OF, SPEC)
    with pytest.raises(InputFileError, match="not found"):
        build_features(tmp_path / "nope.parquet", AS_OF, SPEC)
    with pytest.raises(InputFileError, match="1 duplicate customer_id"):
        build_features(transactions, AS_OF, SPEC, pd.concat([customers, customers.iloc[:1]]))
    with pytest.raises(ConfigError, match="features.windows"):
        build_features(transactions, AS_OF, FeatureConfig(windows=[30, 30]))
    with pytest.raises(ConfigError, match="engine"):
        build_features(transactions, AS_OF, SPEC, engine="pandas")  # type: ignore[arg-type]


def test_no_rows_before_cutoff_gives_empty_frame(transactions):
    features = build_features(transactions, dt.date(2020, 1, 1), SPEC)
    assert len(features) == 0
    assert list(features.columns) == feature_columns(SPEC)


# --------------------------------------------------------------------------------------------------------------
# Labels and training frames


@pytest.mark.parametrize(
    ("cutoff", "horizon", "label_end"),
    [(AS_OF, 90, None), (AS_OF, 365, dt.date(2024, 8, 31)), (dt.date(2024, 3, 31), 30, None)],
)
def test_labels_match_independent_pandas(transactions, cutoff, horizon, label_end):
    actual = build_labels(transactions, cutoff, horizon, label_end=label_end)
    assert list(actual.columns) == ["customer_id", *LABEL_COLUMNS]
    assert_same(actual, reference_labels(transactions, cutoff, horizon, label_end))


def test_labels_hand_checked(transactions):
    labels = build_labels(transactions, AS_OF, 90, label_end=dt.date(2024, 8, 31)).set_index("customer_id")
    # (06-30, 08-31]: 00001 has 07-01 (1000) and 09-01 (after label_end: cut); 00002 07-20; 00005 07-02
    assert labels.index.tolist() == ["00001", "00002", "00005"]
    assert labels.loc["00001", "future_spend"] == 1000.0
    assert labels.loc["00001", "future_orders"] == 1
    assert (labels["label_days"] == 62).all()
    assert (labels["future_active"] == 1).all()
    unclipped = build_labels(transactions, AS_OF, 90).set_index("customer_id")
    assert unclipped.loc["00001", "future_spend"] == 970.0  # the 09-01 return is within 90 days
    assert (unclipped["label_days"] == 90).all()


def test_label_window_must_not_be_empty(transactions):
    with pytest.raises(ConfigError, match="label_end"):
        build_labels(transactions, AS_OF, 30, label_end=AS_OF)
    with pytest.raises(ConfigError, match="horizon_days"):
        build_labels(transactions, AS_OF, 0)


def test_training_frame_stacks_features_and_labels(transactions, customers):
    cutoffs = [dt.date(2024, 6, 30), dt.date(2024, 3, 31), dt.date(2024, 7, 31)]
    label_end = dt.date(2024, 9, 15)
    frame = training_frame(transactions, cutoffs, 60, SPEC, customers, label_end=label_end)
    assert frame.index.equals(pd.RangeIndex(len(frame)))
    assert list(frame.columns) == [
        "customer_id",
        "cutoff",
        *feature_columns(SPEC, ["industry", "size"])[1:],
        "future_spend",
        "future_orders",
        "future_active",
        "label_days",
    ]
    assert frame["cutoff"].is_monotonic_increasing
    for cutoff in sorted(cutoffs):
        part = frame[frame["cutoff"] == pd.Timestamp(cutoff)].reset_index(drop=True)
        features = build_features(transactions, cutoff, SPEC, customers)
        assert_same(part[features.columns], features)
        expected = reference_labels(transactions, cutoff, 60, label_end).set_index("customer_id")
        joined = part.set_index("customer_id")
        for name in ("future_spend", "future_orders", "future_active"):
            want = expected[name].reindex(joined.index).fillna(0.0)
            pd.testing.assert_series_equal(joined[name], want, check_names=False, rtol=1e-9)
        want_days = min(60, (label_end - cutoff).days)
        assert (part["label_days"] == want_days).all()
    # 2024-07-31 + 60 days runs past label_end: the window is clipped to 46 days
    assert (frame.loc[frame["cutoff"] == pd.Timestamp(2024, 7, 31), "label_days"] == 46).all()
    late = frame[(frame["cutoff"] == pd.Timestamp(2024, 7, 31))].set_index("customer_id")
    assert late.loc["00001", "future_spend"] == -30.0  # the 09-01 return
    assert late.loc["00007", "future_spend"] == 0.0  # never bought: zero-filled


def test_training_frame_rejects_no_cutoffs(transactions):
    with pytest.raises(ConfigError, match="at least one cutoff"):
        training_frame(transactions, [], 30, SPEC)


# --------------------------------------------------------------------------------------------------------------
# run_features (what `segml features` calls)


def _experiment(tmp_path, with_customers: bool):
    from segml.config import load_experiment

    yaml_text = f"""
data:
  transactions:
    - path: raw/tx.parquet
      columns: {{customer_id: customer_id, timestamp: timestamp, amount: amount}}
{"  customers: {path: raw/cu.parquet, columns: {customer_id: customer_id, signup_date: signup_date, industry: industry, size: size}, attributes: [industry]}" if with_customers else ""}
cutoffs:
  calibration_end: {AS_OF.isoformat()}
features:
  windows: [30, 90]
  threads: 1
"""
    path = tmp_path / "experiments" / "tiny.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml_text, encoding="utf-8")
    return load_experiment(path, root=tmp_path)


def test_run_features_writes_parquet(tmp_path, transactions, customers):
    from segml.features import run_features

    cfg = _experiment(tmp_path, with_customers=True)
    with pytest.raises(SegmlError, match="segml ingest"):
        run_features(cfg, AS_OF)
    cfg.paths.interim.mkdir(parents=True)
    transactions.to_parquet(cfg.paths.clean_transactions, index=False)
    customers.to_parquet(cfg.paths.clean_customers, index=False)
    path, n_customers = run_features(cfg, AS_OF)
    assert path == tmp_path / "data" / "processed" / "tiny" / f"features_{AS_OF.isoformat()}.parquet"
    written = pd.read_parquet(path)
    assert n_customers == len(written) == 6  # 00008 (no signup date, no purchase) is not a customer yet
    expected = build_features(
        transactions, AS_OF, cfg.features, customers[["customer_id", "signup_date", "industry"]]
    )
    assert "size" not in written.columns
    assert_same(written, expected)
    assert not list(path.parent.glob("*.tmp"))


def test_btyd_columns_equal_lifetimes_on_cdnow():
    """frequency / recency / T / monetary agree with lifetimes' summary on the shipped CDNOW data."""
    from lifetimes.utils import summary_data_from_transaction_data

    from segml.datasets.cdnow import load_cdnow

    raw = load_cdnow()
    tx = pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            "timestamp": raw["date"],
            "amount": raw["dollar_value"],
            "quantity": raw["number_of_cds"].astype(float),
        }
    )
    cutoff = dt.date(1997, 9, 30)
    ours = build_features(tx, cutoff, SPEC).set_index("customer_id")
    theirs = summary_data_from_transaction_data(
        raw[raw["date"] <= pd.Timestamp(cutoff)],
        "customer_id",
        "date",
        monetary_value_col="dollar_value",
        observation_period_end=pd.Timestamp(cutoff),
        freq="D",
    )
    assert len(ours) == len(theirs) == 23_570
    theirs = theirs.reindex(ours.index)
    np.testing.assert_array_equal(ours["frequency"], theirs["frequency"])
    np.testing.assert_array_equal(ours["btyd_recency_days"], theirs["recency"])
    np.testing.assert_array_equal(ours["t_days"], theirs["T"])
    np.testing.assert_allclose(ours["btyd_monetary"], theirs["monetary_value"], rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------------------------------
# Invoice features (data.invoices): strictly as known at the cutoff


def make_invoices() -> pd.DataFrame:
    """Clean invoices (as ingest writes them) around the cutoff 2024-06-30.

    * 00001: late (10 days), on time (paid 90 days before the cutoff: the earlier period of a 90-day trend),
      late (10 days, recent), paid after the cutoff (open and overdue at the cutoff), due after the cutoff
      (open, not overdue), and one issued after the cutoff (does not count).
    * 00002: due on the cutoff day and unpaid (counted as due, not overdue).
    * 00003: paid on its due date (on time, 0 days late; recent only, so no trend).
    * 00004: no invoices. 00007: never bought, one overdue invoice. Z999: not a customer (ignored).
    """
    rows = [
        ("N1", "00001", "2024-01-10", "2024-02-09", "2024-02-19", 50.0),
        ("N2", "00001", "2024-03-05", "2024-04-04", "2024-04-01", 12.5),
        ("N3", "00001", "2024-05-01", "2024-05-31", "2024-06-10", 40.0),
        ("N4", "00001", "2024-06-01", "2024-06-20", "2024-07-05", 70.0),
        ("N5", "00001", "2024-06-20", "2024-07-20", None, 30.0),
        ("N6", "00001", "2024-07-02", "2024-08-01", "2024-07-03", 999.0),
        ("N7", "00002", "2024-06-01", "2024-06-30", None, 25.0),
        ("N8", "00003", "2024-04-01", "2024-04-15", "2024-04-15", 100.0),
        ("N9", "00007", "2024-06-05", "2024-06-25", None, 15.0),
        ("N10", "Z999", "2024-01-05", "2024-02-05", None, 500.0),
        ("N11", "00006", "2023-01-03", "2023-02-02", "2023-03-04", 20.0),
        ("N12", "00006", "2024-03-31", "2024-04-30", "2024-05-02", 60.0),
        ("N13", "00006", "2024-06-30", "2024-07-30", None, 90.0),
    ]
    frame = pd.DataFrame(rows, columns=["invoice_id", "customer_id", "issued", "due", "paid", "amount"])
    for name in ("issued", "due", "paid"):
        frame[name] = pd.to_datetime(frame[name])
    frame["source_row"] = np.arange(1, len(frame) + 1, dtype="int64")
    return frame


def reference_invoice_features(invoices: pd.DataFrame, as_of: dt.date, spec: FeatureConfig) -> pd.DataFrame:
    """The invoice features per customer with an invoice issued by the cutoff, in plain pandas."""
    cutoff = pd.Timestamp(as_of)
    issued = invoices[invoices["issued"] <= cutoff].copy()
    known = issued["paid"].notna() & (issued["paid"] <= cutoff)
    issued["late"] = (issued["paid"] - issued["due"]).dt.days.clip(lower=0).where(known)
    issued["due_by_cutoff"] = issued["due"] <= cutoff
    issued["on_time"] = issued["due_by_cutoff"] & known & (issued["paid"] <= issued["due"])
    issued["open"] = np.where(known, 0.0, issued["amount"])
    issued["overdue"] = np.where(~known & (issued["due"] < cutoff), issued["amount"], 0.0)
    paid_age = (cutoff - issued["paid"]).dt.days
    issued["late_recent"] = issued["late"].where(paid_age < spec.trend_window)
    issued["late_earlier"] = issued["late"].where(paid_age >= spec.trend_window)
    by = issued.groupby("customer_id")
    out = pd.DataFrame(
        {
            "invoices_n": by.size().astype(float),
            "days_late_mean": by["late"].mean(),
            "paid_on_time_share": by["on_time"].sum() / by["due_by_cutoff"].sum().replace(0, np.nan),
            "outstanding_amount": by["open"].sum(),
            "overdue_amount": by["overdue"].sum(),
            "days_late_trend": by["late_recent"].mean() - by["late_earlier"].mean(),
        }
    )
    return out.astype("float64")


def with_reference_invoices(
    expected: pd.DataFrame, invoices: pd.DataFrame, as_of: dt.date, spec: FeatureConfig
) -> pd.DataFrame:
    """``expected`` (a reference feature table) with the invoice features, in build_features' column order."""
    reference = reference_invoice_features(invoices, as_of, spec)
    out = expected.merge(reference, left_on="customer_id", right_index=True, how="left")
    for name in ("invoices_n", "outstanding_amount", "overdue_amount"):
        out[name] = out[name].fillna(0.0)
    numeric = NUMERIC_FEATURES(spec, with_invoices=True)
    attributes = [c for c in expected.columns if c not in ("customer_id", "as_of", "has_purchases", *numeric)]
    return out[["customer_id", "as_of", "has_purchases", *numeric, *attributes]]


@pytest.fixture(scope="module")
def invoices() -> pd.DataFrame:
    return make_invoices()


@pytest.mark.parametrize(
    "as_of",
    [AS_OF, dt.date(2024, 1, 10), dt.date(2024, 4, 20), dt.date(2024, 6, 20), dt.date(2025, 1, 1)],
)
@pytest.mark.parametrize("trend_window", [90, 30])
def test_invoice_features_match_independent_pandas(transactions, customers, invoices, as_of, trend_window):
    spec = FeatureConfig(threads=1, trend_window=trend_window)
    for people in (None, customers):
        actual = build_features(transactions, as_of, spec, people, invoices=invoices)
        expected = reference_features(transactions, as_of, spec, people)
        assert_same(actual, with_reference_invoices(expected, invoices, as_of, spec))
        # the other columns are exactly those of the table without invoices
        plain = build_features(transactions, as_of, spec, people)
        pd.testing.assert_frame_equal(actual.drop(columns=INVOICE_FEATURES), plain, check_exact=True)


def test_invoice_features_hand_checked(transactions, customers, invoices):
    features = build_features(transactions, AS_OF, SPEC, customers, invoices=invoices).set_index(
        "customer_id"
    )
    one = features.loc["00001", INVOICE_FEATURES]
    # N1-N5 issued by the cutoff (N6 after it); paid by the cutoff: N1 (10 late), N2 (on time), N3 (10 late)
    assert one["invoices_n"] == 5.0
    assert one["days_late_mean"] == pytest.approx(20.0 / 3.0)
    # due by the cutoff: N1-N4; N4 is paid after the cutoff, so at the cutoff it is open and not on time
    assert one["paid_on_time_share"] == 0.25
    assert one["outstanding_amount"] == 70.0 + 30.0  # N4 (paid after the cutoff) and N5 (unpaid)
    assert one["overdue_amount"] == 70.0  # N5 is due after the cutoff: open but not overdue
    # recent (paid in the last 90 days): N3 (10); earlier: N1 (10) and N2 (0, paid exactly 90 days before)
    assert one["days_late_trend"] == pytest.approx(10.0 - 5.0)
    two = features.loc["00002"]  # due on the cutoff day, unpaid: due (not on time) but not overdue
    assert two["invoices_n"] == 1 and two["paid_on_time_share"] == 0.0 and np.isnan(two["days_late_mean"])
    assert two["outstanding_amount"] == 25.0 and two["overdue_amount"] == 0.0
    three = features.loc["00003"]  # paid on the due date: on time, no days late; no earlier payment: no trend
    assert three["days_late_mean"] == 0.0 and three["paid_on_time_share"] == 1.0
    assert three["outstanding_amount"] == 0.0 and np.isnan(three["days_late_trend"])
    four = features.loc["00004"]  # no invoices: 0 for counts and amounts, missing for means and shares
    assert four["invoices_n"] == 0.0 and four["outstanding_amount"] == 0.0 and four["overdue_amount"] == 0.0
    assert four[["days_late_mean", "paid_on_time_share", "days_late_trend"]].isna().all()
    seven = features.loc["00007"]  # never bought, in the population by signup: its overdue invoice counts
    assert seven["overdue_amount"] == 15.0 and not seven["has_purchases"]
    assert "Z999" not in features.index  # invoices of people outside the population are ignored
    assert list(features.columns) == feature_columns(SPEC, ["industry", "size"], with_invoices=True)[1:]
    assert (
        describe_feature("overdue_amount") == "amount of unpaid invoices whose due date is before the cutoff"
    )


# --------------------------------------------------------------------------------------------------------------
# Interaction features (data.interactions): strictly from events dated on or before the cutoff day

#: interaction counts: 0 for a customer without events (the rest are missing then)
INTERACTION_COUNTS = [
    "interactions_90d",
    "complaints_90d",
    "complaints_365d",
    "complaints_trend",
    "tickets_90d",
    "campaign_sends_365d",
    "campaign_responses_365d",
    "visits_90d",
]


def make_interactions() -> pd.DataFrame:
    """Clean interactions (as ingest writes them) around the cutoff 2024-06-30 (age = days before it).

    * 00001: complaints on the cutoff day late at night (age 0), age 20, age 90 (outside 90 days, in the
      previous 90-day trend period), age 365 (just outside 365 days) and the day after the cutoff; tickets at
      age 15 and 121; sends at age 29 and 60 and one after the cutoff; a response at age 28; a login and a
      visit the same day (age 10) and a visit at age 89; surveys scored 4 and 5, one without a score, one
      scored 1 more than a year ago and one after the cutoff.
    * 00002: a campaign response without any send (no response rate). 00003: no events.
    * 00004: a complaint, but no purchase day in the last 365 days (no complaint rate).
    * 00005: buys only after the cutoff (not in the population), complains before it: ignored.
    * 00006: a survey on the cutoff day, a complaint the day after. 00007: never bought, one ticket.
    * Z999: not a customer (ignored).
    """
    rows = [
        ("00001", "2024-06-30 23:30:00", "complaint", None),
        ("00001", "2024-06-10 09:00:00", "complaint", None),
        ("00001", "2024-04-01 09:00:00", "complaint", None),
        ("00001", "2023-07-01 09:00:00", "complaint", None),
        ("00001", "2024-07-01 00:00:00", "complaint", None),
        ("00001", "2024-06-15 09:00:00", "ticket", None),
        ("00001", "2024-03-01 09:00:00", "ticket", None),
        ("00001", "2024-06-01 09:00:00", "campaign_send", None),
        ("00001", "2024-05-01 09:00:00", "campaign_send", None),
        ("00001", "2024-08-01 09:00:00", "campaign_send", None),
        ("00001", "2024-06-02 09:00:00", "campaign_response", None),
        ("00001", "2024-06-20 09:00:00", "login", None),
        ("00001", "2024-06-20 09:05:00", "visit", None),
        ("00001", "2024-04-02 09:00:00", "visit", None),
        ("00001", "2024-05-10 09:00:00", "survey", 4.0),
        ("00001", "2024-06-01 10:00:00", "survey", 5.0),
        ("00001", "2024-06-02 10:00:00", "survey", None),
        ("00001", "2023-01-01 10:00:00", "survey", 1.0),
        ("00001", "2024-07-05 10:00:00", "survey", 1.0),
        ("00002", "2024-06-01 09:00:00", "campaign_response", None),
        ("00004", "2024-06-01 09:00:00", "complaint", None),
        ("00005", "2024-06-01 09:00:00", "complaint", None),
        ("00006", "2024-06-30 10:00:00", "survey", 2.0),
        ("00006", "2024-07-01 10:00:00", "complaint", None),
        ("00007", "2024-06-20 09:00:00", "ticket", None),
        ("Z999", "2024-06-20 09:00:00", "complaint", None),
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "kind", "score"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    frame["channel"] = "web"
    frame["outcome"] = None
    frame["source_row"] = np.arange(1, len(frame) + 1, dtype="int64")
    return frame[["customer_id", "timestamp", "kind", "channel", "outcome", "score", "source_row"]]


def reference_interaction_features(
    events: pd.DataFrame, tx: pd.DataFrame, as_of: dt.date, spec: FeatureConfig
) -> pd.DataFrame:
    """The interaction features per customer with an event or a purchase by the cutoff, in plain pandas
    (counts not yet zero-filled for customers without events)."""
    cutoff = pd.Timestamp(as_of)
    ev = events.assign(day=events["timestamp"].dt.normalize())
    ev = ev[ev["day"] <= cutoff].copy()
    ev["age"] = (cutoff - ev["day"]).dt.days
    tw = spec.trend_window
    complaint = ev["kind"] == "complaint"

    def count(mask: pd.Series) -> pd.Series:
        return ev[mask].groupby("customer_id").size().astype(float)

    out = pd.DataFrame(
        {
            "interactions_90d": count(ev["age"] < 90),
            "complaints_90d": count(complaint & (ev["age"] < 90)),
            "complaints_365d": count(complaint & (ev["age"] < 365)),
            "complaints_recent": count(complaint & (ev["age"] < tw)),
            "complaints_previous": count(complaint & (ev["age"] >= tw) & (ev["age"] < 2 * tw)),
            "tickets_90d": count((ev["kind"] == "ticket") & (ev["age"] < 90)),
            "campaign_sends_365d": count((ev["kind"] == "campaign_send") & (ev["age"] < 365)),
            "campaign_responses_365d": count((ev["kind"] == "campaign_response") & (ev["age"] < 365)),
            "visits_90d": count(ev["kind"].isin(["login", "visit"]) & (ev["age"] < 90)),
            "days_since_interaction": ev.groupby("customer_id")["age"].min().astype(float),
            "days_since_complaint": ev[complaint].groupby("customer_id")["age"].min().astype(float),
            "score_mean": ev[(ev["kind"] == "survey") & (ev["age"] < 365)]
            .groupby("customer_id")["score"]
            .mean(),
        }
    )
    days = tx.assign(day=tx["timestamp"].dt.normalize())
    days = days[(days["day"] <= cutoff) & ((cutoff - days["day"]).dt.days < 365)]
    out = out.join(days.groupby("customer_id")["day"].nunique().rename("purchase_days_365d"), how="outer")
    return out


def with_reference_interactions(
    expected: pd.DataFrame,
    events: pd.DataFrame,
    tx: pd.DataFrame,
    as_of: dt.date,
    spec: FeatureConfig,
    *,
    with_invoices: bool = False,
) -> pd.DataFrame:
    """``expected`` (a reference feature table) with the interaction features, in build_features' order."""
    reference = reference_interaction_features(events, tx, as_of, spec)
    out = expected.merge(reference, left_on="customer_id", right_index=True, how="left")
    for name in [*INTERACTION_COUNTS, "complaints_recent", "complaints_previous"]:
        if name in out:
            out[name] = out[name].fillna(0.0)
    out["complaints_trend"] = out["complaints_recent"] - out["complaints_previous"]
    out["complaint_rate"] = out["complaints_365d"] / out["purchase_days_365d"].replace(0, np.nan)
    out["response_rate"] = out["campaign_responses_365d"] / out["campaign_sends_365d"].replace(0, np.nan)
    numeric = NUMERIC_FEATURES(spec, with_invoices=with_invoices, with_interactions=True)
    attributes = [c for c in expected.columns if c not in ("customer_id", "as_of", "has_purchases", *numeric)]
    return out[["customer_id", "as_of", "has_purchases", *numeric, *attributes]].astype(
        {name: "float64" for name in INTERACTION_FEATURES}
    )


@pytest.fixture(scope="module")
def interactions() -> pd.DataFrame:
    return make_interactions()


@pytest.mark.parametrize(
    "as_of",
    [AS_OF, dt.date(2024, 1, 10), dt.date(2024, 4, 1), dt.date(2024, 6, 20), dt.date(2025, 1, 1)],
)
@pytest.mark.parametrize("trend_window", [90, 30])
def test_interaction_features_match_independent_pandas(
    transactions, customers, interactions, as_of, trend_window
):
    spec = FeatureConfig(threads=1, trend_window=trend_window)
    for people in (None, customers):
        actual = build_features(transactions, as_of, spec, people, interactions=interactions)
        expected = reference_features(transactions, as_of, spec, people)
        assert_same(actual, with_reference_interactions(expected, interactions, transactions, as_of, spec))
        # the other columns are exactly those of the table without interactions
        plain = build_features(transactions, as_of, spec, people)
        pd.testing.assert_frame_equal(actual.drop(columns=INTERACTION_FEATURES), plain, check_exact=True)


def test_interaction_and_invoice_features_together(transactions, customers, interactions, invoices):
    both = build_features(transactions, AS_OF, SPEC, customers, invoices=invoices, interactions=interactions)
    expected = with_reference_invoices(
        reference_features(transactions, AS_OF, SPEC, customers), invoices, AS_OF, SPEC
    )
    expected = with_reference_interactions(
        expected, interactions, transactions, AS_OF, SPEC, with_invoices=True
    )
    assert_same(both, expected)
    assert list(both.columns) == feature_columns(
        SPEC, ["industry", "size"], with_invoices=True, with_interactions=True
    )


def test_interaction_features_hand_checked(transactions, customers, interactions):
    features = build_features(transactions, AS_OF, SPEC, customers, interactions=interactions).set_index(
        "customer_id"
    )
    one = features.loc["00001", INTERACTION_FEATURES]
    # by the cutoff in 90 days: complaints (age 0, 20), ticket (15), sends (29, 60), response (28),
    # login + visit (10), visit (89), surveys (51, 29, 28) = 12 events
    assert one["interactions_90d"] == 12.0
    assert one["complaints_90d"] == 2.0 and one["complaints_365d"] == 3.0  # age 90 in, age 365 out
    # purchase days in 365 days: 2024-01-10, 03-05, 06-29, 06-30
    assert one["complaint_rate"] == 3.0 / 4.0
    assert one["complaints_trend"] == 2.0 - 1.0  # last 90 days (0, 20) minus the 90 before (age 90)
    assert one["tickets_90d"] == 1.0
    assert one["campaign_sends_365d"] == 2.0 and one["campaign_responses_365d"] == 1.0
    assert one["response_rate"] == 0.5
    assert one["visits_90d"] == 3.0
    assert one["days_since_interaction"] == 0.0 and one["days_since_complaint"] == 0.0
    assert one["score_mean"] == 4.5  # 4 and 5; the unscored survey, the old one and the later one left out
    two = features.loc["00002"]
    assert two["campaign_responses_365d"] == 1.0 and np.isnan(two["response_rate"])
    assert two["complaint_rate"] == 0.0 and np.isnan(two["days_since_complaint"])
    assert two["days_since_interaction"] == 29.0
    three = features.loc["00003"]  # no events: 0 for counts, missing for days since and means
    assert (three[INTERACTION_COUNTS] == 0.0).all() and three["complaint_rate"] == 0.0
    assert (
        three[["response_rate", "days_since_interaction", "days_since_complaint", "score_mean"]].isna().all()
    )
    four = features.loc["00004"]  # a complaint but no purchase day in 365 days: no complaint rate
    assert four["complaints_365d"] == 1.0 and np.isnan(four["complaint_rate"])
    assert four["days_since_complaint"] == 29.0
    six = features.loc["00006"]  # the complaint the day after the cutoff does not count
    assert six["complaints_365d"] == 0.0 and np.isnan(six["days_since_complaint"])
    assert six["score_mean"] == 2.0 and six["days_since_interaction"] == 0.0
    seven = features.loc["00007"]  # never bought, in the population by signup: its ticket counts
    assert seven["tickets_90d"] == 1.0 and np.isnan(seven["complaint_rate"]) and not seven["has_purchases"]
    assert "Z999" not in features.index and "00005" not in features.index  # outside the population
    assert list(features.columns) == feature_columns(SPEC, ["industry", "size"], with_interactions=True)[1:]
    assert describe_feature("complaints_90d") == "complaints in the last 90 days"


def test_interaction_trend_follows_the_trend_window(transactions, interactions):
    spec = FeatureConfig(threads=1, trend_window=30)
    one = (
        build_features(transactions, AS_OF, spec, interactions=interactions)
        .set_index("customer_id")
        .loc["00001"]
    )
    assert one["complaints_trend"] == 2.0  # last 30 days: ages 0 and 20; the 30 before: none


# --------------------------------------------------------------------------------------------------------------
# Both event sources: the training frame, a missing clean column, reading the clean file

#: source: (its columns mapping in the experiment YAML, a clean column it cannot do without, its features)
EVENT_SOURCES = {
    "invoices": (
        "{invoice_id: inv, customer_id: cust, issued: issued, due: due, paid: paid, amount: total}",
        "paid",
        INVOICE_FEATURES,
    ),
    "interactions": ("{customer_id: cust, timestamp: ts, kind: what}", "kind", INTERACTION_FEATURES),
}


@pytest.mark.parametrize("source", list(EVENT_SOURCES))
def test_event_training_frame_equals_features_at_each_cutoff(request, transactions, customers, source):
    events = {source: request.getfixturevalue(source)}
    cutoffs = [dt.date(2024, 4, 20), AS_OF]
    frame = training_frame(transactions, cutoffs, 90, SPEC, customers, **events)
    for cutoff in cutoffs:
        rows = frame[frame["cutoff"] == pd.Timestamp(cutoff)].reset_index(drop=True)
        alone = build_features(transactions, cutoff, SPEC, customers, **events)
        pd.testing.assert_frame_equal(rows[alone.columns], alone, check_exact=True)


@pytest.mark.parametrize("source", list(EVENT_SOURCES))
def test_event_input_errors(request, transactions, source):
    column = EVENT_SOURCES[source][1]
    events = request.getfixturevalue(source).drop(columns=column)
    with pytest.raises(InputFileError, match=f"missing column.*{column}"):
        build_features(transactions, AS_OF, SPEC, **{source: events})


def _tx_experiment(root, name: str, sources: str, as_of, features: str = "") -> Path:
    """``experiments/<name>.yaml`` under ``root``: one transactions file (customer_id, timestamp, amount), the
    other ``data:`` sources given as YAML lines, the cutoff and ``features:`` (one thread plus ``features``)."""
    path = root / "experiments" / f"{name}.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(
        "data:\n  transactions:\n    - path: raw/tx.parquet\n"
        "      columns: {customer_id: customer_id, timestamp: timestamp, amount: amount}\n"
        f"{sources}cutoffs:\n  calibration_end: {as_of.isoformat()}\nfeatures:\n{features}  threads: 1\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("source", list(EVENT_SOURCES))
def test_run_features_reads_clean_events(request, tmp_path, transactions, source):
    from segml.config import load_experiment
    from segml.features import run_features

    columns, _, source_features = EVENT_SOURCES[source]
    events = request.getfixturevalue(source)
    sources = f"  {source}:\n    path: raw/{source}.csv\n    columns: {columns}\n"
    path = _tx_experiment(tmp_path, source, sources, AS_OF, "  windows: [30, 90]\n")
    cfg = load_experiment(path, root=tmp_path)
    cfg.paths.interim.mkdir(parents=True)
    transactions.to_parquet(cfg.paths.clean_transactions, index=False)
    with pytest.raises(SegmlError, match=f"clean {source} not found.*segml ingest"):
        run_features(cfg, AS_OF)
    events.to_parquet(getattr(cfg.paths, f"clean_{source}"), index=False)
    written, _ = run_features(cfg, AS_OF)
    expected = build_features(transactions, AS_OF, cfg.features, **{source: events})
    assert_same(pd.read_parquet(written), expected)
    assert set(source_features) <= set(expected.columns)


# --------------------------------------------------------------------------------------------------------------
# write_features: the DuckDB table streamed to parquet in row groups (what `segml features` writes)


@pytest.fixture(scope="module")
def synthetic_sources() -> dict[str, pd.DataFrame]:
    """Synthetic clean inputs: transactions with a line margin, customers with attributes, invoices and
    interactions (kinds in the segml vocabulary, as ingest writes them)."""
    from segml.datasets.synthetic import INTERACTION_KIND_LABELS, INTERACTION_KINDS, SynthSpec, generate

    data = generate(SynthSpec(n_customers=300, seed=5))
    transactions = data.transactions.rename(columns={"order_ts": "timestamp"})
    transactions["margin"] = transactions["amount"] - transactions["cost"]
    kinds = dict(zip(INTERACTION_KIND_LABELS, INTERACTION_KINDS, strict=True))
    interactions = data.interactions.assign(kind=data.interactions["kind"].map(kinds))
    return {
        "transactions": transactions,
        "customers": data.customers,
        "invoices": data.invoices,
        "interactions": interactions,
    }


SYNTHETIC_AS_OF = dt.date(2025, 6, 30)
#: which optional inputs each case passes besides the transactions
WRITE_CASES = {
    "transactions": (),
    "customers": ("customers",),
    "events": ("customers", "invoices", "interactions"),
}


def _sha256(path) -> str:
    from segml.storage import sha256_file

    return sha256_file(path)


@pytest.mark.parametrize("case", list(WRITE_CASES))
def test_write_features_file_is_the_build_features_frame(tmp_path, synthetic_sources, case):
    from segml.features import write_features
    from segml.storage import write_parquet

    tx = synthetic_sources["transactions"]
    extra = {name: synthetic_sources[name] for name in WRITE_CASES[case]}
    expected = build_features(tx, SYNTHETIC_AS_OF, SPEC, **extra)
    assert len(expected) > 200
    out = tmp_path / "out" / "features.parquet"
    n_customers = write_features(tx, SYNTHETIC_AS_OF, SPEC, out, **extra)
    assert n_customers == len(expected)
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected, check_exact=True)
    # the default row group is that of DataFrame.to_parquet: the very bytes the whole-frame path writes
    write_parquet(expected, tmp_path / "whole.parquet")
    assert _sha256(out) == _sha256(tmp_path / "whole.parquet")
    assert [p.name for p in out.parent.iterdir()] == ["features.parquet"]


@pytest.mark.parametrize("batch_rows", [1, 7, 100])
def test_write_features_in_small_batches(tmp_path, synthetic_sources, batch_rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from segml.features import write_features

    tx = synthetic_sources["transactions"]
    extra = {name: synthetic_sources[name] for name in WRITE_CASES["events"]}
    expected = build_features(tx, SYNTHETIC_AS_OF, SPEC, **extra)
    out = tmp_path / "features.parquet"
    assert write_features(tx, SYNTHETIC_AS_OF, SPEC, out, batch_rows=batch_rows, **extra) == len(expected)
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected, check_exact=True)
    groups = pq.ParquetFile(out).metadata
    assert groups.num_row_groups == -(-len(expected) // batch_rows)
    assert {groups.row_group(i).num_rows for i in range(groups.num_row_groups - 1)} <= {batch_rows}
    # the same bytes as the whole frame written with that row group size
    reference = tmp_path / "reference.parquet"
    table = pa.Table.from_pandas(expected, preserve_index=False)
    pq.write_table(table, reference, row_group_size=batch_rows, compression="snappy")
    assert _sha256(out) == _sha256(reference)


@pytest.mark.parametrize("with_customers", [False, True])
def test_write_features_without_any_customer(tmp_path, transactions, customers, with_customers):
    from segml.features import write_features

    extra = {"customers": customers} if with_customers else {}
    before_everything = dt.date(2020, 1, 1)  # no purchase, no signup on or before it
    expected = build_features(transactions, before_everything, SPEC, **extra)
    assert len(expected) == 0
    out = tmp_path / "features.parquet"
    assert write_features(transactions, before_everything, SPEC, out, **extra) == 0
    written = pd.read_parquet(out)
    pd.testing.assert_frame_equal(written, expected, check_exact=True)
    assert list(written.columns) == feature_columns(SPEC, ["industry", "size"] if with_customers else [])


def test_write_features_reruns_are_byte_identical(tmp_path, synthetic_sources):
    from segml.features import write_features

    tx = synthetic_sources["transactions"]
    first, second = tmp_path / "first.parquet", tmp_path / "second.parquet"
    write_features(tx, SYNTHETIC_AS_OF, SPEC, first, synthetic_sources["customers"], batch_rows=50)
    # more DuckDB threads cut the result differently: the file depends on the rows only
    two_threads = FeatureConfig(threads=2)
    write_features(tx, SYNTHETIC_AS_OF, two_threads, second, synthetic_sources["customers"], batch_rows=50)
    assert _sha256(first) == _sha256(second)


def test_write_features_failure_leaves_no_partial_file(tmp_path, monkeypatch, synthetic_sources):
    from segml import features
    from segml.features import write_features

    tx = synthetic_sources["transactions"]
    out = tmp_path / "features.parquet"
    out.write_bytes(b"the previous table")
    normalise = features._normalise_features
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # the schema template, then batches: fail once row groups are written
            raise RuntimeError("interrupted")
        return normalise(*args, **kwargs)

    monkeypatch.setattr(features, "_normalise_features", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        write_features(tx, SYNTHETIC_AS_OF, SPEC, out, batch_rows=10)
    assert out.read_bytes() == b"the previous table"
    assert [p.name for p in tmp_path.iterdir()] == ["features.parquet"]
    monkeypatch.setattr(features, "_normalise_features", normalise)
    with pytest.raises(ConfigError, match="batch_rows"):
        write_features(tx, SYNTHETIC_AS_OF, SPEC, tmp_path / "other.parquet", batch_rows=0)
    with pytest.raises(InputFileError, match="missing column"):
        write_features(tx.drop(columns="amount"), SYNTHETIC_AS_OF, SPEC, tmp_path / "other.parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["features.parquet"]


def test_run_features_streams_the_duckdb_table(tmp_path, monkeypatch, synthetic_sources):
    from segml import features
    from segml.config import load_experiment
    from segml.features import run_features
    from segml.storage import write_parquet

    sources = (
        "  customers: {path: raw/cu.parquet, columns: {customer_id: customer_id, signup_date: signup_date}}\n"
        + "".join(
            f"  {name}:\n    path: raw/{name}.csv\n    columns: {EVENT_SOURCES[name][0]}\n"
            for name in ("invoices", "interactions")
        )
    )
    cfg = load_experiment(_tx_experiment(tmp_path, "events", sources, SYNTHETIC_AS_OF), root=tmp_path)
    cfg.paths.interim.mkdir(parents=True)
    sources = synthetic_sources
    sources["transactions"].to_parquet(cfg.paths.clean_transactions, index=False)
    sources["customers"].to_parquet(cfg.paths.clean_customers, index=False)
    sources["invoices"].to_parquet(cfg.paths.clean_invoices, index=False)
    sources["interactions"].to_parquet(cfg.paths.clean_interactions, index=False)
    expected = build_features(
        cfg.paths.clean_transactions,
        SYNTHETIC_AS_OF,
        cfg.features,
        cfg.paths.clean_customers,
        invoices=cfg.paths.clean_invoices,
        interactions=cfg.paths.clean_interactions,
    )

    def whole_frame(*args, **kwargs):
        raise AssertionError("segml features on DuckDB must not build the whole frame")

    monkeypatch.setattr(features, "build_features", whole_frame)
    written, n_customers = run_features(cfg, SYNTHETIC_AS_OF)
    assert n_customers == len(expected)
    pd.testing.assert_frame_equal(pd.read_parquet(written), expected, check_exact=True)
    write_parquet(expected, tmp_path / "whole.parquet")
    assert _sha256(written) == _sha256(tmp_path / "whole.parquet")
    assert set(INVOICE_FEATURES + INTERACTION_FEATURES) <= set(expected.columns)
    assert [p.name for p in written.parent.iterdir()] == [written.name]
