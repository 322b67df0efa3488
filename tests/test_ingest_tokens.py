"""Null tokens, malformed lines and encodings in the customers file and the whitespace format (issue 13)."""

from __future__ import annotations

import pandas as pd
import pytest
from test_ingest import TODAY, _experiment

from segml.errors import InputFileError
from segml.ingest import QUARANTINE_CUSTOMERS_FILE, run_ingest

ORDERS = "cust,when,value\nc1,2024-01-02,10\nc2,2024-01-03,20\nNULL,2024-01-04,30\n"
CUSTOMERS = (
    "cust,joined,region\nc1,2023-01-01,N/A\nNULL,2023-02-01,north\nc2,2023-03-01\nc3,2023-04-01,south\n"
)


@pytest.fixture
def customers_cfg(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "orders.csv").write_text(ORDERS, encoding="utf-8")
    (tmp_path / "raw" / "customers.csv").write_text(CUSTOMERS, encoding="utf-8")
    return _experiment(
        tmp_path,
        """
        transactions:
          - path: raw/orders.csv
            columns: {customer_id: cust, timestamp: when, amount: value}
        customers:
          path: raw/customers.csv
          columns: {customer_id: cust, signup_date: joined, region: region}
        cleaning:
          max_bad_share: 0.9
        """,
    )


def test_null_tokens_and_malformed_lines_in_the_customers_file(customers_cfg) -> None:
    result = run_ingest(customers_cfg, today=TODAY)
    report = result.report
    assert report["by_reason"] == {"missing_customer_id": 1}  # the NULL order line is no customer
    customers_report = report["customers_file"]
    assert customers_report["rows_in"] == customers_report["rows_kept"] + customers_report["rows_quarantined"]
    assert customers_report["by_reason"] == {"malformed_row": 1, "missing_customer_id": 1}
    customers = pd.read_parquet(result.customers_path).set_index("customer_id")
    assert sorted(customers.index) == ["c1", "c3"]
    assert pd.isna(customers.loc["c1", "region"])  # "N/A" is missing, not a region
    quarantine = pd.read_parquet(customers_cfg.paths.interim / QUARANTINE_CUSTOMERS_FILE)
    malformed = quarantine[quarantine["reason"] == "malformed_row"]
    assert malformed["source_row"].tolist() == [3] and malformed["raw_line"].tolist() == ["c2,2023-03-01"]


def test_null_values_can_be_narrowed(customers_cfg, tmp_path) -> None:
    import dataclasses

    rules = dataclasses.replace(customers_cfg.data.cleaning, null_values=[""])
    cfg = dataclasses.replace(customers_cfg, data=dataclasses.replace(customers_cfg.data, cleaning=rules))
    result = run_ingest(cfg, today=TODAY)
    assert result.report["by_reason"] == {}  # "NULL" is now a (strange) customer id
    assert result.report["customers"] == 3


def test_whitespace_file_encoding(tmp_path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "orders.txt").write_bytes(
        "cust when value\nJos\xe9 2024-01-02 10\n".encode("latin-1")
    )
    source = """
        transactions:
          - path: raw/orders.txt
            format: whitespace
            columns: {customer_id: cust, timestamp: when, amount: value}
            %s
        """
    with pytest.raises(InputFileError, match=r"orders\.txt: not valid utf-8 text .*set `encoding:`"):
        run_ingest(_experiment(tmp_path, source % ""), today=TODAY)
    result = run_ingest(_experiment(tmp_path, source % "encoding: latin-1", name="latin"), today=TODAY)
    clean = pd.read_parquet(result.transactions_path)
    assert clean["customer_id"].tolist() == ["Jos\xe9"]
