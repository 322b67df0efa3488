"""An experiment with ``data.invoices`` and ``data.interactions``: their features reach the potential model, the
current grades, the risk flags and the artifact, and ``segml grade`` needs the event files the model was trained
with."""

from __future__ import annotations

import datetime as dt
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from segml.artifact import export_artifact
from segml.cli import app
from segml.config import FeatureConfig, load_experiment
from segml.features import NUMERIC_FEATURES
from segml.ingest import run_ingest
from segml.models.registry import load_model
from segml.pipeline import load_context, run_pipeline, stages_between
from tests.conftest import make_project

runner = CliRunner()

#: the payment features (what the invoices add to the feature table)
INVOICE_FEATURES = set(NUMERIC_FEATURES(FeatureConfig(), with_invoices=True)) - set(
    NUMERIC_FEATURES(FeatureConfig())
)
#: the contact features (what the interactions add)
INTERACTION_FEATURES = set(NUMERIC_FEATURES(FeatureConfig(), with_interactions=True)) - set(
    NUMERIC_FEATURES(FeatureConfig())
)


def _complains(customer: str) -> bool:
    return zlib.crc32(f"c{customer}".encode()) % 8 == 0


def _write_invoices(raw: Path) -> Path:
    """One invoice per order, due 30 days after it; a fixed tenth of the customers pays 45 days late and
    leaves its latest invoice unpaid."""
    tx = pd.read_parquet(
        raw / "transactions.parquet", columns=["customer_id", "order_id", "order_ts", "amount"]
    )
    tx = tx.dropna(subset=["customer_id", "order_id"])
    tx["order_ts"] = pd.to_datetime(tx["order_ts"], errors="coerce")
    tx["amount"] = pd.to_numeric(tx["amount"], errors="coerce")
    tx = tx.dropna(subset=["order_ts", "amount"])
    orders = (
        tx.groupby(["customer_id", "order_id"], as_index=False)
        .agg(issued=("order_ts", "min"), amount=("amount", "sum"))
        .sort_values(["customer_id", "issued", "order_id"], ignore_index=True)
    )
    orders["amount"] = orders["amount"].clip(lower=0).round(2)
    late = orders["customer_id"].map(lambda c: zlib.crc32(str(c).encode()) % 10 == 0).to_numpy()
    issued = orders["issued"].dt.normalize()
    due = issued + pd.Timedelta(days=30)
    paid = np.where(late, due + pd.Timedelta(days=45), issued + pd.Timedelta(days=10))
    paid = pd.Series(pd.to_datetime(paid)).dt.strftime("%Y-%m-%d").to_numpy(dtype=object)
    last = ~orders["customer_id"].duplicated(keep="last").to_numpy()
    paid[late & last] = ""
    invoices = pd.DataFrame(
        {
            "inv": "INV-" + orders["order_id"].astype(str),
            "cust": orders["customer_id"],
            "issued_on": issued.dt.strftime("%Y-%m-%d"),
            "due_on": due.dt.strftime("%Y-%m-%d"),
            "paid_on": paid,
            "total": orders["amount"],
        }
    )
    path = raw / "invoices.csv"
    invoices.to_csv(path, index=False)
    return path


