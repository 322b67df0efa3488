"""The feature catalog covers every column the feature engine builds, and the modules read it."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from helpers import INTERACTION_FEATURES, INVOICE_FEATURES

from segml import catalog, features
from segml.config import FeatureConfig
from segml.datasets.synthetic import SynthSpec, generate

AS_OF = dt.date(2025, 6, 30)
#: unusual windows on purpose: the catalog must cover any window list, not only the defaults
SPEC = FeatureConfig(windows=[7, 45, 365], trend_window=60, active_months=6)


@pytest.fixture(scope="module")
def synthetic():
    """Synthetic transactions (clean column names) and customers with attribute columns."""
    data = generate(SynthSpec(n_customers=300, seed=5))
    transactions = data.transactions.rename(columns={"order_ts": "timestamp"})
    return transactions, data.customers


@pytest.fixture(scope="module")
def built(synthetic):
    """Column names as the engine returns them (before they are normalised) and as the caller gets them,
    for build_features and for a training frame with labels."""
    transactions, customers = synthetic
    raw_columns: list[list[str]] = []
    normalise = features._normalise_features

    def recording(table, spec, attributes, with_labels=False, **sources):
        aliases = dict(zip(features._attribute_aliases(attributes), attributes, strict=True))
        raw_columns.append([aliases.get(name, name) for name in table.column_names])
        return normalise(table, spec, attributes, with_labels, **sources)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(features, "_normalise_features", recording)
        frame = features.build_features(transactions, AS_OF, SPEC, customers)
        training = features.training_frame(
            transactions, [AS_OF - dt.timedelta(days=90), AS_OF], 90, SPEC, customers
        )
        # with a line margin (a cost role mapped at ingest) the margin features join the table
        with_margin = transactions.assign(margin=transactions["amount"] * 0.25)
        margin_frame = features.build_features(with_margin, AS_OF, SPEC, customers)
        margin_training = features.training_frame(with_margin, [AS_OF], 90, SPEC, customers)
    attributes = [c for c in customers.columns if c not in ("customer_id", "signup_date")]
    return raw_columns, frame, training, attributes, margin_frame, margin_training


def _invoices(transactions: pd.DataFrame) -> pd.DataFrame:
    """One invoice per purchase day of the first 400 rows: due 30 days later, paid 0-59 days after issue or
    (every seventh) not at all."""
    head = transactions.head(400).reset_index(drop=True)
    issued = pd.to_datetime(head["timestamp"]).dt.normalize()
    lag = pd.to_timedelta((head.index * 13) % 60, unit="D")
    paid = (issued + lag).where(head.index % 7 != 0)
    return pd.DataFrame(
        {
            "invoice_id": [f"I{i}" for i in head.index],
            "customer_id": head["customer_id"].astype(str),
            "issued": issued,
            "due": issued + pd.Timedelta(days=30),
            "paid": paid,
            "amount": head["amount"].abs(),
        }
    )


def _event_tables(synthetic, source: str, make) -> tuple[pd.DataFrame, pd.DataFrame]:
    """With the clean events ``make(transactions)`` of ``source`` (``data.<source>``): the feature table and a
    training frame."""
    transactions, customers = synthetic
    events = {source: make(transactions)}
    frame = features.build_features(transactions, AS_OF, SPEC, customers, **events)
    training = features.training_frame(transactions, [AS_OF], 90, SPEC, customers, **events)
    return frame, training


def _check_event_columns(built, tables, source: str, names: list[str]) -> pd.DataFrame:
    """The columns ``names`` an event source adds: catalogued, after the base features in catalog order, absent
    (not zero-filled) without the source and leaving the other columns unchanged, each entry requiring the
    source. Returns the feature table with the source."""
    _, frame, _, attributes, margin_frame, _ = built
    event_frame, event_training = tables
    flag = {f"with_{source}": True}
    for columns in (list(event_frame.columns), list(event_training.columns)):
        assert catalog.uncatalogued(columns, attributes) == []
    numeric = catalog.numeric_features(SPEC, **flag)
    assert [c for c in event_frame.columns if c not in attributes] == [
        "customer_id",
        "as_of",
        "has_purchases",
        *numeric,
    ]
    assert numeric == [*catalog.numeric_features(SPEC), *names]
    assert features.NUMERIC_FEATURES(SPEC, **flag) == numeric
    stale = {e.name for e in catalog.entries(SPEC, **flag)} - set(event_training.columns)
    assert stale == set()
    assert not set(names) & (set(frame.columns) | set(margin_frame.columns))
    pd.testing.assert_frame_equal(event_frame.drop(columns=names), frame, check_exact=True)
    for name in names:
        item = catalog.entry(name)
        assert item.requires == source and item.wording is not None and item.description
        assert item.seasonality == "none"
    return event_frame


@pytest.fixture(scope="module")
def invoice_tables(synthetic):
    return _event_tables(synthetic, "invoices", _invoices)


def test_invoice_columns_have_catalog_entries_and_only_with_invoices(built, invoice_tables):
    _check_event_columns(built, invoice_tables, "invoices", INVOICE_FEATURES)
    assert catalog.kind("overdue_amount") == "money" and catalog.kind("paid_on_time_share") == "share"
    assert catalog.kind("invoices_n") == "count" and catalog.kind("days_late_mean") == "days"


def test_every_built_column_has_a_catalog_entry(built):
    raw_columns, frame, training, attributes, margin_frame, margin_training = built
    assert attributes == ["industry", "size", "region", "org_type"]
    tables = [frame, training, margin_frame, margin_training]
    for columns in [*raw_columns, *(list(t.columns) for t in tables)]:
        assert catalog.uncatalogued(columns, attributes) == [], (
            "a column the feature engine builds has no entry in segml.catalog: add one"
        )
    # and the catalog describes exactly what is built: no stale entries for these windows
    built_features = [c for c in frame.columns if c not in attributes]
    assert built_features == ["customer_id", "as_of", "has_purchases", *catalog.numeric_features(SPEC)]
    stale = {e.name for e in catalog.entries(SPEC)} - set(training.columns)
    assert stale == set()
    margin_features = [c for c in margin_frame.columns if c not in attributes]
    numeric = catalog.numeric_features(SPEC, with_margin=True)
    assert margin_features == ["customer_id", "as_of", "has_purchases", *numeric]
    assert set(numeric) - set(catalog.numeric_features(SPEC)) == {
        "margin_total",
        "margin_rate",
        *(f"margin_{w}d" for w in SPEC.windows),
    }
    stale = {e.name for e in catalog.entries(SPEC, with_margin=True)} - set(margin_training.columns)
    assert stale == set()


def test_attributes_are_handled_generically_by_dtype(built):
    _, frame, _, attributes, _, _ = built
    for name in attributes:
        entry = catalog.entry(name, frame[name].dtype)
        assert entry.role == "attribute" and entry.kind == "categorical"
        assert entry.description == f"customer attribute '{name}'"
        assert entry.wording is not None and entry.wording.style == "category"
    numeric = catalog.entry("visits", pd.Series([1.0, 2.0]))
    assert numeric.kind == "numeric" and numeric.fill_rule == "median" and numeric.transform_rule == "none"
    assert not catalog.is_catalogued("industry") and catalog.is_catalogued("spend_45d")


def test_entries_carry_kind_fill_transform_and_seasonality():
    assert catalog.kind("spend_45d") == "money" and catalog.transform("spend_45d") == "signed_log1p"
    assert catalog.kind("orders_7d") == "count" and catalog.window_days("orders_7d") == 7
    assert catalog.fill_rule("recency_days") == "max" and catalog.fill_rule("tenure_days") == "zero"
    assert catalog.kind("returns_rate") == "share" and catalog.kind("repurchase") == "flag"
    assert catalog.transform("recency_days") == "none"
    assert catalog.entry("spend_45d").seasonality == "window"
    assert catalog.history_totals() == (
        "frequency",
        "n_purchase_days",
        "n_orders",
        "monetary_total",
        "gross_spend",
        "return_amount",
        "quantity_total",
        "margin_total",  # deseasonalised like the spend totals when a model reads it
    )
    # the margin features: money like spend, built only with a margin column
    assert catalog.kind("margin_45d") == "money" and catalog.entry("margin_45d").seasonality == "window"
    assert catalog.entry("margin_45d").requires == "margin" and catalog.window_days("margin_45d") == 45
    assert catalog.kind("margin_rate") == "ratio" and catalog.fill_rule("margin_rate") == "median"
    assert catalog.entry("margin_rate").wording == catalog.Wording("percent", "margin is ", " of gross spend")
    assert "margin_total" not in catalog.numeric_features()
    assert catalog.describe("orders_45d") == "number of purchase days in the last 45 days"
    assert catalog.entry("spend_45d").wording == catalog.Wording("money", "spent ", " in the last 45 days")
    assert catalog.non_feature_columns() == {
        "customer_id",
        "as_of",
        "cutoff",
        "label_days",
        "future_spend",
        "future_orders",
        "future_active",
        "future_margin",
    }
    assert catalog.label_columns() == features.LABEL_COLUMNS
    assert (
        catalog.entry("future_margin").requires == "margin" and "future_margin" not in catalog.label_columns()
    )
    assert catalog.redundant_columns() == {"has_purchases"}
    assert catalog.window_pattern().match("spend_45d").groups() == ("spend", "45")


def test_modules_read_the_catalog():
    from segml.models import clustering, tree

    assert features.NUMERIC_FEATURES(SPEC) == catalog.numeric_features(SPEC)
    assert features.describe_feature("spend_45d") == catalog.describe("spend_45d")
    assert catalog.non_feature_columns() | {"has_purchases"} == tree.NON_FEATURE_COLUMNS
    assert tree.describe_feature("orders_45d") == catalog.describe("orders_45d")
    for e in catalog.entries(SPEC):
        assert clustering.feature_kind(e.name) == e.kind
        assert clustering.is_log_feature(e.name) == (e.transform_rule == "signed_log1p")


def test_key_and_drift_features_follow_the_configured_windows():
    default = ["customer_id", *catalog.numeric_features(FeatureConfig())]
    assert catalog.key_features(default) == [
        "recency_days",
        "frequency",
        "n_orders",
        "tenure_days",
        "monetary_total",
        "monetary_mean",
        "interpurchase_mean_days",
        "spend_90d",
        "spend_365d",
        "trend_ratio",
        "active_months_share",
        "churn_risk_ratio",
    ]
    drift = catalog.drift_features(default)
    assert "orders_365d" in drift and "interpurchase_mean_days" not in drift and len(drift) == 12
    # Ta Feng-like windows: no 90- or 365-day column, the longest window present stands in
    short = catalog.numeric_features(FeatureConfig(windows=[7, 30, 60]))
    assert [c for c in catalog.key_features(short) if c.startswith("spend_")] == ["spend_60d"]
    assert [c for c in catalog.drift_features(short) if c.startswith("orders_")] == ["orders_60d"]
    assert catalog.key_features(["industry", "recency_days"]) == ["recency_days"]


def _interactions(transactions: pd.DataFrame) -> pd.DataFrame:
    """Events of every kind spread over the year before the cutoff and after it, for the first customers."""
    kinds = ["complaint", "ticket", "campaign_send", "campaign_response", "login", "visit", "survey"]
    ids = sorted(transactions["customer_id"].astype(str).unique())[:80]
    n = 700
    offsets = pd.to_timedelta([(i * 37) % 500 - 400 for i in range(n)], unit="D")
    kind = [kinds[(i * 5) % len(kinds)] for i in range(n)]
    return pd.DataFrame(
        {
            "customer_id": [ids[(i * 11) % len(ids)] for i in range(n)],
            "timestamp": pd.Timestamp(AS_OF) + offsets + pd.to_timedelta(9, unit="h"),
            "kind": kind,
            "channel": "web",
            "outcome": None,
            "score": [float(i % 5 + 1) if k == "survey" else None for i, k in enumerate(kind)],
        }
    )


@pytest.fixture(scope="module")
def interaction_tables(synthetic):
    return _event_tables(synthetic, "interactions", _interactions)


def test_interaction_columns_have_catalog_entries_and_only_with_interactions(built, interaction_tables):
    interaction_frame = _check_event_columns(built, interaction_tables, "interactions", INTERACTION_FEATURES)
    both = catalog.numeric_features(SPEC, with_invoices=True, with_interactions=True)
    assert both == [*catalog.numeric_features(SPEC), *INVOICE_FEATURES, *INTERACTION_FEATURES]
    assert interaction_frame["complaints_365d"].gt(0).sum() > 20  # the fixture reaches every column
    assert interaction_frame[INTERACTION_FEATURES].notna().any().all()
    for name in INTERACTION_FEATURES:
        assert catalog.entry(name).window is None  # fixed windows, not a family
        assert not catalog.window_pattern().match(name)
    assert catalog.kind("complaints_90d") == "count" and catalog.kind("days_since_complaint") == "days"
    assert catalog.kind("response_rate") == "ratio" and catalog.fill_rule("days_since_interaction") == "max"
    assert catalog.describe("complaint_rate").startswith("complaints in the last 365 days per purchase day")


def test_reason_codes_speak_of_interactions():
    from segml.explain import reason_codes

    table = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "complaints_90d": [3.0, 0.0],
            "complaint_rate": [0.5, 0.0],
            "response_rate": [0.25, 1.0],
            "days_since_complaint": [4.0, float("nan")],
        }
    )
    contrib = pd.DataFrame(
        {
            "complaints_90d": [-3.0, 0.0],
            "complaint_rate": [-2.0, 0.0],
            "response_rate": [-1.0, 2.0],
            "days_since_complaint": [0.0, 0.5],
        }
    )
    reference = {
        "complaints_90d": 1.0,
        "complaint_rate": 0.1,
        "response_rate": 0.5,
        "days_since_complaint": 30.0,
    }
    reasons = reason_codes(contrib, table, reference, top_k=3, direction="magnitude")
    first = reasons.iloc[0]
    assert first["reason_1"] == "complained 3 times in 90 days, median is 1 (lowers predicted value)"
    assert first["reason_2"] == (
        "0.5 complaints per order in 365 days, median is 0.1 (lowers predicted value)"
    )
    assert first["reason_3"] == (
        "responded to 25% of campaigns sent in 365 days, median is 50% (lowers predicted value)"
    )
    second = reasons.iloc[1]
    assert second["reason_1"].startswith("responded to 100% of campaigns")
    assert second["reason_2"] == "no value for days since the last complaint (missing without complaints)" + (
        " (raises predicted value)"
    )
