"""Ingest on Spark (``engine: spark``) gives what ingest on DuckDB gives: the same kept rows, the same quarantine
reasons per source row, the same DQ report.

Each case ingests the same files twice, once per engine, into two project roots, and compares every output
file: Parquet files row for row with their column types, the reports value for value (floats of the robust
outlier rule within 1e-9 relative: Spark's ``ln`` and DuckDB's may differ in the last bit). The cases cover
Parquet, CSV (with malformed lines, quoting, CRLF) and ``whitespace`` files, every duplicates rule, lookups
joined onto a source with row filters, and the customers, invoices and interactions files of the dirty
synthetic data. The standalone-cluster case is in tests/test_spark_engine.py.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from segml.config import load_experiment
from segml.datasets.synthetic import SynthSpec, write_synthetic
from segml.errors import ConfigError
from segml.ingest import run_ingest
from segml.ingest_spark import java_pattern, spark_sql

ROOT = Path(__file__).resolve().parents[1]
TODAY = dt.date(2026, 6, 30)


def _close(a: Any, b: Any) -> bool:
    """Equal, floats within 1e-9 relative (recursively through dicts and lists)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def ingest_both(
    experiment: Path, overrides: list[str], tmp_path: Path, *, alias: bool = False
) -> dict[str, Any]:
    """Ingest ``experiment`` on DuckDB and on Spark (each in its own root); assert every output is the same.

    Returns the DuckDB report. ``alias`` sets the engine through ``features.engine`` (for experiments that set
    that key themselves)."""
    key = "features.engine" if alias else "engine"
    interim = {}
    reports = {}
    for engine in ("duckdb", "spark"):
        root = tmp_path / engine
        root.mkdir(parents=True)
        cfg = load_experiment(experiment, [*overrides, f"{key}={engine}"], root=root)
        reports[engine] = run_ingest(cfg, today=TODAY).report
        interim[engine] = cfg.paths.interim
    names = sorted(p.name for p in interim["duckdb"].iterdir())
    assert names == sorted(p.name for p in interim["spark"].iterdir())
    for name in names:
        duck, spark = interim["duckdb"] / name, interim["spark"] / name
        if name.endswith(".parquet"):
            expected, got = pd.read_parquet(duck), pd.read_parquet(spark)
            assert got.dtypes.to_dict() == expected.dtypes.to_dict(), name
            pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, obj=name)
        elif name.endswith(".json"):
            assert _close(json.loads(spark.read_text()), json.loads(duck.read_text())), name
    assert (
        reports["duckdb"]["rows_in"] == reports["duckdb"]["rows_kept"] + reports["duckdb"]["rows_quarantined"]
    )
    return reports["duckdb"]


# ----------------------------------------------------------------------------------------------------------------
# The dialect (no session needed)


def test_statements_are_rewritten_for_spark() -> None:
    sql = (
        "SELECT \"a \"\"b\", 'it''s \\d', fsum(x), trim(y, chr(32)), CAST(NULL AS VARCHAR[]), list_value(1), "
        "* EXCLUDE (z) FROM read_parquet('/tmp/f.parquet') WHERE CAST(t AS TIMESTAMPTZ) IS NOT NULL "
        "AND w = 'fsum('"
    )
    assert spark_sql(sql) == (
        "SELECT `a \"b`, 'it\\'s \\\\d', sum(x), btrim(y, chr(32)), CAST(NULL AS ARRAY<STRING>), array(1), "
        "* EXCEPT (z) FROM parquet.`/tmp/f.parquet` WHERE CAST(t AS TIMESTAMP_LTZ) IS NOT NULL "
        "AND w = 'fsum('"
    )


def test_strftime_formats_become_spark_patterns() -> None:
    assert java_pattern("%Y%m%d") == "yyyyMMdd"
    assert java_pattern("%d/%m/%Y %H:%M:%S") == "dd/MM/yyyy HH:mm:ss"
    assert java_pattern("%Y-%m-%dT%H:%M") == "yyyy-MM-dd'T'HH:mm"
    with pytest.raises(ConfigError, match="%a has no Spark equivalent"):
        java_pattern("%a %d", "data.transactions.0.timestamp_format")


# ----------------------------------------------------------------------------------------------------------------
# Parity


def parity(test: Any) -> Any:
    """A parity case: slow, needs Spark, runs in the module's session."""
    return pytest.mark.slow(pytest.mark.spark(pytest.mark.usefixtures("spark")(test)))


