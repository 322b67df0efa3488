"""Ingest: reading, role mapping, every quarantine reason, precedence, duplicates, outliers, DQ report."""

from __future__ import annotations

import datetime as dt
import json
import math
import textwrap
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segml.config import CleaningRules, CustomerSource, OutlierRule, TransactionSource, load_experiment
from segml.datasets.synthetic import SynthSpec, write_synthetic
from segml.errors import ConfigError, InputFileError
from segml.ingest import QUARANTINE_CUSTOMERS_FILE, ingest_frames, run_ingest
from segml.schema import CLEAN_TRANSACTION_COLUMNS, QuarantineReason

ROOT = Path(__file__).resolve().parents[1]
TODAY = dt.date(2024, 6, 30)


def _experiment(tmp_path: Path, data_yaml: str, name: str = "exp"):
    """Write an experiment YAML with the given ``data:`` body under tmp_path and load it (root=tmp_path)."""
    text = "data:\n" + textwrap.indent(textwrap.dedent(data_yaml).strip("\n"), "  ") + "\n"
    text += "cutoffs:\n  calibration_end: 2024-03-31\nfeatures:\n  threads: 1\n"
    path = tmp_path / "experiments" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return load_experiment(path, root=tmp_path)


def _reasons(quarantine: pd.DataFrame) -> dict[int, str]:
    return dict(zip(quarantine["source_row"].astype(int), quarantine["reason"], strict=True))


def _parquet_schema(path: Path) -> dict[str, str]:
    rows = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()
    return {name: col_type for name, col_type, *_ in rows}


# ------------------------------------------------------------------------------------------------------------
# CDNOW end to end


