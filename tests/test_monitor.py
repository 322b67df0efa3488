"""`segml monitor`: re-grading at several cutoffs, migration, PSI against the artifact's training reference,
alerts and exit codes, hysteresis (synthetic data with an injected shift; CDNOW in the slow set)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from typer.testing import CliRunner

from segml import monitor
from segml.artifact import ArtifactError, export_artifact, load_artifact
from segml.artifact.load import read_training_reference
from segml.cli import app
from segml.config import MonitorSettings, load_experiment
from segml.errors import ConfigError
from segml.ingest import run_ingest
from segml.pipeline import run_pipeline, stages_between
from segml.pipeline.monitoring import run_monitor_series, series_tables, who_moved
from segml.policy import GradePolicy, apply_hysteresis

runner = CliRunner()

#: the low tier's spend doubles on the day after this one (monitoring experiment only)
SHIFT = dt.date(2026, 6, 30)
BEFORE = "2025-12-31,2026-02-28,2026-04-30,2026-06-30"
AFTER = "2026-08-31,2026-10-31,2026-12-31"


def _steady_transactions(seed: int = 5, n: int = 500) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A stationary population in three spend tiers (low half, mid, high), orders every ~2 weeks from 2023
    to 2026, one attribute (region)."""
    rng = np.random.default_rng(seed)
    tiers = rng.choice(["low", "mid", "high"], size=n, p=[0.5, 0.35, 0.15])
    basket = {"low": 20.0, "mid": 60.0, "high": 200.0}
    start, end = pd.Timestamp("2023-01-01"), pd.Timestamp("2026-12-31")
    rows = []
    for i, tier in enumerate(tiers):
        day = start + pd.Timedelta(days=int(rng.integers(0, 60)))
        k = 0
        while True:
            day = day + pd.Timedelta(days=float(rng.exponential(14.0)))
            if day > end:
                break
            k += 1
            rows.append(
                (f"K{i:04d}", f"O{i:04d}-{k:04d}", day, basket[tier] * float(rng.lognormal(0.0, 0.3)))
            )
    tx = pd.DataFrame(rows, columns=["customer_id", "order_id", "order_ts", "amount"])
    customers = pd.DataFrame(
        {"customer_id": [f"K{i:04d}" for i in range(n)], "tier": tiers, "region": rng.choice(["N", "S"], n)}
    )
    return tx, customers


def _experiment(root: Path, name: str, folder: str, max_date: str, customers: bool = True) -> Path:
    doc = {
        "seed": 3,
        "data": {
            "currency": "CNY",
            "transactions": [
                {
                    "path": f"data/raw/{folder}/transactions.parquet",
                    "format": "parquet",
                    "name": "orders",
                    "columns": {
                        "customer_id": "customer_id",
                        "order_id": "order_id",
                        "timestamp": "order_ts",
                        "amount": "amount",
                    },
                }
            ],
            "cleaning": {"max_date": max_date},
        },
        "cutoffs": {
            "calibration_end": "2025-03-31",
            "holdout_end": "2025-12-31",
            "horizon_days": 275,
            "backtest": [],
        },
        "models": {
            "potential": {"max_estimators": 40},
            "clustering": {"k_max": 4},
            "evaluation": {"n_boot": 20},
        },
        "monitor": {"realised_horizon_days": 60},
    }
    if customers:
        doc["data"]["customers"] = {
            "path": f"data/raw/{folder}/customers.parquet",
            "format": "parquet",
            "columns": {"customer_id": "customer_id", "region": "region"},
        }
    path = root / "experiments" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def shifted(tmp_path_factory: pytest.TempPathFactory):
    """An artifact trained on data up to 2025-12-31, and a monitoring experiment whose low tier spends twice
    as much per order after :data:`SHIFT`."""
    root = tmp_path_factory.mktemp("monitor_project")
    (root / "experiments").mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'scratch'\n")
    tx, customers = _steady_transactions()
    for folder in ("steady", "shifted"):
        (root / "data" / "raw" / folder).mkdir(parents=True)
        customers[["customer_id", "region"]].to_parquet(root / "data/raw" / folder / "customers.parquet")
    tx.to_parquet(root / "data/raw/steady/transactions.parquet", index=False)
    low = set(customers.loc[customers["tier"] == "low", "customer_id"])
    after = tx["customer_id"].isin(low) & (tx["order_ts"] > pd.Timestamp(SHIFT) + pd.Timedelta(days=1))
    moved = tx.copy()
    moved.loc[after, "amount"] *= 2.0
    moved.to_parquet(root / "data/raw/shifted/transactions.parquet", index=False)
    cfg = load_experiment(_experiment(root, "steady", "steady", "2025-12-31"), root=root)
    run_ingest(cfg)
    run_pipeline(cfg, stages=stages_between(until="monitor"), backtest=False, progress=False, track=False)
    artifact = export_artifact(cfg)
    monitored = _experiment(root, "shifted", "shifted", "2026-12-31")
    run_ingest(load_experiment(monitored, root=root))
    return root, artifact, monitored


