"""Ingest of the invoices file (``data.invoices``): clean invoices, their quarantine and the DQ report block,
through the Python API and ``segml ingest``; an experiment without invoices is unchanged."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import ingest_error
from typer.testing import CliRunner

from segml.cli import app
from segml.config import InvoiceSource, TransactionSource, load_experiment
from segml.errors import ConfigError
from segml.ingest import CLEAN_INVOICE_COLUMNS, InvoiceReason, ingest_frames, run_ingest

TRANSACTIONS_CSV = "id,ts,value\nA,2024-01-05,10\nB,2024-02-01,20\nA,2024-03-01,5\n"
INVOICES_CSV = """inv,cust,issued,due,paid,total
I1,A,2024-01-01,2024-01-31,2024-02-05,100
I2,A,2024-02-01,2024-03-02,,200
I3,B,2024-02-10,2024-03-10,2024-03-01,0
"""
EXPERIMENT = """\
data:
  transactions:
    - path: raw/tx.csv
      columns: {{customer_id: id, timestamp: ts, amount: value}}
{invoices}
  cleaning:
    max_date: 2024-06-30
cutoffs:
  calibration_end: 2024-03-31
features:
  threads: 1
"""
INVOICES_YAML = """\
  invoices:
    path: raw/invoices.csv
    columns: {invoice_id: inv, customer_id: cust, issued: issued, due: due, paid: paid, amount: total}"""
ROLES = {
    "invoice_id": "inv",
    "customer_id": "cust",
    "issued": "issued",
    "due": "due",
    "paid": "paid",
    "amount": "total",
}


def _project(root: Path, *, invoices: bool, invoices_csv: str = INVOICES_CSV) -> Path:
    (root / "raw").mkdir(parents=True, exist_ok=True)
    (root / "raw" / "tx.csv").write_text(TRANSACTIONS_CSV, encoding="utf-8")
    (root / "raw" / "invoices.csv").write_text(invoices_csv, encoding="utf-8")
    experiment = root / "experiments" / "exp.yaml"
    experiment.parent.mkdir(parents=True, exist_ok=True)
    experiment.write_text(EXPERIMENT.format(invoices=INVOICES_YAML if invoices else ""), encoding="utf-8")
    return experiment


def test_clean_invoices_and_report(tmp_path: Path) -> None:
    cfg = load_experiment(_project(tmp_path, invoices=True), root=tmp_path)
    result = run_ingest(cfg)
    assert result.invoices_path == cfg.paths.clean_invoices == tmp_path / "data/interim/exp/invoices.parquet"
    clean = pd.read_parquet(result.invoices_path)
    assert list(clean.columns) == list(CLEAN_INVOICE_COLUMNS)
    assert clean["invoice_id"].tolist() == ["I1", "I2", "I3"]
    assert clean["paid"].isna().tolist() == [False, True, False]  # an empty paid field = not paid
    assert pd.Timestamp(clean.loc[0, "due"]) == pd.Timestamp("2024-01-31") and clean["amount"].tolist() == [
        100,
        200,
        0,
    ]
    block = json.loads(cfg.paths.dq_report.read_text())["invoices"]
    assert block == result.report["invoices"]
    assert block["rows_in"] == 3 and block["rows_kept"] == 3 and block["rows_quarantined"] == 0
    assert block["by_reason"] == {} and block["invoices_unpaid"] == 1
    assert block["invoice_customers_without_transactions"] == 0
    assert pd.read_parquet(cfg.paths.quarantine_invoices).empty


def test_every_reason_and_rows_in_equal_kept_plus_quarantined() -> None:
    raw = pd.DataFrame(
        [
            ["I1", "A", "2024-01-01", "2024-01-31", "2024-02-05", "100"],
            ["I2", "A", "2024-02-01", "2024-03-02", "", "200"],
            ["", "A", "2024-01-01", "2024-01-31", "", "1"],  # missing_invoice_id
            ["I4", " ", "2024-01-01", "2024-01-31", "", "1"],  # missing_customer_id (blank)
            ["I5", "B", "2024-02-30", "2024-03-31", "", "1"],  # bad_date: issued impossible
            ["I6", "B", "2024-02-01", "", "", "1"],  # bad_date: no due date
            ["I7", "B", "2024-02-01", "2024-03-01", "later", "1"],  # bad_date: paid not a date
            ["I8", "B", "2024-02-01", "2024-03-01", "", "abc"],  # non_numeric_amount
            ["I9", "B", "2024-03-01", "2024-02-01", "", "1"],  # due_before_issued
            ["I10", "B", "2024-03-01", "2024-04-01", "2024-02-28", "1"],  # paid_before_issued
            ["I11", "B", "2024-03-01", "2024-04-01", "", "-0.01"],  # negative_amount
            ["I2", "B", "2024-02-15", "2024-03-15", "", "7"],  # duplicate_invoice (I2 issued earlier)
            ["I12", "B", "2024-03-01", "2024-04-01", "", "0"],  # a zero invoice is kept
            ["I13", "A", "2024-05-01", "2024-05-31", "", "9"],  # kept...
            ["I13", "B", "2024-04-01", "2024-04-30", "", "8"],  # ...but this one was issued first: it is kept
        ],
        columns=list(ROLES.values()),
    )
    tx = pd.DataFrame({"id": ["A", "B"], "ts": ["2024-01-05", "2024-02-01"], "value": ["10", "20"]})
    source = TransactionSource(
        path="tx.csv", columns={"customer_id": "id", "timestamp": "ts", "amount": "value"}
    )
    result = ingest_frames(
        [tx], [source], invoices=raw, invoice_source=InvoiceSource(path="invoices.csv", columns=ROLES)
    )
    block = result.report["invoices"]
    assert block["rows_in"] == len(raw) == block["rows_kept"] + block["rows_quarantined"]
    assert block["rows_kept"] == len(result.invoices) and block["rows_quarantined"] == len(
        result.quarantine_invoices
    )
    reasons = dict(
        zip(result.quarantine_invoices["source_row"], result.quarantine_invoices["reason"], strict=True)
    )
    assert reasons == {
        3: "missing_invoice_id",
        4: "missing_customer_id",
        5: "bad_date",
        6: "bad_date",
        7: "bad_date",
        8: "non_numeric_amount",
        9: "due_before_issued",
        10: "paid_before_issued",
        11: "negative_amount",
        12: "duplicate_invoice",
        14: "duplicate_invoice",
    }
    assert set(block["by_reason"]) == {r.value for r in InvoiceReason} - {"malformed_row"}
    assert sum(block["by_reason"].values()) == block["rows_quarantined"]
    kept = result.invoices.set_index("source_row")
    assert sorted(kept.index) == [1, 2, 13, 15]
    assert kept.loc[2, "customer_id"] == "A" and kept.loc[15, "customer_id"] == "B"
    # the quarantine keeps the original text of the row
    assert result.quarantine_invoices.set_index("source_row").loc[7, "paid"] == "later"


def test_without_invoices_outputs_are_unchanged(tmp_path: Path) -> None:
    plain = load_experiment(_project(tmp_path / "plain", invoices=False), root=tmp_path / "plain")
    paid = load_experiment(_project(tmp_path / "paid", invoices=True), root=tmp_path / "paid")
    today = dt.date(2024, 6, 30)
    plain_result, paid_result = run_ingest(plain, today=today), run_ingest(paid, today=today)
    assert plain_result.invoices_path is None and "invoices" not in plain_result.report
    for name in ("transactions.parquet", "quarantine.parquet"):
        assert (plain.paths.interim / name).read_bytes() == (paid.paths.interim / name).read_bytes()
    without = {k: v for k, v in paid_result.report.items() if k != "invoices"}
    same_paths = json.dumps(without, sort_keys=True).replace(str(tmp_path / "paid"), str(tmp_path / "plain"))
    assert same_paths == json.dumps(plain_result.report, sort_keys=True)
    # invoices from an earlier run with another configuration do not linger
    invoices_file = paid.paths.clean_invoices
    assert invoices_file.is_file()
    _project(tmp_path / "paid", invoices=False)
    run_ingest(load_experiment(tmp_path / "paid" / "experiments" / "exp.yaml", root=tmp_path / "paid"))
    assert not invoices_file.exists() and not paid.paths.quarantine_invoices.exists()


@pytest.mark.parametrize(
    ("columns", "words"),
    [
        ("{invoice_id: inv, customer_id: cust, issued: issued, due: due, amount: total}", "role 'paid'"),
        (
            "{invoice_id: inv, customer_id: cust, issued: issued, due: due, paid: paid, amount: total, x: y}",
            "unknown role 'x'",
        ),
    ],
)
def test_config_errors_at_load(tmp_path: Path, columns: str, words: str) -> None:
    experiment = _project(tmp_path, invoices=True)
    experiment.write_text(
        experiment.read_text().replace(INVOICES_YAML.splitlines()[-1], f"    columns: {columns}"),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=f"data.invoices.columns: .*{words}"):
        load_experiment(experiment, root=tmp_path)


def test_policy_may_name_invoice_features_only_with_invoices(tmp_path: Path) -> None:
    experiment = _project(tmp_path, invoices=True)
    load_experiment(experiment, ["models.clustering.features=[overdue_amount]"], root=tmp_path)
    _project(tmp_path, invoices=False)
    with pytest.raises(ConfigError, match="'overdue_amount' is not built by this configuration"):
        load_experiment(experiment, ["models.clustering.features=[overdue_amount]"], root=tmp_path)


def test_cli_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGML_ROOT", str(tmp_path))
    experiment = _project(tmp_path, invoices=True, invoices_csv="inv,cust,issued,due,paid,total\n")
    runner = CliRunner()
    last = ingest_error(runner, experiment)
    assert "invoices.csv" in last and "no data rows" in last
    ingest_error(runner, experiment, "data.invoices.columns.amount=missing")
    assert "unknown key 'data.invoices.colums'" in ingest_error(runner, experiment, "data.invoices.colums={}")
    _project(tmp_path, invoices=True)
    result = runner.invoke(app, ["ingest", str(experiment)])
    assert result.exit_code == 0, result.output