@pytest.fixture(scope="module")
def cdnow_result(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cdnow_root")
    (root / "data" / "raw").mkdir(parents=True)
    (root / "data" / "raw" / "cdnow").symlink_to(ROOT / "data" / "raw" / "cdnow")
    cfg = load_experiment(ROOT / "experiments" / "cdnow.yaml", root=root)
    return cfg, run_ingest(cfg)


def test_cdnow_counts(cdnow_result) -> None:
    cfg, result = cdnow_result
    report = result.report
    assert report["rows_in"] == 69_659
    assert report["rows_kept"] == 69_659
    assert report["rows_quarantined"] == 0
    assert report["by_reason"] == {}
    assert report["customers"] == 23_570
    assert report["zero_amount_kept"] == 80
    assert report["identical_rows_kept"] == 255
    assert round(report["amount_total_kept"], 2) == 2_500_315.63
    assert (report["date_min"], report["date_max"]) == ("1997-01-01", "1998-06-30")
    assert report["experiment"] == "cdnow"
    assert report["rules"]["duplicates"] == "auto"
    assert report["customers_file"] is None
    assert json.loads(result.report_path.read_text()) == json.loads(json.dumps(report))
    assert result.transactions_path == cfg.paths.clean_transactions
    assert result.customers_path is None


def test_cdnow_clean_file(cdnow_result) -> None:
    _, result = cdnow_result
    assert _parquet_schema(result.transactions_path) == CLEAN_TRANSACTION_COLUMNS
    clean = pd.read_parquet(result.transactions_path)
    assert clean["customer_id"].iloc[0] == "00001"
    assert clean["customer_id"].str.fullmatch(r"\d{5}").all()
    assert clean["quantity"].sum() == 167_881
    assert clean.loc[clean["customer_id"] == "00002", "amount"].tolist() == [12.00, 77.00]
    expected_order = clean.sort_values(["customer_id", "timestamp", "source", "source_row"])
    assert clean.index.equals(expected_order.index)
    assert sorted(clean["source_row"]) == list(range(1, 69_660))
    assert (clean["source"] == "cdnow").all()
    assert len(pd.read_parquet(result.quarantine_path)) == 0


def test_whitespace_format_tabs_blank_lines_crlf(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    text = "  id \t day   amt\r\n\r\n 007\t20240105  1.5\r\n008 20240106 2 extra\r\n009 20240107\r\n   \r\n"
    (tmp_path / "raw" / "log.dat").write_bytes(text.encode())
    cfg = _experiment(
        tmp_path,
        """
        transactions:
          - path: raw/log.dat
            format: whitespace
            timestamp_format: "%Y%m%d"
            columns: {customer_id: id, timestamp: day, amount: amt}
        cleaning:
          max_bad_share: 1.0
        """,
    )
    result = run_ingest(cfg, today=TODAY)
    clean = pd.read_parquet(result.transactions_path)
    assert clean["customer_id"].tolist() == ["007", "008"]
    assert clean["amount"].tolist() == [1.5, 2.0]
    assert _reasons(pd.read_parquet(result.quarantine_path)) == {3: "non_numeric_amount"}
    assert result.report["sources"][0]["rows_with_extra_fields"] == 1
    assert result.report["sources"][0]["format"] == "whitespace"


def test_unknown_extension_needs_a_format(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "log.dat").write_text("a b c\n1 2 3\n", encoding="utf-8")
    cfg = _experiment(
        tmp_path,
        """
        transactions:
          - path: raw/log.dat
            columns: {customer_id: a, timestamp: b, amount: c}
        """,
    )
    with pytest.raises(ConfigError, match=r"data\.transactions\.0\.format: cannot tell the format"):
        run_ingest(cfg, today=TODAY)


# ------------------------------------------------------------------------------------------------------------
# Every reason, precedence, quarantine file

REASONS_CSV = """\
cust,when,value,oid,sku
c1,2024-01-05,10.0,o1,A
,2024-01-05,10,o2,A
c2,notadate,10,o3,A
c2,1960-01-01,10,o3b,A
c2,2030-01-01,10,o3c,A
c3,2024-01-05,abc,o4,A
c3,2024-01-05,5,o5,postage
c1,2024-01-05,10.00,o1,A
c4,2024-02-01,0,o6,A
c4,2024-02-02,-5,o7,A
c5,2024-02-03,5000000,o8,A
  ,notadate,xyz,o9,A
c6,2024-03-01,20,o10,B
c6,2024-03-02,21,o11,B
c6,2024-03-03,22,o12,B
c6,2024-03-04,23,o13,B
c7,2024-03-05
"""

EXPECTED_REASONS = {
    2: "missing_customer_id",
    3: "unparseable_timestamp",
    4: "timestamp_out_of_range",
    5: "future_timestamp",
    6: "non_numeric_amount",
    7: "non_product",
    8: "duplicate_row",
    9: "zero_amount",
    10: "return",
    11: "outlier_amount",
    12: "missing_customer_id",  # also a bad date and a bad amount: identity comes first
    17: "malformed_row",  # too few fields: quarantined, not a reason to refuse the file
}


@pytest.fixture
def reasons_cfg(tmp_path: Path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "orders.csv").write_text(REASONS_CSV, encoding="utf-8")
    return _experiment(
        tmp_path,
        """
        transactions:
          - path: raw/orders.csv
            columns: {customer_id: cust, timestamp: when, amount: value, order_id: oid, product_id: sku}
            non_product_codes: [POSTAGE, FEE]
        cleaning:
          duplicates: auto
          zero_amount: quarantine
          returns: quarantine
          max_bad_share: 0.9
          outliers: {quarantine_above: 1000000}
        """,
    )


def test_every_reason_and_precedence(reasons_cfg) -> None:
    result = run_ingest(reasons_cfg, today=TODAY)
    quarantine = pd.read_parquet(result.quarantine_path)
    assert _reasons(quarantine) == EXPECTED_REASONS
    assert set(quarantine["reason"]) == {r.value for r in QuarantineReason}
    report = result.report
    assert report["rows_in"] == 17
    assert report["rows_quarantined"] == 12
    assert report["rows_kept"] == 5
    assert report["by_reason"] == {
        r.value: (2 if r is QuarantineReason.MISSING_CUSTOMER_ID else 1) for r in QuarantineReason
    }
    assert report["rules"]["max_date"] == "2024-06-30"
    assert report["rules"]["max_date_from"] == "today argument"
    clean = pd.read_parquet(result.transactions_path)
    assert clean["source_row"].tolist() == [1, 13, 14, 15, 16]
    assert (clean["source"] == "orders").all()


def test_quarantine_keeps_original_text(reasons_cfg) -> None:
    result = run_ingest(reasons_cfg, today=TODAY)
    quarantine = pd.read_parquet(result.quarantine_path)
    assert list(quarantine.columns) == [
        "cust",
        "when",
        "value",
        "oid",
        "sku",
        "source",
        "source_row",
        "reason",
        "raw_line",
    ]
    assert set(_parquet_schema(result.quarantine_path).values()) <= {"VARCHAR", "BIGINT"}
    row = quarantine.set_index("source_row").loc[6]
    assert (row["cust"], row["when"], row["value"]) == ("c3", "2024-01-05", "abc")
    assert quarantine.set_index("source_row").loc[8, "value"] == "10.00"  # original text, not the number


def test_max_date_defaults_to_today_argument(reasons_cfg) -> None:
    result = run_ingest(reasons_cfg, today=dt.date(2040, 1, 1))
    assert 5 not in _reasons(pd.read_parquet(result.quarantine_path))


def test_rerun_is_byte_identical(reasons_cfg) -> None:
    first = run_ingest(reasons_cfg, today=TODAY)
    blobs = [p.read_bytes() for p in (first.transactions_path, first.quarantine_path, first.report_path)]
    reasons_cfg.features.threads = 2
    second = run_ingest(reasons_cfg, today=TODAY)
    assert [
        p.read_bytes() for p in (second.transactions_path, second.quarantine_path, second.report_path)
    ] == blobs


# ------------------------------------------------------------------------------------------------------------
# Parquet, typed or as strings


def _parquet_frame(typed: bool) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "customer_id": [101, 102, 103, 104],
            "order_ts": pd.to_datetime(
                ["2024-01-01 10:00", "2024-01-02 00:00", "2024-01-03 00:00", "2031-01-01 00:00"]
            ),
            "amount": [10.5, 20.0, -3.0, 7.0],
        }
    )
    if not typed:
        frame["order_ts"] = frame["order_ts"].dt.strftime("%Y-%m-%d %H:%M:%S")
        frame["amount"] = frame["amount"].map(repr)
    return frame