def _monitor(root: Path, *args: str, report: bool = False):
    """``segml monitor`` (without rendering notebook 08 unless ``report``)."""
    extra = [] if report else ["--no-report"]
    return runner.invoke(
        app, ["monitor", *args, *extra], catch_exceptions=False, env={"SEGML_ROOT": str(root)}
    )


def test_score_psi_alert_fires_after_the_shift_and_not_before(shifted) -> None:
    root, artifact, monitored = shifted
    result = _monitor(
        root, str(monitored), "--artifact", str(artifact), "--as-of", f"{BEFORE},{AFTER}", "--json"
    )
    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    fired = {a["step"] for a in document["alerts"] if a["kind"] == "score_psi"}
    assert fired, document["alerts"]
    assert all(day > SHIFT.isoformat() for day in fired)
    assert AFTER.split(",")[-1] in fired
    psi = {row["as_of"]: row["score_psi"] for row in document["steps"]}
    assert max(psi[d] for d in BEFORE.split(",")) < 0.2 < psi[AFTER.split(",")[-1]]
    # the same run without failing on alerts exits 0 and reuses every finished step
    quiet = _monitor(
        root,
        str(monitored),
        "--artifact",
        str(artifact),
        "--as-of",
        f"{BEFORE},{AFTER}",
        "--no-fail-on-alert",
    )
    assert quiet.exit_code == 0, quiet.output
    assert "7 reused" in quiet.stdout
    assert "ALERTS" in quiet.stdout and "score_psi" in quiet.stdout


def test_the_series_is_logged_as_one_mlflow_run(shifted) -> None:
    """``segml monitor`` logs one run of the experiment: per-step metrics with the step index, the alert count
    per kind, the alert kinds as a tag and monitoring.json as an artifact; ``--no-track`` logs nothing."""
    from mlflow.tracking import MlflowClient

    from segml import tracking

    root, artifact, monitored = shifted
    result = _monitor(
        root, str(monitored), "--artifact", str(artifact), "--as-of", f"{BEFORE},{AFTER}", "--json"
    )
    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    run_id = document["mlflow_run_id"]
    try:
        client = MlflowClient(tracking_uri=tracking.tracking_uri_for(root))
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["segml.command"] == "monitor"
        kinds = sorted({a["kind"] for a in document["alerts"]})
        assert run.data.tags["segml.alerts"] == ",".join(kinds)
        assert run.data.metrics["alerts"] == len(document["alerts"])
        history = client.get_metric_history(run_id, "customers")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(len(document["steps"])))
        assert sorted(m.value for m in history) == sorted(float(s["customers"]) for s in document["steps"])
        logged = [f.path for f in client.list_artifacts(run_id, "monitoring")]
        assert "monitoring/monitoring.json" in logged
        runs = len(client.search_runs([run.info.experiment_id]))
        untracked = _monitor(
            root, str(monitored), "--artifact", str(artifact), "--as-of", BEFORE, "--json", "--no-track"
        )
        assert json.loads(untracked.stdout)["mlflow_run_id"] is None
        assert len(client.search_runs([run.info.experiment_id])) == runs
    finally:
        tracking.reset()


