"""Ingest outputs pinned on a small dirty data set: the clean rows, the quarantine and the DQ report bytes.

The expected digests were computed with the ingest that materialised every step as a DuckDB table (before it
read Parquet through views and kept one classified Parquet file), so a change in how ingest stores its
intermediate rows cannot change a row, a reason, a flag or a report value. Rows repeat every 60 lines, so each
duplicates rule sees many identical rows (``identical_rows_kept`` is the count most exposed to such a change).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from segml.config import load_experiment
from segml.ingest import run_ingest

TODAY = dt.date(2026, 6, 30)
ROWS = 600


def _twins() -> pd.DataFrame:
    """Deterministic dirty rows: cycles of 3, 4, 5, 2, 20 and 2 rows, so every row recurs every 60 rows."""
    customers = ["c1", " c2 ", None]
    stamps = ["2024-01-01", "2024-02-03 10:00:00", "not a date", "2030-01-01"]
    amounts = ["10", "-5", "0", "abc", "1e9"]
    quantities = ["1", "-1"]
    orders = ["o1", "C9", None, "o2"]
    products = ["p1", "POSTAGE"]
    return pd.DataFrame(
        {
            "cust": [customers[i % 3] for i in range(ROWS)],
            "ts": [stamps[i % 4] for i in range(ROWS)],
            "amt": [amounts[i % 5] for i in range(ROWS)],
            "qty": [quantities[i % 2] for i in range(ROWS)],
            "order": [orders[(i // 5) % 4] for i in range(ROWS)],
            "prod": [products[i % 2] for i in range(ROWS)],
        }
    )


RULES = {
    "auto": "",
    "keep": "duplicates: keep",
    "drop_identical": "duplicates: drop_identical",
    "key": "duplicates: {key: [order, cust]}",
    "strict": "returns: quarantine\nzero_amount: quarantine\noutliers: {quarantine_above: 1000000}",
    "flag_above": "outliers: {flag_above: 9}",
}

#: (rows_kept, identical_rows_kept, sha256 prefixes of the clean rows, the quarantine rows, dq_report.json)
EXPECTED = {
    "auto": (60, 36, "b1a66b6c598a09cd", "4b7808c6d4cb6ed9", "2ebe8010e0159b7c"),
    "keep": (240, 216, "56b8b918cec25222", "8554f6712645a785", "7a9e14c27e59229c"),
    "drop_identical": (24, 0, "047420832f77afde", "9b16fafdb24b15af", "3f742347b11dabfc"),
    "key": (50, 36, "5a82bfedb287b383", "2893416c5b228318", "b4ae2abd437cc6fb"),
    "strict": (6, 0, "4c209ba03f2b8ceb", "12499a579c5779f7", "d745132de9686ef8"),
    "flag_above": (60, 36, "c86bb9d0e60c150a", "4b7808c6d4cb6ed9", "02b7fc2c1a8d8fb4"),
}


def _ingest(tmp_path: Path, rule: str):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    frame = _twins()
    frame.to_parquet(raw / "twins.parquet", index=False)
    frame.iloc[::-1].to_csv(raw / "reversed.csv", index=False)
    cleaning = textwrap.indent(f"max_date: {TODAY.isoformat()}\n{RULES[rule]}".strip(), "    ")
    text = f"""\
data:
  transactions:
    - path: data/raw/twins.parquet
      name: twins
      columns: {{customer_id: cust, timestamp: ts, amount: amt, quantity: qty, order_id: order, product_id: prod}}
      cancellation_prefix: C
      non_product_codes: [POSTAGE]
    - path: data/raw/reversed.csv
      name: reversed
      columns: {{customer_id: cust, timestamp: ts, amount: amt, order_id: order}}
  cleaning:
{cleaning}
cutoffs:
  calibration_end: 2025-06-30
features:
  threads: 2
"""
    path = tmp_path / "experiments" / "golden.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text, encoding="utf-8")
    return run_ingest(load_experiment(path, root=tmp_path), today=TODAY)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _frame_digest(path: Path) -> str:
    """Digest of a parquet file's rows, column names and types (not of its encoding)."""
    frame = pd.read_parquet(path)
    header = ",".join(f"{name}:{dtype}" for name, dtype in frame.dtypes.items())
    return _digest((header + "\n" + frame.to_csv(index=False)).encode())


@pytest.mark.parametrize("rule", list(RULES))
def test_outputs_match_the_pinned_digests(tmp_path: Path, rule: str) -> None:
    result = _ingest(tmp_path, rule)
    report = result.report
    assert report["rows_in"] == 2 * ROWS == report["rows_kept"] + report["rows_quarantined"]
    got = (
        report["rows_kept"],
        report["identical_rows_kept"],
        _frame_digest(result.transactions_path),
        _frame_digest(result.quarantine_path),
        _digest(result.report_path.read_bytes()),
    )
    assert got == EXPECTED[rule]