@pytest.mark.parametrize("typed", [True, False], ids=["typed", "strings"])
def test_parquet_typed_or_strings(tmp_path: Path, typed: bool) -> None:
    (tmp_path / "raw").mkdir()
    _parquet_frame(typed).to_parquet(tmp_path / "raw" / "tx.parquet", index=False)
    cfg = _experiment(
        tmp_path,
        """
        transactions:
          - path: raw/tx.parquet
            columns: {customer_id: customer_id, timestamp: order_ts, amount: amount}
        """,
    )
    result = run_ingest(cfg, today=TODAY)
    clean = pd.read_parquet(result.transactions_path)
    assert clean["customer_id"].tolist() == ["101", "102", "103"]
    assert clean["amount"].tolist() == [10.5, 20.0, -3.0]
    assert clean["is_return"].tolist() == [False, False, True]
    assert clean["timestamp"].iloc[0] == pd.Timestamp("2024-01-01 10:00")
    assert result.report["by_reason"] == {"future_timestamp": 1}
    assert result.report["returns"] == {"count": 1, "amount": -3.0}


def test_timestamps_dates_offsets_and_format() -> None:
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "ts": ["2024-01-05", "2024-01-05 10:00:00+02:00", "2024-01-05T23:15:00"],
            "v": ["1", "2", "3"],
        }
    )
    source = TransactionSource(path="t.csv", columns={"customer_id": "id", "timestamp": "ts", "amount": "v"})
    result = ingest_frames([frame], [source], today=TODAY)
    assert result.clean["timestamp"].tolist() == [
        pd.Timestamp("2024-01-05"),
        pd.Timestamp("2024-01-05 08:00"),  # offsets are converted to UTC
        pd.Timestamp("2024-01-05 23:15"),
    ]
    formatted = pd.DataFrame({"id": ["a", "b"], "ts": ["05/01/2024", "2024-01-05"], "v": ["1", "2"]})
    dated = TransactionSource(
        path="t.csv",
        columns={"customer_id": "id", "timestamp": "ts", "amount": "v"},
        timestamp_format="%d/%m/%Y",
    )
    result = ingest_frames([formatted], [dated], CleaningRules(max_bad_share=1.0), today=TODAY)
    assert result.clean["timestamp"].tolist() == [pd.Timestamp("2024-01-05")]
    assert _reasons(result.quarantine) == {2: "unparseable_timestamp"}