def test_before_the_shift_no_alert_exits_0(shifted) -> None:
    root, artifact, monitored = shifted
    # the cohort ages (tenure features drift) and a 60-day Gini is not the 275-day training Gini: only the
    # score PSI and the update rate are watched here
    quiet = ["--set", "monitor.psi_threshold=100", "--set", "monitor.gini_drop_threshold=1"]
    result = _monitor(root, str(monitored), "--artifact", str(artifact), "--as-of", BEFORE, *quiet)
    assert result.exit_code == 0, result.output
    assert "no alert" in result.stdout
    result = _monitor(
        root, str(monitored), "--artifact", str(artifact), "--as-of", f"{BEFORE},{AFTER}", *quiet
    )
    assert result.exit_code == 3, result.output
    assert "score_psi" in result.stdout


def test_series_outputs_matrices_and_flows(shifted) -> None:
    root, artifact, monitored = shifted
    cfg = load_experiment(monitored, root=root)
    series = run_monitor_series(cfg, artifact, monitor.parse_as_of(f"{BEFORE},{AFTER}"))
    report = cfg.paths.reports / "monitoring"
    on_disk = json.loads((report / "monitoring.json").read_text())
    assert set(on_disk) >= {"steps", "alerts"} and len(on_disk["steps"]) == 7
    for alert in on_disk["alerts"]:
        assert {"step", "kind", "value", "threshold"} <= set(alert)
    previous = None
    for step in on_disk["steps"]:
        counts = {g["grade"]: g["n"] for g in step["grades"]}
        assert sum(counts.values()) == step["customers"]
        assert abs(sum(g["value_share"] for g in step["grades"]) - 1) < 1e-9
        assert (report / step["as_of"] / "psi.parquet").is_file()
        psi = pd.read_parquet(report / step["as_of"] / "psi.parquet")
        assert psi["feature"].iloc[0] == "score" and len(psi) > 5  # the score and every model feature
        if previous is not None:
            m = step["migration"]
            before = {g["grade"]: g["n"] for g in previous["grades"]}
            for row, values in zip(m["rows"], m["counts"], strict=True):
                if row != monitor.NOT_GRADED_BEFORE:
                    assert sum(values) == before[row]
            mv = step["movement"]
            assert mv["changed"] == mv["upgrades"] + mv["downgrades"]
            assert step["flows"]["new"] == 0  # every customer bought in the first weeks
        previous = step
    # aggregates only in reports; the customer-level migration list under data/processed
    assert not any("customer_id" in pd.read_parquet(p).columns for p in report.rglob("*.parquet"))
    moves = pd.read_parquet(cfg.paths.processed / "monitoring" / "migrations.parquet")
    assert list(moves.columns) == [
        "as_of",
        "previous",
        "customer_id",
        "grade_before",
        "grade_after",
        "top_reason",
        "top_reason_feature",
    ]
    assert (moves["grade_before"] != moves["grade_after"]).all()
    pairs = who_moved(cfg)
    last = moves[moves["as_of"] == moves["as_of"].max()]
    assert pairs["customers"].sum() == len(last) and "customer_id" not in pairs.columns
    assert pairs["reasons"].str.len().gt(0).all()
    # realised checks where the 60-day window has passed (the data end 2026-12-31)
    realised = {s["as_of"]: s["realised"] for s in series.steps}
    assert realised["2026-10-31"]["passed"] and not realised["2026-12-31"]["passed"]
    assert 0 < realised["2026-10-31"]["normalized_gini"] <= 1
    assert 0 < realised["2026-10-31"]["top_grade_capture"] <= 1
    assert isinstance(realised["2026-10-31"]["monotone"], bool)


