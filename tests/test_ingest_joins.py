"""Multi-table sources: lookups joined onto a transaction file, row filters and a declared duplicate key.

The fixture is shaped like the Olist e-commerce export: payments keyed by order, orders keyed by customer
account, customers keyed by account with the person's id in ``customer_unique_id``.
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from segml.cli import app
from segml.config import CleaningRules, DuplicateKey, SourceJoin, TransactionSource, load_experiment
from segml.errors import ConfigError, InputFileError
from segml.ingest import ingest_frames, run_ingest

TODAY = dt.date(2024, 6, 30)

CUSTOMERS = """\
customer_id,customer_unique_id,customer_city
c1,p1,sao paulo
c2,p1,sao paulo
c3,p2,rio de janeiro
c4,p3,curitiba
"""

ORDERS = """\
order_id,customer_id,order_status,order_purchase_timestamp
o1,c1,delivered,2024-01-05 10:00:00
o2,c2,delivered,2024-02-10 12:30:00
o3,c3,canceled,2024-02-11 09:00:00
o4,c3,shipped,2024-03-01 18:45:00
o5,c4,unavailable,2024-03-02 08:00:00
o6,c9,delivered,2024-03-03 11:00:00
"""

# row: 1 kept, 2 + 3 a split payment (same order, time and amount; different sequence), 4 cancelled order,
# 5 kept, 6 the same payment as row 5 again, 7 unavailable order, 8 an order missing from orders.csv,
# 9 an order whose customer account is missing from customers.csv
PAYMENTS = """\
order_id,payment_sequential,payment_type,payment_installments,payment_value
o1,1,credit_card,1,100.00
o2,1,voucher,1,20.00
o2,2,voucher,1,20.00
o3,1,credit_card,2,50.00
o4,1,boleto,1,75.50
o4,1,boleto,1,75.50
o5,1,credit_card,1,30.00
o99,1,credit_card,1,40.00
o6,1,debit_card,3,60.00
"""

DATA = """\
transactions:
  - path: raw/olist/payments.csv
    name: payments
    joins:
      - {path: raw/olist/orders.csv, on_column: order_id, key: order_id,
         columns: [customer_id, order_status, order_purchase_timestamp]}
      - {path: raw/olist/customers.csv, on_column: customer_id, key: customer_id, columns: [customer_unique_id]}
    FILTER
    columns:
      customer_id: customer_unique_id
      timestamp: order_purchase_timestamp
      amount: payment_value
      order_id: order_id
cleaning:
  duplicates: DUPLICATES
  max_date: 2024-06-30