# ------------------------------------------------------------------------------------------------------------
# Several sources, order lines


def test_multi_source_union_with_different_columns(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "orders.csv").write_text(
        "customer;ts;total;order_no\nA1;2024-01-01;10;o1\nA2;2024-01-02;oops;o2\n", encoding="utf-8"
    )
    pd.DataFrame(
        {
            "client_id": ["A1", "B7", ""],
            "billed_at": ["2024-02-01", "2024-02-02", "2024-02-03"],
            "amount_eur": [5.0, 6.0, 7.0],
            "via": ["web", "store", "web"],
        }
    ).to_parquet(tmp_path / "raw" / "billing.parquet", index=False)
    cfg = _experiment(
        tmp_path,
        """
        transactions:
          - path: raw/orders.csv
            delimiter: ";"
            columns: {customer_id: customer, timestamp: ts, amount: total, order_id: order_no}
          - path: raw/billing.parquet
            name: billing
            columns: {customer_id: client_id, timestamp: billed_at, amount: amount_eur, channel: via}
        """,
    )
    result = run_ingest(cfg, today=TODAY)
    clean = pd.read_parquet(result.transactions_path)
    assert list(zip(clean["customer_id"], clean["source"], clean["channel"], strict=True)) == [
        ("A1", "orders", None),
        ("A1", "billing", "web"),
        ("B7", "billing", "store"),
    ]
    quarantine = pd.read_parquet(result.quarantine_path)
    assert list(quarantine.columns) == [
        "customer", "ts", "total", "order_no", "client_id", "billed_at", "amount_eur", "via",
        "source", "source_row", "reason", "raw_line",
    ]  # fmt: skip
    assert quarantine[["source", "source_row", "reason"]].values.tolist() == [
        ["orders", 2, "non_numeric_amount"],
        ["billing", 3, "missing_customer_id"],
    ]
    assert quarantine["amount_eur"].tolist() == [None, "7.0"]
    sources = {s["name"]: s for s in result.report["sources"]}
    assert (sources["orders"]["rows_in"], sources["orders"]["rows_kept"]) == (2, 1)
    assert sources["billing"]["by_reason"] == {"missing_customer_id": 1}
    assert result.report["customers"] == 2


ONLINE_RETAIL_CSV = """\
InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom
536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850,United Kingdom
536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850,United Kingdom
536370,POST,POSTAGE,3,12/1/2010 8:45,18,12583,France
C536379,D,Discount,-1,12/1/2010 9:41,27.5,14527,United Kingdom
C536383,35004C,SET OF 3 COLOURED  FLYING DUCKS,-1,12/1/2010 9:49,4.65,15311,United Kingdom
536414,22139,RETROSPOT TEA SET,56,12/1/2010 11:52,0,,United Kingdom
A563185,B,Adjust bad debt,1,8/12/2011 14:50,11062.06,,United Kingdom
536544,DOT,DOTCOM POSTAGE,1,12/1/2010 14:32,569.77,,United Kingdom
536365,gift_0001_10,Gift voucher,1,12/1/2010 8:26,10,17850,United Kingdom
536546,22180,RETROSPOT LAMP,1,12/2/2010 10:00,9.95,12583,France
"""