def test_hysteresis_lowers_the_update_rate(shifted) -> None:
    root, artifact, monitored = shifted
    cfg = load_experiment(
        monitored, ["policy.hysteresis.margin=0.05", "policy.hysteresis.periods=3"], root=root
    )
    series = run_monitor_series(cfg, artifact, monitor.parse_as_of(f"{BEFORE},{AFTER}"))
    table = series_tables(series.document)["steps"].dropna(subset=["update_rate"])
    assert table["update_rate"].sum() < table["update_rate_without_hysteresis"].sum()
    assert (table["held_by_hysteresis"] > 0).any()


def test_bad_input_one_line_errors_exit_2(shifted) -> None:
    root, artifact, monitored = shifted
    for args, words in (
        (["--from", "2026-01-31", "--to", "2026-06-30", "--every", "monthly"], "--every"),
        (["--from", "2026-01-31", "--to", "2026-06-30", "--every", "0M"], "--every"),
        (["--as-of", "2022-06-30"], "before the first transaction"),
        (["--as-of", "2026-13-01"], "--as-of"),
    ):
        result = _monitor(root, str(monitored), "--artifact", str(artifact), *args)
        assert result.exit_code == 2, (args, result.output)
        assert words in result.output and "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    # the artifact needs the customer attribute 'region': an experiment without customers does not match
    bare = _experiment(root, "bare", "shifted", "2026-12-31", customers=False)
    run_ingest(load_experiment(bare, root=root))
    result = _monitor(root, str(bare), "--artifact", str(artifact), "--as-of", "2026-06-30")
    assert result.exit_code == 2, result.output
    assert "does not match" in result.stderr and "region" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cutoff_after_the_last_transaction_warns(shifted) -> None:
    root, artifact, monitored = shifted
    result = _monitor(
        root, str(monitored), "--artifact", str(artifact), "--as-of", "2027-01-31", "--no-fail-on-alert"
    )
    assert result.exit_code == 0, result.output
    assert "warning: cutoff 2027-01-31 is after the last transaction (2026-12-" in result.stderr
    assert "Traceback" not in result.output


def test_artifact_without_training_reference_is_refused(shifted, tmp_path: Path) -> None:
    _, artifact, _ = shifted
    loaded = load_artifact(artifact)
    reference = read_training_reference(loaded)
    assert reference["columns"]["score"]["kind"] == "numeric"
    assert set(loaded.model.feature_names_) <= set(reference["columns"])
    old = tmp_path / "old"
    shutil.copytree(artifact, old)
    (old / monitor.TRAINING_REFERENCE).unlink()
    with pytest.raises(ArtifactError, match="re-export it with `segml export"):
        read_training_reference(dataclasses.replace(loaded, path=old))


# --------------------------------------------------------------------------------------------------------------
# Pure helpers


def test_monitor_cutoffs_keep_month_ends_and_reject_bad_periods() -> None:
    days = monitor.monitor_cutoffs(dt.date(1997, 10, 31), dt.date(1998, 6, 30), "1M")
    assert [d.isoformat() for d in days[:5]] == [
        "1997-10-31",
        "1997-11-30",
        "1997-12-31",
        "1998-01-31",
        "1998-02-28",
    ]
    assert len(days) == 9 and days[-1] == dt.date(1998, 6, 30)
    assert monitor.monitor_cutoffs(dt.date(2026, 1, 15), dt.date(2026, 4, 30), "1M")[-1] == dt.date(
        2026, 4, 15
    )
    assert monitor.monitor_cutoffs(dt.date(2026, 1, 1), dt.date(2026, 1, 15), "7D") == [
        dt.date(2026, 1, 1),
        dt.date(2026, 1, 8),
        dt.date(2026, 1, 15),
    ]
    assert len(monitor.monitor_cutoffs(dt.date(1997, 12, 31), dt.date(1998, 12, 31), "1Q")) == 5
    for bad in ("M", "1X", "-1M", "1.5M", ""):
        with pytest.raises(ConfigError, match="--every"):
            monitor.parse_every(bad)
    with pytest.raises(ConfigError, match="before --from"):
        monitor.monitor_cutoffs(dt.date(2026, 2, 1), dt.date(2026, 1, 1), "1M")