@pytest.fixture(scope="module")
def spark():
    """One local session for the module, stopped at its end (a later module may start another master)."""
    from segml.config import SparkSettings
    from segml.features import spark_session

    session = spark_session(
        SparkSettings(conf={"spark.driver.memory": "1g", "spark.sql.shuffle.partitions": "2"})
    )
    yield session
    session.stop()


@parity
def test_golden_rules_on_spark_match_duckdb(tmp_path: Path) -> None:
    """The pinned dirty data set (Parquet + CSV sources) under every duplicates and cleaning rule."""
    from test_ingest_golden import RULES, _ingest

    for rule in RULES:
        base = tmp_path / rule
        _ingest(base, rule)  # writes the experiment and the files (and ingests them on DuckDB)
        raw = base / "data" / "raw"
        files = [
            f"data.transactions.{i}.path={raw / name}"
            for i, name in enumerate(("twins.parquet", "reversed.csv"))
        ]
        report = ingest_both(base / "experiments" / "golden.yaml", files, base / "both")
        assert report["rows_in"] == 1200, rule


@parity
def test_dirty_synthetic_with_every_file_on_spark_matches_duckdb(tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    truth = write_synthetic(SynthSpec(n_customers=1000, seed=7, dirty=True), out)
    overrides = [
        f"data.transactions.0.path={out / 'transactions.parquet'}",
        f"data.customers.path={out / 'customers.parquet'}",
        f"data.invoices.path={out / 'invoices.parquet'}",
        f"data.interactions.path={out / 'interactions.parquet'}",
    ]
    report = ingest_both(ROOT / "experiments" / "synthetic.yaml", overrides, tmp_path)
    assert report["by_reason"] == truth["injected"]
    assert report["invoices"]["by_reason"] == truth["injected_by_file"]["invoices"]


@parity
def test_cdnow_whitespace_file_on_spark_matches_duckdb(tmp_path: Path) -> None:
    path = ROOT / "data" / "raw" / "cdnow" / "CDNOW_master.txt"
    report = ingest_both(
        ROOT / "experiments" / "cdnow.yaml", [f"data.transactions.0.path={path}"], tmp_path, alias=True
    )
    assert report["rows_kept"] == 69659


CSV = (
    "cust,ts,amt,prod\n"
    "c1,2024-01-01,10,p1\n"
    "c2,2024-01-02,5\n"  # too few fields
    "c3,2024-01-03,7,p3,extra\n"  # too many
    '"c4","2024-01-04","1,5",p4\n'  # quoted delimiter: a non-numeric amount
    "c5,,3,p5\n"
    '"",2024-01-06,"",p6\n'
    'c7,2024/01/07,8,"p ""7"""\n'
    "c8, 2024-01-08 ,9 ,p8\n"
    "c9,2024-01-09,abc,p9\n"
    "c10,2024-01-10,4,p2\n"  # filtered out by where:
    "c11,2024,4,p1\n"  # a year alone is not a date (Spark's cast would read it)
)


@parity
def test_csv_with_malformed_lines_filters_and_joins_on_spark_matches_duckdb(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "tx.csv").write_text(CSV, encoding="utf-8")
    (raw / "crlf.csv").write_bytes(b"cust,ts,amt,prod\r\nc1,2024-01-01,10,p1\r\nc2,2024-01-02,5,p9\r\n")
    (raw / "products.csv").write_text(
        "prod,family\np1,a\np3,b\np4,a\np5,a\np6,b\np8,b\np9,a\n", encoding="utf-8"
    )
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(
        f"""\
data:
  transactions:
    - path: {raw / "tx.csv"}
      name: tx
      columns: {{customer_id: cust, timestamp: ts, amount: amt, product_id: prod}}
      where: {{prod: [p1, p3, p4, p5, p6, 'p "7"', p8, p9]}}
    - path: {raw / "crlf.csv"}
      name: crlf
      timestamp_format: "%Y-%m-%d"
      joins:
        - {{path: {raw / "products.csv"}, on_column: prod, key: prod, columns: [family]}}
      exclude: {{family: [b]}}
      columns: {{customer_id: cust, timestamp: ts, amount: amt, product_id: prod}}
  cleaning:
    max_date: 2026-01-01
    max_bad_share: 0.9
cutoffs:
  calibration_end: 2024-06-30
""",
        encoding="utf-8",
    )
    report = ingest_both(experiment, [], tmp_path / "both")
    assert report["by_reason"] == {
        "malformed_row": 2,
        "filtered": 1,
        "missing_customer_id": 1,
        "unparseable_timestamp": 2,
        "non_numeric_amount": 2,
    }