def test_online_retail_like_order_lines(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "retail.csv").write_text(ONLINE_RETAIL_CSV, encoding="utf-8")
    cfg = _experiment(
        tmp_path,
        """
        transactions:
          - path: raw/retail.csv
            timestamp_format: "%m/%d/%Y %H:%M"
            cancellation_prefix: C
            non_product_codes: [post, DOT, M, D, " BANK CHARGES "]
            non_product_pattern: "^gift_"
            columns:
              customer_id: CustomerID
              order_id: InvoiceNo
              product_id: StockCode
              quantity: Quantity
              unit_price: UnitPrice
              timestamp: InvoiceDate
        cleaning:
          max_bad_share: 0.5
        """,
    )
    result = run_ingest(cfg, today=TODAY)
    quarantine = pd.read_parquet(result.quarantine_path)
    assert _reasons(quarantine) == {
        3: "duplicate_row",
        4: "non_product",
        5: "non_product",  # discount line: non-product ranks above return
        7: "missing_customer_id",
        8: "missing_customer_id",
        9: "missing_customer_id",
        10: "non_product",
    }
    clean = pd.read_parquet(result.transactions_path).set_index("source_row")
    assert clean.loc[1, "amount"] == pytest.approx(6 * 2.55)
    assert clean.loc[1, "order_id"] == "536365"
    assert clean.loc[1, "timestamp"] == pd.Timestamp("2010-12-01 08:26")
    assert bool(clean.loc[6, "is_return"])
    assert clean.loc[6, "amount"] == pytest.approx(-4.65)
    assert clean.loc[6, "quantity"] == -1
    assert not clean.loc[[1, 2, 11], "is_return"].any()
    assert result.report["returns"]["count"] == 1
    assert result.report["rows_in"] == 11


def test_cancellation_prefix_makes_positive_amount_negative() -> None:
    frame = pd.DataFrame(
        {"c": ["x", "x"], "t": ["2024-01-01", "2024-01-02"], "a": ["5", "7"], "o": ["1", "C2"]}
    )
    source = TransactionSource(
        path="t.csv",
        columns={"customer_id": "c", "timestamp": "t", "amount": "a", "order_id": "o"},
        cancellation_prefix="C",
    )
    result = ingest_frames([frame], [source], today=TODAY)
    assert result.clean["amount"].tolist() == [5.0, -7.0]
    assert result.clean["is_return"].tolist() == [False, True]
    assert result.report["returns"] == {"count": 1, "amount": -7.0}
    assert result.report["amount_total_kept"] == -2.0


# ------------------------------------------------------------------------------------------------------------
# Duplicates, zero amounts, outliers

DUP_FRAME = pd.DataFrame(
    {
        "c": ["a", "a", "b", "b", "c", "c"],
        "t": ["2024-01-01"] * 6,
        "v": ["10", "10.0", "5", "5", "0", "0"],
        "o": ["o1", "o1", None, None, "", " "],
    }
)
DUP_SOURCE = TransactionSource(
    path="dups.csv", columns={"customer_id": "c", "timestamp": "t", "amount": "v", "order_id": "o"}
)


@pytest.mark.parametrize(
    ("rule", "duplicates", "identical_kept"),
    [
        ("auto", {2: "duplicate_row"}, 2),
        ("drop_identical", {2: "duplicate_row", 4: "duplicate_row", 6: "duplicate_row"}, 0),
        ("keep", {}, 3),
    ],
)
def test_duplicate_rules(rule: str, duplicates: dict[int, str], identical_kept: int) -> None:
    result = ingest_frames([DUP_FRAME], [DUP_SOURCE], CleaningRules(duplicates=rule), today=TODAY)  # type: ignore[arg-type]
    assert _reasons(result.quarantine) == duplicates
    assert result.report["identical_rows_kept"] == identical_kept
    assert result.report["rules"]["duplicates"] == rule


def test_duplicates_only_within_one_source() -> None:
    frame = DUP_FRAME.iloc[:1]
    result = ingest_frames(
        [frame, frame],
        [DUP_SOURCE, TransactionSource(path="again.csv", columns=DUP_SOURCE.columns)],
        today=TODAY,
    )
    assert len(result.clean) == 2


@pytest.mark.parametrize(("rule", "kept"), [("keep", 6), ("quarantine", 4)])
def test_zero_amount_rule(rule: str, kept: int) -> None:
    rules = CleaningRules(duplicates="keep", zero_amount=rule)  # type: ignore[arg-type]
    result = ingest_frames([DUP_FRAME], [DUP_SOURCE], rules, today=TODAY)
    assert result.report["rows_kept"] == kept
    assert result.report["zero_amount_kept"] == (2 if rule == "keep" else 0)
    assert result.report["by_reason"] == ({} if rule == "keep" else {"zero_amount": 2})