def test_reference_psi_matches_population_stability_index() -> None:
    rng = np.random.default_rng(0)
    train = rng.lognormal(3, 1, 5000)
    now = rng.lognormal(3.4, 1, 4000)
    frame = pd.DataFrame({"spend": train, "region": rng.choice(["N", "S"], 5000)})
    reference = monitor.training_reference(frame, train / train.max(), ["spend"], ["region"])
    entry = reference["columns"]["spend"]
    assert abs(sum(entry["shares"]) - 1) < 1e-12
    assert monitor.reference_psi(entry, now) == pytest.approx(monitor.population_stability_index(train, now))
    assert monitor.reference_psi(entry, train) == pytest.approx(0.0, abs=1e-12)
    region = reference["columns"]["region"]
    assert monitor.reference_psi(region, ["N"] * 100) > 0.25
    assert monitor.reference_psi(region, ["W"] * 100) > 1  # an unseen level lands in the extra bin
    table = monitor.psi_against_reference(
        reference, pd.DataFrame({"spend": now, "region": "N"}), now / train.max()
    )
    assert list(table["feature"])[0] == "score" and set(table["feature"]) == {"score", "spend", "region"}


def test_migration_rows_sum_to_the_earlier_counts() -> None:
    before = pd.DataFrame({"customer_id": list("abcdef"), "grade": list("AABBCN")})
    after = pd.DataFrame({"customer_id": list("abcdgh"), "grade": list("ABBCAN")})
    matrix = monitor.migration_matrix(before, after, ["A", "B", "C", "N"], include_left=True)
    counts = before["grade"].value_counts()
    for grade in "ABCN":
        assert matrix.loc[grade].sum() == counts[grade]
    assert matrix.loc["C", monitor.NOT_GRADED_NOW] == 1 and matrix.loc[monitor.NOT_GRADED_BEFORE].sum() == 2
    moved = monitor.movement(before, after, ["A", "B", "C", "N"])
    assert moved == {"customers_in_both": 4, "changed": 2, "update_rate": 0.5, "upgrades": 0, "downgrades": 2}


def test_alerts_from_thresholds() -> None:
    steps = [
        {
            "as_of": "2026-01-31",
            "psi": [{"feature": "score", "psi": 0.1}, {"feature": "spend_365d", "psi": 0.3}],
            "movement": None,
            "realised": {"gini_drop": 0.01},
        },
        {
            "as_of": "2026-02-28",
            "psi": [{"feature": "score", "psi": 0.25}, {"feature": "spend_365d", "psi": 0.2}],
            "movement": {"update_rate": 0.31},
            "realised": {"gini_drop": 0.08},
        },
    ]
    found = monitor.alerts(steps, MonitorSettings())
    assert [(a["step"], a["kind"]) for a in found] == [
        ("2026-01-31", "feature_psi"),
        ("2026-02-28", "score_psi"),
        ("2026-02-28", "update_rate"),
        ("2026-02-28", "gini_drop"),
    ]
    assert found[0]["feature"] == "spend_365d" and found[0]["threshold"] == 0.25
    assert (
        monitor.alerts(
            steps,
            MonitorSettings(
                score_psi_threshold=1, psi_threshold=1, update_rate_threshold=1, gini_drop_threshold=1
            ),
        )
        == []
    )