"""

EXCLUDE = "exclude: {order_status: [canceled, unavailable]}"
WHERE = "where: {order_status: [delivered, shipped]}"
KEY = "{key: [order_id, payment_sequential]}"


def _project(
    tmp_path: Path,
    *,
    filter_yaml: str = EXCLUDE,
    duplicates: str = KEY,
    orders: str = ORDERS,
    data: str | None = None,
) -> Path:
    """A project root in tmp_path with the three Olist-shaped files and experiments/olist.yaml."""
    raw = tmp_path / "raw" / "olist"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "payments.csv").write_text(PAYMENTS, encoding="utf-8")
    (raw / "orders.csv").write_text(orders, encoding="utf-8")
    (raw / "customers.csv").write_text(CUSTOMERS, encoding="utf-8")
    body = (data or DATA).replace("FILTER", filter_yaml).replace("DUPLICATES", duplicates)
    text = "data:\n" + textwrap.indent(body, "  ")
    text += "cutoffs:\n  calibration_end: 2024-03-31\nfeatures:\n  threads: 1\n"
    path = tmp_path / "experiments" / "olist.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _reasons(quarantine: pd.DataFrame) -> dict[int, str]:
    return dict(zip(quarantine["source_row"].astype(int), quarantine["reason"], strict=True))


def test_olist_shaped_export_every_row_accounted_for(tmp_path: Path) -> None:
    cfg = load_experiment(_project(tmp_path), root=tmp_path)
    result = run_ingest(cfg, today=TODAY)
    clean = pd.read_parquet(result.transactions_path)
    assert clean["source_row"].tolist() == [1, 2, 3, 5]
    assert clean["customer_id"].tolist() == ["p1", "p1", "p1", "p2"]  # two accounts of one person
    assert clean["order_id"].tolist() == ["o1", "o2", "o2", "o4"]
    assert clean["amount"].tolist() == [100.0, 20.0, 20.0, 75.5]
    assert clean["timestamp"].tolist() == [
        pd.Timestamp("2024-01-05 10:00:00"),
        pd.Timestamp("2024-02-10 12:30:00"),
        pd.Timestamp("2024-02-10 12:30:00"),
        pd.Timestamp("2024-03-01 18:45:00"),
    ]
    assert (clean["source"] == "payments").all()

    quarantine = pd.read_parquet(result.quarantine_path)
    assert _reasons(quarantine) == {
        4: "filtered",
        6: "duplicate_row",
        7: "filtered",
        8: "unmatched_lookup",
        9: "unmatched_lookup",
    }
    # the quarantine file shows the joined columns too (empty where the lookup found nothing)
    by_row = quarantine.set_index(quarantine["source_row"].astype(int))
    assert by_row.loc[4, "order_status"] == "canceled"
    assert by_row.loc[9, "customer_id"] == "c9"
    assert pd.isna(by_row.loc[9, "customer_unique_id"])
    assert pd.isna(by_row.loc[8, "order_status"])

    report = json.loads(result.report_path.read_text(encoding="utf-8"))
    assert report["rows_in"] == 9
    assert report["rows_kept"] == 4
    assert report["rows_quarantined"] == 5
    assert report["rows_kept"] + sum(report["by_reason"].values()) == report["rows_in"]
    assert report["by_reason"] == {"unmatched_lookup": 2, "filtered": 2, "duplicate_row": 1}
    assert report["customers"] == 2
    assert report["rules"]["duplicates"] == "key: order_id, payment_sequential"
    assert report["rules"]["precedence"][:3] == ["malformed_row", "unmatched_lookup", "filtered"]
    (source,) = report["sources"]
    assert source["exclude"] == {"order_status": ["canceled", "unavailable"]}
    assert source["where"] == {}
    assert [(j["on_column"], j["key"], j["lookup_rows"], j["rows_unmatched"]) for j in source["joins"]] == [
        ("order_id", "order_id", 6, 1),
        ("customer_id", "customer_id", 4, 1),
    ]
    assert source["rows_in"] == source["rows_kept"] + source["rows_quarantined"]


def test_where_keeps_the_same_rows_as_exclude(tmp_path: Path) -> None:
    cfg = load_experiment(_project(tmp_path, filter_yaml=WHERE), root=tmp_path)
    report = run_ingest(cfg, today=TODAY).report
    assert report["rows_kept"] == 4
    assert report["by_reason"] == {"unmatched_lookup": 2, "filtered": 2, "duplicate_row": 1}
    assert report["sources"][0]["where"] == {"order_status": ["delivered", "shipped"]}


def test_without_the_key_split_payments_are_duplicates(tmp_path: Path) -> None:
    """``duplicates: auto`` sees rows 2 and 3 as one order line repeated: the key keeps them both."""
    cfg = load_experiment(_project(tmp_path, duplicates="auto"), root=tmp_path)
    report = run_ingest(cfg, today=TODAY).report
    assert report["rows_kept"] == 3
    assert report["by_reason"] == {"unmatched_lookup": 2, "filtered": 2, "duplicate_row": 2}


def test_rerun_is_byte_identical(tmp_path: Path) -> None:
    cfg = load_experiment(_project(tmp_path), root=tmp_path)
    first = run_ingest(cfg, today=TODAY)
    before = [p.read_bytes() for p in (first.transactions_path, first.quarantine_path, first.report_path)]
    second = run_ingest(cfg, today=TODAY)
    after = [p.read_bytes() for p in (second.transactions_path, second.quarantine_path, second.report_path)]
    assert before == after


def test_same_project_in_another_folder_gives_the_same_report(tmp_path: Path) -> None:
    """The data-quality report names the sources and lookups relative to the project root, so a clone
    elsewhere (another machine, another CI folder) writes the same bytes."""
    reports = []
    for name in ("here", "elsewhere"):
        root = tmp_path / name
        cfg = load_experiment(_project(root), root=root)
        reports.append(run_ingest(cfg, today=TODAY).report_path.read_bytes())
        assert str(root).encode() not in reports[-1]
    assert reports[0] == reports[1]
    report = json.loads(reports[0])
    assert report["sources"][0]["path"] == "raw/olist/payments.csv"


def test_ingest_frames_reads_lookup_files(tmp_path: Path) -> None:
    """In-memory ingest (tests, notebooks): the transaction frame joins lookup files by their paths."""
    _project(tmp_path)
    raw = tmp_path / "raw" / "olist"
    payments = pd.read_csv(raw / "payments.csv", dtype=str)
    source = TransactionSource(
        path="payments.csv",
        columns={"customer_id": "customer_unique_id", "timestamp": "order_purchase_timestamp"}
        | {"amount": "payment_value", "order_id": "order_id"},
        joins=[
            SourceJoin(
                str(raw / "orders.csv"), "order_id", "order_id", ["customer_id", "order_purchase_timestamp"]
            ),
            SourceJoin(str(raw / "customers.csv"), "customer_id", "customer_id", ["customer_unique_id"]),
        ],
        where={"payment_type": ["credit_card", "boleto"]},
    )
    rules = CleaningRules(duplicates=DuplicateKey(["order_id", "payment_sequential"]))
    result = ingest_frames([payments], [source], rules, today=TODAY)
    assert result.clean["source_row"].tolist() == [1, 4, 5, 7]
    # row 9 (a debit card) is also outside the filter: unmatched_lookup ranks first
    assert _reasons(result.quarantine) == {
        2: "filtered",
        3: "filtered",
        6: "duplicate_row",
        8: "unmatched_lookup",
        9: "unmatched_lookup",
    }


def test_rows_with_an_empty_key_column_are_not_duplicates(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "cust": ["a", "a", "a", "a"],
            "ts": ["2024-01-01"] * 4,
            "value": ["5", "5", "5", "5"],
            "order": ["x", "x", "", ""],
            "seq": ["1", "1", "1", "1"],
        }
    )
    source = TransactionSource(
        path="tx.csv", columns={"customer_id": "cust", "timestamp": "ts", "amount": "value"}
    )
    rules = CleaningRules(duplicates=DuplicateKey(["order", "seq"]))
    result = ingest_frames([frame], [source], rules, today=TODAY)
    assert result.clean["source_row"].tolist() == [1, 3, 4]
    assert result.report["by_reason"] == {"duplicate_row": 1}


# --------------------------------------------------------------------------------------------------------------
# Errors: one line naming the file, column and count, or the key; exit code 2 through the CLI


def _cli_error(experiment: Path, monkeypatch: pytest.MonkeyPatch, root: Path) -> str:
    monkeypatch.setenv("SEGML_ROOT", str(root))
    result = CliRunner().invoke(app, ["ingest", str(experiment)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert not (root / "data" / "interim" / "olist" / "dq_report.json").exists()
    return lines[0]


def test_cli_success_on_the_olist_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGML_ROOT", str(tmp_path))
    experiment = _project(tmp_path)
    result = CliRunner().invoke(app, ["ingest", str(experiment)])
    assert result.exit_code == 0, result.output
    assert "9 rows in, 4 kept, 5 quarantined, 2 customers" in result.stdout


def test_non_unique_lookup_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    orders = ORDERS + "o1,c2,delivered,2024-01-06 10:00:00\no4,c1,shipped,2024-03-01 18:45:00\n"
    line = _cli_error(_project(tmp_path, orders=orders), monkeypatch, tmp_path)
    assert str(tmp_path / "raw" / "olist" / "orders.csv") in line
    assert "column 'order_id' (data.transactions.0.joins.0.key) is not a unique key" in line
    assert "2 values appear more than once" in line


def test_lookup_key_column_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = DATA.replace("key: order_id,", "key: order_no,")
    line = _cli_error(_project(tmp_path, data=data), monkeypatch, tmp_path)
    assert str(tmp_path / "raw" / "olist" / "orders.csv") in line
    assert "column 'order_no' (data.transactions.0.joins.0.key) not found" in line


def test_filter_column_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _project(tmp_path, filter_yaml="where: {status: [delivered]}")
    line = _cli_error(path, monkeypatch, tmp_path)
    assert "payments.csv: column 'status' (data.transactions.0.where.status) not found" in line


def test_duplicate_key_column_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _project(tmp_path, duplicates="{key: [order_id, payment_seq]}")
    line = _cli_error(path, monkeypatch, tmp_path)
    assert "column 'payment_seq' (data.cleaning.duplicates.key.1) not found" in line


def test_lookup_that_matches_nothing_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = DATA.replace("on_column: order_id,", "on_column: payment_type,")
    line = _cli_error(_project(tmp_path, data=data), monkeypatch, tmp_path)
    assert "payments.csv: 9 of 9 rows find no row of" in line
    assert "(data.transactions.0.joins.0) — wrong on_column or key?" in line


def test_joined_column_already_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = DATA.replace(
        "columns: [customer_id, order_status,", "columns: [order_id, customer_id, order_status,"
    )
    line = _cli_error(_project(tmp_path, data=data), monkeypatch, tmp_path)
    assert "data.transactions.0.joins.0.columns.0: 'order_id' of" in line
    assert "is already a column of" in line


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("on_column: order_id,", "on: order_id,", "unknown key 'data.transactions.0.joins.0.True'"),
        ("on_column: order_id,", "on_col: order_id,", "unknown key 'data.transactions.0.joins.0.on_col'"),
        (
            "columns: [customer_unique_id]",
            "columns: []",
            "data.transactions.0.joins.1.columns: name at least",
        ),
        ("FILTER", "exclude: {order_status: []}", "data.transactions.0.exclude.order_status: list at least"),
        (
            "DUPLICATES",
            "{keys: [order_id]}",
            "unknown key 'data.cleaning.duplicates.keys' (allowed here: key)",
        ),
        ("DUPLICATES", "first", "data.cleaning.duplicates: 'first' is not one of 'auto'"),
    ],
)
def test_config_errors_name_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str, message: str
) -> None:
    data = DATA.replace(old, new)
    path = _project(tmp_path, data=data)
    with pytest.raises(ConfigError, match="^[^\n]*$") as excinfo:
        load_experiment(path, root=tmp_path)
    assert message in str(excinfo.value)
    line = _cli_error(path, monkeypatch, tmp_path)
    assert message in line


def test_bare_on_key_explains_yaml_booleans(tmp_path: Path) -> None:
    path = _project(tmp_path, data=DATA.replace("on_column: order_id,", "on: order_id,"))
    with pytest.raises(ConfigError, match="YAML reads a bare on/off/yes/no key as true/false"):
        load_experiment(path, root=tmp_path)


def test_missing_lookup_file(tmp_path: Path) -> None:
    path = _project(tmp_path, data=DATA.replace("raw/olist/customers.csv", "raw/olist/accounts.csv"))
    cfg = load_experiment(path, root=tmp_path)
    with pytest.raises(InputFileError, match=r"accounts\.csv: file not found"):
        run_ingest(cfg, today=TODAY)


def test_parquet_lookup_with_typed_columns_next_to_a_plain_source(tmp_path: Path) -> None:
    """A Parquet lookup with an integer key and a TIMESTAMP column; a second source without joins."""
    root = tmp_path
    (root / "raw").mkdir()
    pd.DataFrame(
        {
            "order_no": [1, 2, 3],
            "account": ["a1", "a2", None],
            "placed": pd.to_datetime(["2024-01-02 10:00", "2024-01-03 11:00", "2024-01-04 12:00"]),
        }
    ).to_parquet(root / "raw" / "orders.parquet", index=False)
    (root / "raw" / "lines.csv").write_text("order,value\n1,10\n2,20\n 3 ,30\n7,5\n", encoding="utf-8")
    (root / "raw" / "shop.csv").write_text("cust,ts,value\nb1,2024-02-01,8\n", encoding="utf-8")
    data = """\