def _amount_frame(amounts: list[float]) -> tuple[pd.DataFrame, TransactionSource]:
    frame = pd.DataFrame(
        {"c": [f"c{i}" for i in range(len(amounts))], "t": "2024-01-01", "v": [str(a) for a in amounts]}
    )
    return frame, TransactionSource(
        path="amounts.csv", columns={"customer_id": "c", "timestamp": "t", "amount": "v"}
    )


def test_outliers_flagged_by_mad_not_removed() -> None:
    frame, source = _amount_frame([10, 12, 9, 11, 10.5, 13, 8, 50_000, -40_000])
    result = ingest_frames([frame], [source], today=TODAY)
    assert result.report["rows_kept"] == 9
    flagged = result.clean.loc[result.clean["is_outlier"], "amount"].tolist()
    assert sorted(flagged) == [-40_000, 50_000]
    assert result.report["outliers_flagged"] == 2
    assert result.report["rules"]["outliers"]["method"] == "mad"


def test_outliers_flag_above_and_quarantine_above() -> None:
    frame, source = _amount_frame([10, 200, 3000])
    flagged = ingest_frames(
        [frame], [source], CleaningRules(outliers=OutlierRule(flag_above=100)), today=TODAY
    )
    assert flagged.clean["is_outlier"].tolist() == [False, True, True]
    rules = CleaningRules(outliers=OutlierRule(flag_above=100, quarantine_above=1000))
    quarantined = ingest_frames([frame], [source], rules, today=TODAY)
    assert _reasons(quarantined.quarantine) == {3: "outlier_amount"}
    assert quarantined.clean["is_outlier"].tolist() == [False, True]


def test_no_spread_flags_nothing() -> None:
    frame, source = _amount_frame([10, 10, 10, 10, 11])
    result = ingest_frames([frame], [source], today=TODAY)
    assert not result.clean["is_outlier"].any()


# ------------------------------------------------------------------------------------------------------------
# Customers file


def test_customers_file(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "tx.csv").write_text(
        "id,ts,v\n001,2024-01-01,5\n002,2024-01-02,6\n", encoding="utf-8"
    )
    (tmp_path / "raw" / "cust.csv").write_text(
        "cid,joined,segment,city\n001,2023-05-01,SMB,Oslo\n,2023-01-01,ENT,Rome\n001,2023-06-01,ENT,Oslo\n"
        "003,bad-date,,Paris\n",
        encoding="utf-8",
    )
    cfg = _experiment(
        tmp_path,
        """
        transactions:
          - path: raw/tx.csv
            columns: {customer_id: id, timestamp: ts, amount: v}
        customers:
          path: raw/cust.csv
          columns: {customer_id: cid, signup_date: joined, industry: segment, region: city}
        """,
    )
    result = run_ingest(cfg, today=TODAY)
    assert result.customers_path == cfg.paths.clean_customers
    assert _parquet_schema(result.customers_path) == {
        "customer_id": "VARCHAR", "signup_date": "DATE", "industry": "VARCHAR", "region": "VARCHAR",
    }  # fmt: skip
    customers = pd.read_parquet(result.customers_path)
    assert customers["customer_id"].tolist() == ["001", "003"]
    assert customers["signup_date"].iloc[0] == dt.date(2023, 5, 1)
    assert pd.isna(customers["signup_date"].iloc[1])
    assert customers["industry"].tolist() == ["SMB", None]
    quarantine = pd.read_parquet(cfg.paths.interim / QUARANTINE_CUSTOMERS_FILE)
    assert _reasons(quarantine) == {2: "missing_customer_id", 3: "duplicate_row"}
    section = result.report["customers_file"]
    assert (section["rows_in"], section["rows_kept"], section["rows_quarantined"]) == (4, 2, 2)
    assert section["by_reason"] == {"missing_customer_id": 1, "duplicate_row": 1}
    assert section["signup_date_unparseable"] == 1
    assert section["transaction_customers_without_attributes"] == 1
    assert section["customers_without_transactions"] == 1