def test_flagged_top_rise_alert() -> None:
    """The share of the best grades' customers with a risk flag: an alert when it rises by more than the
    threshold between two steps, none on the first step or on a fall."""
    steps = [
        {"as_of": "2026-01-31", "psi": [], "flagged_top_share": 0.10},
        {"as_of": "2026-02-28", "psi": [], "flagged_top_share": 0.18},
        {"as_of": "2026-03-31", "psi": [], "flagged_top_share": 0.12},
        {"as_of": "2026-04-30", "psi": []},  # no payment or contact data at this step
    ]
    found = monitor.alerts(steps, MonitorSettings())
    assert [(a["step"], a["kind"]) for a in found] == [("2026-02-28", "flagged_top_rise")]
    assert found[0]["value"] == pytest.approx(0.08) and found[0]["share"] == 0.18
    assert monitor.alerts(steps, MonitorSettings(flag_rise_threshold=0.1)) == []


def test_apply_hysteresis_margin_and_periods() -> None:
    thresholds, codes = [0.9, 0.7, 0.4, 0.2], list("ABCDE")
    previous = pd.DataFrame({"customer_id": list("abcd"), "grade": list("BBBB")})
    current = pd.DataFrame(
        {"customer_id": list("abcde"), "grade": list("AACBA"), "score": [0.92, 0.99, 0.5, 0.85, 0.99]}
    )
    first = apply_hysteresis(previous, current, 0.05, 2, thresholds=thresholds, codes=codes)
    # a: just over the A boundary (0.92 < 0.9 + 0.05) stays B; b: clearly over; c: clearly under; e: new
    assert list(first["grade"]) == list("BACBA")
    assert list(first["hysteresis_pending"]) == [1, 0, 0, 0, 0]
    second = apply_hysteresis(first, current, 0.05, 2, thresholds=thresholds, codes=codes)
    assert list(second["grade"]) == list("AACBA")  # a: second period in a row above the boundary
    assert not second["held"].any()
    off = apply_hysteresis(previous, current, 0.0, 3, thresholds=thresholds, codes=codes)
    assert list(off["grade"]) == list(current["grade"])
    assert GradePolicy.from_config({"hysteresis": {"margin": 0.03, "periods": 2}}).hysteresis.enabled
    with pytest.raises(ConfigError, match="policy.hysteresis.periods"):
        GradePolicy.from_config({"hysteresis": {"periods": 0}})


# --------------------------------------------------------------------------------------------------------------
# CDNOW (slow)