transactions:
  - path: raw/lines.csv
    joins: [{path: raw/orders.parquet, on_column: order, key: order_no, columns: [account, placed]}]
    columns: {customer_id: account, timestamp: placed, amount: value, order_id: order}
  - path: raw/shop.csv
    columns: {customer_id: cust, timestamp: ts, amount: value}
cleaning:
  max_date: 2024-06-30
"""
    path = root / "experiments" / "mixed.yaml"
    path.parent.mkdir()
    path.write_text(
        "data:\n" + textwrap.indent(data, "  ") + "cutoffs:\n  calibration_end: 2024-03-31\n",
        encoding="utf-8",
    )
    result = run_ingest(load_experiment(path, root=root), today=TODAY)
    clean = pd.read_parquet(result.transactions_path)
    assert clean[["source", "customer_id", "amount"]].values.tolist() == [
        ["lines", "a1", 10.0],
        ["lines", "a2", 20.0],
        ["shop", "b1", 8.0],
    ]
    assert clean["timestamp"].iloc[0] == pd.Timestamp("2024-01-02 10:00")
    quarantine = pd.read_parquet(result.quarantine_path)
    # order 3 matches (trimmed text) but has no account; order 7 is not in the lookup
    assert quarantine[["source", "source_row", "reason"]].values.tolist() == [
        ["lines", 3, "missing_customer_id"],
        ["lines", 4, "unmatched_lookup"],
    ]
    lines, shop = result.report["sources"]
    assert lines["joins"][0]["lookup_rows"] == 3
    assert lines["joins"][0]["rows_unmatched"] == 1
    assert shop["joins"] == []