def _write_interactions(raw: Path) -> Path:
    """Contacts in the user's own words: every customer gets a newsletter a month; a fixed eighth complains
    a few weeks before the calibration end and twice in the last 60 days of the data."""
    customers = pd.read_parquet(raw / "customers.parquet", columns=["customer_id"])["customer_id"].dropna()
    months = pd.date_range("2024-01-01", "2026-06-01", freq="MS") + pd.Timedelta(days=14)
    rows = [(c, ts.strftime("%Y-%m-%d %H:%M"), "Newsletter", "email", "") for c in customers for ts in months]
    for c in customers[customers.map(_complains)]:
        for day in ("2025-06-01", "2026-05-10", "2026-06-20"):
            rows.append((c, f"{day} 10:00", "Beschwerde", "phone", "open"))
    path = raw / "contacts.csv"
    pd.DataFrame(rows, columns=["kunde", "zeit", "art", "kanal", "status"]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def invoiced(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("invoices_project")
    yaml_path = make_project(root)
    invoices = _write_invoices(root / "data" / "raw" / "smoke")
    interactions = _write_interactions(root / "data" / "raw" / "smoke")
    document = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    document["data"]["invoices"] = {
        "path": "data/raw/smoke/invoices.csv",
        "columns": {
            "invoice_id": "inv",
            "customer_id": "cust",
            "issued": "issued_on",
            "due": "due_on",
            "paid": "paid_on",
            "amount": "total",
        },
    }
    document["data"]["interactions"] = {
        "path": "data/raw/smoke/contacts.csv",
        "columns": {
            "customer_id": "kunde",
            "timestamp": "zeit",
            "kind": "art",
            "channel": "kanal",
            "outcome": "status",
        },
        "kinds": {"beschwerde": "complaint", "Newsletter": "campaign_send"},
    }
    yaml_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    cfg = load_experiment(yaml_path, root=root)
    run_ingest(cfg)
    run_pipeline(cfg, stages=stages_between(until="monitor"), backtest=False, progress=False, track=False)
    return cfg, invoices, interactions


def test_context_and_grades_carry_the_payment_features(invoiced) -> None:
    cfg, _, _ = invoiced
    ctx = load_context(cfg)
    assert ctx.sources.invoices == cfg.paths.clean_invoices
    assert ctx.sources.interactions == cfg.paths.clean_interactions
    assert set(ctx.calibration_features.columns) >= INVOICE_FEATURES | INTERACTION_FEATURES
    # the complaint a few weeks before the calibration end is known there
    complained = ctx.calibration_features["customer_id"].map(_complains).to_numpy()
    assert (ctx.calibration_features.loc[complained, "complaints_90d"] == 1).all()
    assert (ctx.calibration_features.loc[~complained, "complaints_90d"] == 0).all()
    # the late payers' invoices are known at the calibration end: some customers owe money there
    assert (ctx.calibration_features["overdue_amount"] > 0).any()


def test_potential_model_reads_the_payment_features(invoiced) -> None:
    import json

    cfg, _, _ = invoiced
    for name in ("potential_holdout", "potential_production"):
        state = json.loads((cfg.paths.processed / "models" / f"{name}.json").read_text(encoding="utf-8"))
        model = load_model(state)
        assert set(model.feature_names_) >= INVOICE_FEATURES | INTERACTION_FEATURES, name


def test_comparison_shows_the_model_without_the_event_sources(invoiced) -> None:
    cfg, _, _ = invoiced
    table = {row["model"]: row for row in json.loads((cfg.paths.reports / "comparison.json").read_text())}
    assert {"potential", "potential_transactions_only"} <= set(table)
    details = json.loads((cfg.paths.reports / "models" / "potential.json").read_text(encoding="utf-8"))
    gain = details["event_sources"]
    assert gain["sources"] == ["interactions", "invoices"]
    assert gain["holdout_gini"] == pytest.approx(table["potential"]["normalized_gini"])
    assert gain["holdout_gini_transactions_only"] == pytest.approx(
        table["potential_transactions_only"]["normalized_gini"]
    )
    d = gain["holdout_gini_gain"]
    assert d["low"] <= d["diff"] <= d["high"]


def test_grade_needs_the_invoices_and_reproduces_the_grades(invoiced, tmp_path: Path) -> None:
    cfg, invoices, interactions = invoiced
    path = export_artifact(cfg)  # the export re-grades from the packaged pieces, invoices included
    card = (path / "model_card.md").read_text(encoding="utf-8")
    assert "`--invoices FILE` `--interactions FILE`" in card
    # segml monitor re-grades with the event files at each cutoff and tracks the flagged share of the best grades
    from segml.pipeline.monitoring import run_monitor_series

    series = run_monitor_series(cfg, path, [dt.date(2026, 3, 31), dt.date(2026, 6, 30)], reuse=False)
    last = series.steps[-1]
    assert 0 <= last["flagged_top_share"] <= 1
    shares = pd.DataFrame(last["risk_flags"]).set_index("grade")
    assert shares.loc["all", "recent complaints"] > 0
    raw = cfg.root / "data" / "raw" / "smoke"
    args = [
        "grade",
        str(path),
        "--transactions",
        str(raw / "transactions.parquet"),
        "--customers",
        str(raw / "customers.parquet"),
    ]
    for given, needed in (([], "--invoices"), (["--invoices", str(invoices)], "--interactions")):
        missing = runner.invoke(app, [*args, *given, "--out", str(tmp_path / "without.parquet")])
        assert missing.exit_code != 0
        assert needed in missing.output and "Traceback" not in missing.output
    out = tmp_path / "grades.parquet"
    events = ["--invoices", str(invoices), "--interactions", str(interactions)]
    result = runner.invoke(app, [*args, *events, "--out", str(out)])
    assert result.exit_code == 0, result.output
    graded = pd.read_parquet(out).drop(columns="artifact_version")
    expected = pd.read_parquet(cfg.paths.processed / "grades.parquet")
    graded["as_of"] = graded["as_of"].astype(expected["as_of"].dtype)
    pd.testing.assert_frame_equal(graded.reset_index(drop=True), expected, check_exact=True)


def test_late_payers_carry_the_risk_flags_in_grades_lists_and_summary(invoiced) -> None:
    import json

    cfg, invoices, _ = invoiced
    grades = pd.read_parquet(cfg.paths.processed / "grades.parquet")
    assert "risk_flags" in grades.columns
    table = pd.read_csv(invoices, dtype={"cust": str, "paid_on": str})
    as_of = grades["as_of"].iloc[0]
    per_customer = table["cust"].value_counts()
    # open at the cutoff: unpaid, or paid after it (its payment was not known then)
    still_open = table["paid_on"].isna() | (pd.to_datetime(table["paid_on"]) > as_of)
    open_due = table[still_open & (pd.to_datetime(table["due_on"]) < as_of) & (table["total"] > 0)]
    several = grades["customer_id"].map(per_customer).fillna(0).to_numpy() >= 2
    overdue = grades["customer_id"].isin(open_due["cust"]).to_numpy()
    late = grades["customer_id"].map(lambda c: zlib.crc32(str(c).encode()) % 10 == 0).to_numpy()
    flags = grades["risk_flags"]
    # a planted late payer with a paid invoice (45 days late) pays late; a customer with an invoice open and
    # past due at the cutoff has overdue invoices; nobody else is flagged either way
    assert flags[late & several].str.contains("pays late", regex=False).all()
    assert not flags[~late].str.contains("pays late", regex=False).any()
    assert overdue.any()
    assert (flags.str.contains("overdue invoices", regex=False).to_numpy() == overdue).all()
    # two complaints in the last 90 days of the data, one a year before: recent complaints, and up
    complained = grades["customer_id"].map(_complains).to_numpy()
    assert complained.any()
    assert (flags.str.contains("recent complaints", regex=False).to_numpy() == complained).all()
    assert (flags.str.contains("complaints up", regex=False).to_numpy() == complained).all()
    lists = pd.read_csv(next((cfg.paths.processed / "grade_lists").glob("grade_*.csv")), encoding="utf-8-sig")
    assert "Risk flags" in lists.columns
    summary = json.loads((cfg.paths.reports / "grades_summary.json").read_text(encoding="utf-8"))
    table = pd.DataFrame(summary["risk_flags"])
    assert table["grade"].iloc[-1] == "all"
    assert {"pays late", "overdue invoices", "any flag"} <= set(table.columns)
