"""The same SQL texts on Spark give the same features and labels as on DuckDB."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from segml.config import FeatureConfig
from segml.features import build_features, build_labels, training_frame

pytestmark = [pytest.mark.slow, pytest.mark.spark]

SPEC = FeatureConfig(threads=1)


def _fixture_module():
    """The hand-made fixture of test_features.py, loaded by path (tests is not a package)."""
    path = Path(__file__).with_name("test_features.py")
    spec = importlib.util.spec_from_file_location("segml_test_features_fixture", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIXTURE = _fixture_module()


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark", reason="the spark extra is not installed")
    from segml.features import spark_session

    session = spark_session()
    yield session
    session.stop()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, Path]:
    """A small synthetic data set in the clean schema, as parquet files."""
    from segml.datasets.synthetic import SynthSpec, generate

    data = generate(SynthSpec(n_customers=150, seed=3))
    tx = data.transactions.rename(columns={"order_ts": "timestamp"})
    tx["quantity"] = tx["quantity"].astype("float64")
    folder = tmp_path_factory.mktemp("synthetic")
    tx_path, cu_path = folder / "tx.parquet", folder / "cu.parquet"
    tx.to_parquet(tx_path, index=False)
    data.customers.to_parquet(cu_path, index=False)
    return tx_path, cu_path


def assert_same(spark_frame: pd.DataFrame, duck_frame: pd.DataFrame) -> None:
    assert list(spark_frame.columns) == list(duck_frame.columns)
    pd.testing.assert_frame_equal(spark_frame, duck_frame, check_exact=False, rtol=1e-9, atol=1e-12)


def test_lazy_spark_features_with_margin_equal(spark, tmp_path):
    """Transactions with a margin (a product cost was mapped): the lazy Spark query, which `segml grade
    --engine spark` runs, keeps the margin features the grade policy and the margin summaries read."""
    import pyarrow as pa

    from segml.features import normalise_feature_batch, spark_features

    tx = FIXTURE.with_margin(FIXTURE.make_transactions())
    tx_path = tmp_path / "tx.parquet"
    tx.to_parquet(tx_path, index=False, coerce_timestamps="us")
    with spark_features(tx_path, FIXTURE.AS_OF, SPEC) as (frame, attributes):
        batch = pa.Table.from_batches(frame._collect_as_arrow())
        lazy = normalise_feature_batch(batch, SPEC, attributes)
    assert "margin_total" in lazy.columns and "margin_rate" in lazy.columns
    assert_same(lazy, build_features(tx, FIXTURE.AS_OF, SPEC))


@pytest.mark.parametrize("as_of", [FIXTURE.AS_OF, dt.date(2024, 4, 20)])
def test_fixture_features_equal(spark, as_of):
    tx, customers = FIXTURE.make_transactions(), FIXTURE.make_customers()
    duck = build_features(tx, as_of, SPEC, customers)
    on_spark = build_features(tx, as_of, SPEC, customers, engine="spark")
    assert_same(on_spark, duck)
    assert_same(on_spark, FIXTURE.reference_features(tx, as_of, SPEC, customers))


def test_fixture_labels_equal(spark):
    tx = FIXTURE.make_transactions()
    for label_end in (None, dt.date(2024, 8, 31)):
        duck = build_labels(tx, FIXTURE.AS_OF, 90, label_end=label_end)
        assert_same(build_labels(tx, FIXTURE.AS_OF, 90, label_end=label_end, engine="spark"), duck)


def test_synthetic_training_frame_equal(spark, synthetic):
    tx_path, cu_path = synthetic
    cutoffs = [dt.date(2024, 12, 31), dt.date(2025, 6, 30)]
    spec = FeatureConfig(windows=[30, 90, 365], threads=1)
    duck = training_frame(tx_path, cutoffs, 365, spec, cu_path, label_end=dt.date(2026, 6, 30))
    on_spark = training_frame(
        tx_path, cutoffs, 365, spec, cu_path, label_end=dt.date(2026, 6, 30), engine="spark"
    )
    assert len(duck) > 200
    assert_same(on_spark, duck)


def test_fixture_margin_features_equal(spark):
    tx, customers = FIXTURE.with_margin(FIXTURE.make_transactions()), FIXTURE.make_customers()
    duck = build_features(tx, FIXTURE.AS_OF, SPEC, customers)
    on_spark = build_features(tx, FIXTURE.AS_OF, SPEC, customers, engine="spark")
    assert "margin_rate" in on_spark.columns
    assert_same(on_spark, duck)
    assert_same(on_spark, FIXTURE.reference_features(tx, FIXTURE.AS_OF, SPEC, customers))


@pytest.mark.parametrize("as_of", [FIXTURE.AS_OF, dt.date(2024, 4, 20)])
def test_fixture_invoice_features_equal(spark, as_of):
    tx, customers, invoices = FIXTURE.make_transactions(), FIXTURE.make_customers(), FIXTURE.make_invoices()
    duck = build_features(tx, as_of, SPEC, customers, invoices=invoices)
    on_spark = build_features(tx, as_of, SPEC, customers, engine="spark", invoices=invoices)
    assert "overdue_amount" in on_spark.columns
    assert_same(on_spark, duck)
    expected = FIXTURE.reference_features(tx, as_of, SPEC, customers)
    assert_same(on_spark, FIXTURE.with_reference_invoices(expected, invoices, as_of, SPEC))


def test_lazy_spark_features_with_invoices_equal(spark, tmp_path):
    import pyarrow as pa

    from segml.features import normalise_feature_batch, spark_features

    tx, invoices = FIXTURE.make_transactions(), FIXTURE.make_invoices()
    tx_path, invoices_path = tmp_path / "tx.parquet", tmp_path / "invoices.parquet"
    # as ingest writes them: Spark reads microsecond timestamps, not pandas' nanoseconds
    tx.to_parquet(tx_path, index=False, coerce_timestamps="us")
    invoices.to_parquet(invoices_path, index=False, coerce_timestamps="us")
    with spark_features(tx_path, FIXTURE.AS_OF, SPEC, invoices=invoices_path) as (frame, attributes):
        batch = pa.Table.from_batches(frame._collect_as_arrow())
        lazy = normalise_feature_batch(batch, SPEC, attributes, with_invoices=True)
    assert_same(lazy, build_features(tx, FIXTURE.AS_OF, SPEC, invoices=invoices))


@pytest.mark.parametrize("as_of", [FIXTURE.AS_OF, dt.date(2024, 4, 20)])
def test_fixture_interaction_features_equal(spark, as_of):
    tx, customers = FIXTURE.make_transactions(), FIXTURE.make_customers()
    invoices, interactions = FIXTURE.make_invoices(), FIXTURE.make_interactions()
    duck = build_features(tx, as_of, SPEC, customers, invoices=invoices, interactions=interactions)
    on_spark = build_features(
        tx, as_of, SPEC, customers, engine="spark", invoices=invoices, interactions=interactions
    )
    assert "complaint_rate" in on_spark.columns and "overdue_amount" in on_spark.columns
    assert_same(on_spark, duck)
    expected = FIXTURE.with_reference_invoices(
        FIXTURE.reference_features(tx, as_of, SPEC, customers), invoices, as_of, SPEC
    )
    expected = FIXTURE.with_reference_interactions(
        expected, interactions, tx, as_of, SPEC, with_invoices=True
    )
    assert_same(on_spark, expected)


def test_lazy_spark_features_with_interactions_equal(spark, tmp_path):
    import pyarrow as pa

    from segml.features import normalise_feature_batch, spark_features

    tx, interactions = FIXTURE.make_transactions(), FIXTURE.make_interactions()
    tx_path, interactions_path = tmp_path / "tx.parquet", tmp_path / "interactions.parquet"
    tx.to_parquet(tx_path, index=False, coerce_timestamps="us")
    interactions.to_parquet(interactions_path, index=False, coerce_timestamps="us")
    with spark_features(tx_path, FIXTURE.AS_OF, SPEC, interactions=interactions_path) as (frame, attributes):
        batch = pa.Table.from_batches(frame._collect_as_arrow())
        lazy = normalise_feature_batch(batch, SPEC, attributes, with_interactions=True)
    assert_same(lazy, build_features(tx, FIXTURE.AS_OF, SPEC, interactions=interactions))


def test_interaction_training_frame_equal(spark):
    tx, customers, interactions = (
        FIXTURE.make_transactions(),
        FIXTURE.make_customers(),
        FIXTURE.make_interactions(),
    )
    cutoffs = [dt.date(2024, 4, 20), FIXTURE.AS_OF]
    duck = training_frame(tx, cutoffs, 90, SPEC, customers, interactions=interactions)
    on_spark = training_frame(tx, cutoffs, 90, SPEC, customers, engine="spark", interactions=interactions)
    assert_same(on_spark, duck)
