"""The same pipeline, unchanged, on an order-line retail export (Online-Retail-style CSV).

The export has an invoice per order, one line per product, amount = Quantity × Price, cancellations as
invoices prefixed "C" with negative quantities, postage lines, blank customer IDs and day-first text dates —
the shape of the UCI Online Retail files. It is built from the synthetic generator so the test needs no
download; only the column names and conventions differ from the smoke experiment.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from segml.config import load_experiment
from segml.datasets.synthetic import SynthSpec, generate
from segml.ingest import run_ingest
from segml.pipeline import run_pipeline, stages_between

EXPERIMENT = {
    "description": "Order-line retail export (invoice lines, C-prefixed cancellations, postage lines).",
    "seed": 5,
    "data": {
        "currency": "GBP",
        "transactions": [
            {
                "path": "data/raw/retail/online_retail.csv",
                "format": "csv",
                "name": "shop",
                "timestamp_format": "%d/%m/%Y %H:%M",
                "columns": {
                    "customer_id": "Customer ID",
                    "order_id": "Invoice",
                    "timestamp": "InvoiceDate",
                    "quantity": "Quantity",
                    "unit_price": "Price",
                    "product_id": "StockCode",
                },
                "cancellation_prefix": "C",
                "non_product_codes": ["POST"],
            }
        ],
        "cleaning": {"returns": "net", "max_date": "2026-06-30"},
    },
    "cutoffs": {"calibration_end": "2025-06-30", "holdout_end": "2026-06-30", "horizon_days": 365},
    "models": {
        "potential": {"max_estimators": 100},
        "clustering": {"k_max": 4},
        "evaluation": {"n_boot": 100},
    },
}


def _order_line_export(n_customers: int, seed: int) -> pd.DataFrame:
    tx = generate(SynthSpec(n_customers=n_customers, seed=seed)).transactions
    tx = tx[tx["amount"] != 0].reset_index(drop=True)
    quantity = tx["quantity"].abs().clip(lower=1).astype(int) * np.sign(tx["amount"]).astype(int)
    price = (tx["amount"].abs() / quantity.abs()).round(2)
    invoice = tx["order_id"].str.lstrip("OR").astype(int).astype(str)
    invoice = np.where(quantity < 0, "C" + invoice, invoice)
    export = pd.DataFrame(
        {
            "Invoice": invoice,
            "StockCode": tx["product_id"],
            "Description": "ITEM " + tx["product_id"],
            "Quantity": quantity,
            "InvoiceDate": pd.to_datetime(tx["order_ts"]).dt.strftime("%d/%m/%Y %H:%M"),
            "Price": price,
            "Customer ID": tx["customer_id"].str.lstrip("C"),
            "Country": "United Kingdom",
        }
    )
    # one postage line per tenth invoice, and a few lines without a customer id (guest checkouts)
    first_lines = export[export["Quantity"] > 0].drop_duplicates("Invoice").iloc[::10]
    postage = first_lines.assign(StockCode="POST", Description="POSTAGE", Quantity=1, Price=18.0)
    guests = export.sample(n=25, random_state=seed).assign(**{"Customer ID": ""})
    return pd.concat([export, postage, guests], ignore_index=True)


@pytest.fixture(scope="module")
def retail_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("retail_project")
    (root / "pyproject.toml").write_text("[project]\nname = 'scratch'\n")
    (root / "experiments").mkdir()
    (root / "experiments" / "retail.yaml").write_text(yaml.safe_dump(EXPERIMENT, sort_keys=False))
    export = _order_line_export(600, seed=5)
    (root / "data" / "raw" / "retail").mkdir(parents=True)
    export.to_csv(root / "data" / "raw" / "retail" / "online_retail.csv", index=False)
    return root, export


@pytest.mark.slow
def test_order_line_export_runs_through_ingest_and_train(retail_project) -> None:
    root, export = retail_project
    cfg = load_experiment(root / "experiments" / "retail.yaml", root=root)
    dq = run_ingest(cfg)
    dq = dq if isinstance(dq, dict) else json.loads(cfg.paths.dq_report.read_text())
    assert dq["rows_in"] == len(export)
    assert dq["rows_in"] == dq["rows_kept"] + dq["rows_quarantined"]
    by_reason = dq["by_reason"]
    assert sum(by_reason.values()) == dq["rows_quarantined"]
    assert dq["rows_quarantined"] >= 25  # the guest lines at least
    clean = pd.read_parquet(cfg.paths.clean_transactions)
    assert (clean["amount"] < 0).any(), "cancellations are kept as returns (netted)"

    outputs = run_pipeline(
        cfg, stages=stages_between(until="monitor"), backtest=False, progress=False, track=False
    )
    table = {row["model"]: row for row in outputs.comparison}
    assert {"rfm", "past_spend", "btyd", "clustering", "spend_tree", "potential"} <= set(table)
    # the planted tiers are learnable: every ranking beats random by a wide margin
    assert table["potential"]["normalized_gini"] > 0.5
    grades = pd.read_parquet(cfg.paths.processed / "grades.parquet")
    assert grades["customer_id"].is_unique
    assert set(grades["grade"]) <= {"A", "B", "C", "D", "E", "N"}
    assert np.isfinite(grades["score"]).all()
