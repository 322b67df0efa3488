"""Point-in-time population through the CLI: an Olist-like customers file (no signup dates, a snapshot of
everyone who ever bought) must not put future customers into the past."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from segml import features as features_module
from segml.cli import app

EXPERIMENT = """\
data:
  transactions:
    - path: raw/orders.csv
      columns: {customer_id: customer_unique_id, timestamp: order_purchase_timestamp, amount: payment_value}
  customers:
    path: raw/customers.csv
    columns: {customer_id: customer_unique_id, region: customer_state}
  cleaning:
    max_date: 2018-08-31
cutoffs:
  calibration_end: 2018-03-31
features:
  windows: [30, 90]
  threads: 1
"""

ORDERS = """\
customer_unique_id,order_purchase_timestamp,payment_value
early1,2017-11-02 10:00:00,120.5
early1,2018-02-14 09:30:00,35.0
early2,2018-03-31 23:59:00,80.0
late1,2018-04-01 00:05:00,55.0
late2,2018-06-10 12:00:00,210.0
late3,2018-08-30 18:00:00,19.9
"""

# every customer who ever bought, as a CRM export: no signup date; "ghost" never bought at all
CUSTOMERS = """\
customer_unique_id,customer_state
early1,SP
early2,RJ
late1,SP
late2,MG
late3,SP
ghost,PR
"""


def _project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEGML_ROOT", str(tmp_path))
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "orders.csv").write_text(ORDERS, encoding="utf-8")
    (tmp_path / "raw" / "customers.csv").write_text(CUSTOMERS, encoding="utf-8")
    experiment = tmp_path / "experiments" / "olist_like.yaml"
    experiment.parent.mkdir()
    experiment.write_text(EXPERIMENT, encoding="utf-8")
    return experiment


def test_customers_who_first_buy_after_the_cutoff_are_not_in_the_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment = _project(tmp_path, monkeypatch)
    runner = CliRunner()
    ingested = runner.invoke(app, ["ingest", str(experiment)])
    assert ingested.exit_code == 0, ingested.output
    result = runner.invoke(app, ["features", str(experiment), "--as-of", "2018-03-31"])
    assert result.exit_code == 0, result.output
    assert "2 customers" in result.stdout
    frame = pd.read_parquet(tmp_path / "data" / "processed" / "olist_like" / "features_2018-03-31.parquet")
    assert frame["customer_id"].tolist() == ["early1", "early2"]
    assert frame["has_purchases"].all()
    assert frame["region"].tolist() == ["SP", "RJ"]  # attributes still join onto the buyers
    # later cutoffs take each customer in with their first purchase
    later = runner.invoke(app, ["features", str(experiment), "--as-of", "2018-06-30"])
    assert later.exit_code == 0, later.output
    frame = pd.read_parquet(tmp_path / "data" / "processed" / "olist_like" / "features_2018-06-30.parquet")
    assert frame["customer_id"].tolist() == ["early1", "early2", "late1", "late2"]


def test_undated_include_opts_in_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = _project(tmp_path, monkeypatch)
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(experiment)]).exit_code == 0
    monkeypatch.setattr(features_module, "_undated_warned", False)
    with pytest.warns(features_module.UndatedCustomersWarning, match="undated: include"):
        result = runner.invoke(
            app,
            ["features", str(experiment), "--as-of", "2018-03-31", "--set", "data.customers.undated=include"],
        )
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "data" / "processed" / "olist_like" / "features_2018-03-31.parquet")
    assert sorted(frame["customer_id"]) == ["early1", "early2", "ghost", "late1", "late2", "late3"]
    assert frame.set_index("customer_id").loc["late2", "has_purchases"] == False  # noqa: E712