@pytest.fixture(scope="module")
def cdnow_artifact(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cdnow_monitor")
    (root / "experiments").mkdir()
    shutil.copy(REPO / "experiments" / "cdnow.yaml", root / "experiments" / "cdnow.yaml")
    (root / "pyproject.toml").write_text("[project]\nname = 'scratch'\n")
    shutil.copytree(REPO / "data" / "raw" / "cdnow", root / "data" / "raw" / "cdnow")
    cfg = load_experiment(root / "experiments" / "cdnow.yaml", root=root)
    run_ingest(cfg)
    run_pipeline(cfg, stages=stages_between(until="monitor"), backtest=False, progress=False, track=False)
    return root, export_artifact(cfg)


@pytest.mark.slow
def test_cdnow_monthly_monitor(cdnow_artifact) -> None:
    root, artifact = cdnow_artifact
    yaml_path = root / "experiments" / "cdnow.yaml"
    args = ["--artifact", str(artifact), "--from", "1997-10-31", "--to", "1998-06-30", "--every", "1M"]
    result = _monitor(
        root, str(yaml_path), *args, "--set", "monitor.realised_horizon_days=90", "--json", report=True
    )
    assert result.exit_code == 3, result.output  # the cohort ages: tenure drifts far from the data end
    document = json.loads(result.stdout)
    assert len(document["steps"]) == 9
    assert Path(document["notebook"]).is_file() and document["alerts"]
    cfg = load_experiment(yaml_path, ["monitor.realised_horizon_days=90"], root=root)
    series = json.loads((cfg.paths.reports / "monitoring" / "monitoring.json").read_text())
    for previous, step in zip(series["steps"], series["steps"][1:], strict=False):
        before = {g["grade"]: g["n"] for g in previous["grades"]}
        m = step["migration"]
        assert {r for r in m["rows"] if r != monitor.NOT_GRADED_BEFORE} == set(before)
        for row, values in zip(m["rows"], m["counts"], strict=True):
            if row != monitor.NOT_GRADED_BEFORE:
                assert sum(values) == before[row]
    # the last cutoff is the training data end: the score matches the training reference exactly
    assert series["steps"][-1]["psi"][0]["feature"] == "score"
    assert series["steps"][-1]["psi"][0]["psi"] == pytest.approx(0.0, abs=1e-9)
    realised = [s["realised"] for s in series["steps"]]
    assert [r["passed"] for r in realised] == [True] * 6 + [False] * 3
    assert all(r["normalized_gini"] > 0.5 for r in realised[:6])
    # hysteresis lowers the update rate over the series
    held = _monitor(
        root,
        str(yaml_path),
        *args,
        "--set",
        "monitor.realised_horizon_days=90",
        "--set",
        "policy.hysteresis.margin=0.05",
        "--json",
    )
    steps = json.loads(held.stdout)["steps"][1:]
    assert sum(s["update_rate"] for s in steps) < sum(s["update_rate_without_hysteresis"] for s in steps)


def test_grade_previous_applies_hysteresis(shifted, tmp_path: Path) -> None:
    root, artifact, monitored = shifted
    raw = root / "data" / "raw" / "shifted"
    common = ["grade", str(artifact), "--transactions", str(raw / "transactions.parquet")]
    common += ["--customers", str(raw / "customers.parquet"), "--mapping", str(monitored), "--no-reasons"]
    first = runner.invoke(app, [*common, "--as-of", "2026-06-30", "--out", str(tmp_path / "june.parquet")])
    assert first.exit_code == 0, first.output
    args = [*common, "--as-of", "2026-08-31", "--previous", str(tmp_path / "june.parquet")]
    plain = runner.invoke(app, [*args, "--margin", "0", "--out", str(tmp_path / "plain.parquet")])
    held = runner.invoke(app, [*args, "--margin", "0.05", "--out", str(tmp_path / "held.parquet")])
    assert plain.exit_code == 0 and held.exit_code == 0, held.output
    june, august = pd.read_parquet(tmp_path / "june.parquet"), pd.read_parquet(tmp_path / "held.parquet")
    assert (pd.read_parquet(tmp_path / "plain.parquet")["grade"] == august["plain_grade"]).all()
    kept = august["grade"] != august["plain_grade"]
    assert kept.any() and "keep their previous grade" in held.stderr
    merged = august[kept].merge(june[["customer_id", "grade"]], on="customer_id", suffixes=("", "_june"))
    # a held-back customer stays at the June grade or moves part of the way, never past the plain grade
    rank = {code: i for i, code in enumerate("ABCDEN")}
    kept_rank, june_rank, plain_rank = (merged[c].map(rank) for c in ("grade", "grade_june", "plain_grade"))
    low, high = np.minimum(june_rank, plain_rank), np.maximum(june_rank, plain_rank)
    assert ((kept_rank >= low) & (kept_rank <= high)).all() and (kept_rank == june_rank).any()
    changed = lambda frame: (frame.merge(june, on="customer_id")["grade_x"] != june["grade"]).mean()  # noqa: E731
    assert changed(august) < changed(pd.read_parquet(tmp_path / "plain.parquet"))
    bad = runner.invoke(
        app, [*args, "--previous", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "x.parquet")]
    )
    assert bad.exit_code == 2 and "previous grades file not found" in bad.output