def test_customer_attributes_must_be_mapped() -> None:
    frame = pd.DataFrame({"c": ["a"], "t": ["2024-01-01"], "v": ["1"]})
    source = TransactionSource(path="t.csv", columns={"customer_id": "c", "timestamp": "t", "amount": "v"})
    customers = pd.DataFrame({"cid": ["a"], "seg": ["x"]})
    customer_source = CustomerSource(
        path="c.csv", columns={"customer_id": "cid", "industry": "seg"}, attributes=["size"]
    )
    with pytest.raises(ConfigError, match=r"data\.customers\.attributes: 'size'"):
        ingest_frames([frame], [source], customers=customers, customer_source=customer_source, today=TODAY)


# ------------------------------------------------------------------------------------------------------------
# Refusals and configuration errors


def _bad_share_frame() -> tuple[pd.DataFrame, TransactionSource]:
    frame = pd.DataFrame(
        {"id": ["a", "b", "c", "d"], "ts": ["2024-01-01"] * 4, "dollar_value": ["x", "y", "z", "1"]}
    )
    return frame, TransactionSource(
        path="tx.csv", columns={"customer_id": "id", "timestamp": "ts", "amount": "dollar_value"}
    )


def test_mostly_non_numeric_column_refuses_file() -> None:
    frame, source = _bad_share_frame()
    with pytest.raises(
        InputFileError, match=r"tx\.csv: column 'dollar_value' \(role amount\): 3 of 4 rows are not numbers"
    ):
        ingest_frames([frame], [source], today=TODAY)
    assert (
        ingest_frames([frame], [source], CleaningRules(max_bad_share=0.8), today=TODAY).report["rows_kept"]
        == 1
    )


def test_missing_column_names_file_and_columns() -> None:
    frame, source = _bad_share_frame()
    source.columns["amount"] = "amt"
    with pytest.raises(
        InputFileError,
        match=r"tx\.csv: column 'amt' \(role amount\) not found; columns are: id, ts, dollar_value",
    ):
        ingest_frames([frame], [source], today=TODAY)


@pytest.mark.parametrize(
    ("columns", "extra", "message"),
    [
        ({"customer_id": "id", "timestamp": "ts"}, {}, r"map 'amount', or both 'quantity' and 'unit_price'"),
        ({"customer_id": "id", "timestamp": "ts", "amout": "x"}, {}, r"unknown role 'amout'"),
        (
            {"customer_id": "id", "timestamp": "ts", "amount": "dollar_value"},
            {"non_product_codes": ["X"]},
            r"need columns\.product_id",
        ),
        (
            {"customer_id": "id", "timestamp": "ts", "amount": "dollar_value", "product_id": "id"},
            {"non_product_pattern": "(unclosed"},
            r"non_product_pattern: invalid regular expression",
        ),
    ],
)
def test_config_errors(columns: dict[str, str], extra: dict, message: str) -> None:
    frame, _ = _bad_share_frame()
    source = TransactionSource(path="tx.csv", columns=columns, **extra)
    with pytest.raises(ConfigError, match=message):
        ingest_frames([frame], [source], CleaningRules(max_bad_share=1.0), today=TODAY)


def test_same_source_name_twice_is_an_error() -> None:
    frame, source = _bad_share_frame()
    with pytest.raises(ConfigError, match=r"source name 'tx' is already used"):
        ingest_frames([frame, frame], [source, source], today=TODAY)


# ------------------------------------------------------------------------------------------------------------
# Property: every row ends up in exactly one output

customer_ids = st.sampled_from(["a", "b", "00c", "", "  ", None])
timestamps = st.sampled_from(
    ["2024-01-01", "2024-02-29 12:00", "1960-05-05", "2031-01-01", "garbage", "", None]
)
amounts = st.sampled_from(["10", "10.0", "0", "-3.5", "1e7", "abc", "inf", "NaN", "", None])
order_ids = st.sampled_from(["o1", "o2", "C9", None])
products = st.sampled_from(["A", "B", "POST", None])
rows = st.tuples(customer_ids, timestamps, amounts, order_ids, products)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(rows, min_size=1, max_size=25),
    duplicates=st.sampled_from(["auto", "drop_identical", "keep"]),
    zero_amount=st.sampled_from(["keep", "quarantine"]),
    returns=st.sampled_from(["net", "quarantine"]),
    quarantine_above=st.sampled_from([None, 1000.0]),
)
def test_every_row_lands_exactly_once(data, duplicates, zero_amount, returns, quarantine_above) -> None:
    frame = pd.DataFrame(data, columns=["cust", "ts", "amt", "oid", "sku"], dtype=object)
    source = TransactionSource(
        path="prop.csv",
        columns={
            "customer_id": "cust",
            "timestamp": "ts",
            "amount": "amt",
            "order_id": "oid",
            "product_id": "sku",
        },
        cancellation_prefix="C",
        non_product_codes=["post"],
    )
    rules = CleaningRules(
        duplicates=duplicates,
        zero_amount=zero_amount,
        returns=returns,
        max_bad_share=1.0,
        outliers=OutlierRule(quarantine_above=quarantine_above),
    )
    result = ingest_frames([frame], [source], rules, today=TODAY)
    report = result.report
    assert report["rows_in"] == len(frame) == report["rows_kept"] + report["rows_quarantined"]
    assert len(result.clean) == report["rows_kept"]
    assert len(result.quarantine) == report["rows_quarantined"]
    assert sum(report["by_reason"].values()) == report["rows_quarantined"]
    seen = sorted([*result.clean["source_row"], *result.quarantine["source_row"]])
    assert seen == list(range(1, len(frame) + 1))
    missing_id = frame["cust"].isna() | (frame["cust"].fillna("").str.strip() == "")
    missing_rows = set((frame.index[missing_id] + 1).tolist())
    assert {
        r for r, reason in _reasons(result.quarantine).items() if reason == "missing_customer_id"
    } == missing_rows
    assert result.clean["amount"].map(math.isfinite).all()
    assert not (result.clean["is_return"] & (result.clean["amount"] > 0)).any()


# ------------------------------------------------------------------------------------------------------------
# Synthetic data with planted faults


def _synthetic_ingest(tmp_path: Path, dirty: bool):
    out_dir = tmp_path / "synthetic"
    truth = write_synthetic(SynthSpec(n_customers=2000, seed=7, dirty=dirty), out_dir)
    cfg = load_experiment(
        ROOT / "experiments" / "synthetic.yaml",
        [
            f"data.transactions.0.path={out_dir / 'transactions.parquet'}",
            f"data.customers.path={out_dir / 'customers.parquet'}",
            f"data.invoices.path={out_dir / 'invoices.parquet'}",
            f"data.interactions.path={out_dir / 'interactions.parquet'}",
        ],
        root=tmp_path,
    )
    cfg.features.threads = 2
    return truth, run_ingest(cfg)


def test_synthetic_dirty_counts_match_truth(tmp_path: Path) -> None:
    truth, result = _synthetic_ingest(tmp_path, dirty=True)
    report = result.report
    assert report["by_reason"] == truth["injected"]
    assert report["rows_in"] == report["rows_kept"] + report["rows_quarantined"]
    # the event files' injected faults are quarantined with exactly the reasons recorded in the truth
    for key in ("invoices", "interactions"):
        section = report[key]
        assert section["by_reason"] == truth["injected_by_file"][key], key
        assert section["rows_in"] == section["rows_kept"] + section["rows_quarantined"] == truth[key]
    # events of customers outside the population are kept, counted and left to the features to ignore
    assert report["interactions"]["unknown_customer"] == truth["unknown_customer_events"] > 0
    assert report["interactions"]["unknown_customer_ids"] == truth["unknown_customer_ids"]


def test_synthetic_clean_has_nothing_quarantined(tmp_path: Path) -> None:
    _, result = _synthetic_ingest(tmp_path, dirty=False)
    assert result.report["rows_quarantined"] == 0
    assert result.report["by_reason"] == {}
    assert result.report["customers_file"]["rows_quarantined"] == 0
