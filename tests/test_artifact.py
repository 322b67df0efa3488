"""Grading artifact: export → verify → grade / pyfunc / ONNX on the smoke experiment (CDNOW in the slow set)."""

from __future__ import annotations

import json
import os
import pickletools
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, make_project
from typer.testing import CliRunner

from segml.artifact import ArtifactError, export_artifact, load_artifact, verify
from segml.artifact.export import existing_versions, next_version
from segml.artifact.manifest import MANIFEST, NON_REPRODUCIBLE, list_files
from segml.cli import app
from segml.config import load_experiment
from segml.ingest import run_ingest
from segml.pipeline import run_pipeline, stages_between
from segml.policy import GradePolicy

runner = CliRunner()


def _train(root: Path, experiment: str = "smoke", overrides: list[str] | None = None):
    cfg = load_experiment(root / "experiments" / f"{experiment}.yaml", overrides or [], root=root)
    run_ingest(cfg)
    run_pipeline(cfg, stages=stages_between(until="monitor"), backtest=False, progress=False, track=False)
    return cfg


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("artifact_project")
    make_project(root)
    cfg = _train(root)
    path = export_artifact(cfg)
    return cfg, path


@pytest.fixture(scope="module")
def current_features(exported):
    from segml import features

    cfg, path = exported
    data_end = pd.Timestamp(json.loads(cfg.paths.dq_report.read_text())["date_max"]).date()
    return features.build_features(
        cfg.paths.clean_transactions, data_end, cfg.features, cfg.paths.clean_customers
    )


def _raw(cfg) -> tuple[Path, Path]:
    raw = cfg.root / "data" / "raw" / "smoke"
    return raw / "transactions.parquet", raw / "customers.parquet"


def _grade_cli(path: Path, out: Path, *extra: str, cfg=None, customers: bool = True):
    transactions, customer_file = _raw(cfg)
    args = ["grade", str(path), "--transactions", str(transactions), "--out", str(out), *extra]
    if customers:
        args += ["--customers", str(customer_file)]
    return runner.invoke(app, args)


def _same_grades(graded: pd.DataFrame, expected: pd.DataFrame) -> None:
    graded = graded.drop(columns="artifact_version").copy()
    graded["as_of"] = graded["as_of"].astype(expected["as_of"].dtype)
    pd.testing.assert_frame_equal(graded.reset_index(drop=True), expected, check_exact=True)


# --------------------------------------------------------------------------------------------------------------
# Export, manifest, versions


def test_export_writes_every_part_and_verifies(exported) -> None:
    from segml.tracking import data_fingerprint

    cfg, path = exported
    assert path == cfg.root / "artifacts" / "smoke" / "1.0.0"
    files = set(list_files(path))
    for expected in (
        "manifest.json",
        "model_card.md",
        "model/potential.json",
        "policy/policy.yaml",
        "policy/reference_stats.json",
        "rules/grade_rules.json",
        "rules/spend_tree.json",
        "rules/clustering.json",
        "spec/feature_spec.json",
        "spec/schema.json",
        "spec/ingest.yaml",
        "spec/probe.json",
        "evaluation/comparison.json",
        "model/onnx/parity.json",
        "pyfunc/MLmodel",
        "pyfunc/pyfunc_shim.py",
        "pyfunc/requirements.txt",
    ):
        assert expected in files
    state = json.loads((path / "model" / "potential.json").read_text())
    for name, relative in state["booster_files"].items():
        assert (path / relative).read_text().startswith("tree\n")
        assert (path / f"model/onnx/{name}.onnx").is_file()
    info = verify(path)
    manifest = info["manifest"]
    assert set(manifest["files"]) == files - {MANIFEST}
    assert info["files"] == len(files) - 1
    assert manifest["version"] == "1.0.0" and manifest["name"] == "smoke"
    assert manifest["training_data"]["fingerprint"] == data_fingerprint(cfg.paths.clean_transactions)
    assert manifest["dependencies"]["lightgbm"] and manifest["segml_version"]
    assert manifest["mlflow_run_id"] is None and manifest["created"]
    requirements = (path / "pyfunc" / "requirements.txt").read_text().split()
    assert any(r.startswith("segml==") for r in requirements)
    assert any(r.startswith("lightgbm==") for r in requirements)
    card = (path / "model_card.md").read_text()
    for section in (
        "Intended use",
        "Training data",
        "Holdout metrics",
        "Grade definitions",
        "Limits",
        "privacy",
    ):
        assert section in card


def test_no_customer_level_rows(exported) -> None:
    cfg, path = exported
    ids = set(pd.read_parquet(cfg.paths.processed / "grades.parquet")["customer_id"])
    text = "\n".join((path / rel).read_text(errors="ignore") for rel in list_files(path))
    leaked = [i for i in ids if f'"{i}"' in text or f" {i}\n" in text]
    assert not leaked


def _is_pickle(data: bytes) -> bool:
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return True
    try:
        ops = list(pickletools.genops(data))
    except Exception:
        return False
    return bool(ops) and ops[-1][0].name == "STOP" and ops[-1][2] == len(data) - 1


def test_no_pickle_anywhere(exported) -> None:
    _, path = exported
    assert not _is_pickle(b"not a pickle") and _is_pickle(__import__("pickle").dumps({"a": 1}))
    assert _is_pickle(__import__("pickle").dumps([1, 2], protocol=0))
    for rel in list_files(path):
        assert not rel.endswith((".pkl", ".pickle", ".joblib", ".pt", ".sav")), rel
        data = (path / rel).read_bytes()
        assert not _is_pickle(data), rel
        assert not data.startswith(b"\x1f\x8b") and not data.startswith(b"x\x9c"), rel  # compressed joblib
    mlmodel = (path / "pyfunc" / "MLmodel").read_text()
    assert "model_code_path" in mlmodel and "python_model.pkl" not in mlmodel


def test_versions_are_never_overwritten_and_export_is_idempotent(exported) -> None:
    cfg, path = exported
    with pytest.raises(ArtifactError, match="1.0.0 exists already"):
        export_artifact(cfg, "1.0.0")
    with pytest.raises(ArtifactError, match="semantic version"):
        export_artifact(cfg, "v2")
    second = export_artifact(cfg)  # next patch
    assert second.name == "1.0.1"
    assert existing_versions(path.parent) == ["1.0.0", "1.0.1"]
    assert next_version(path.parent) == "1.0.2"
    assert list_files(second) == list_files(path)
    for rel in list_files(path):
        if rel in NON_REPRODUCIBLE:
            continue
        assert (second / rel).read_bytes() == (path / rel).read_bytes(), rel
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no staging folders left


def test_policy_yaml_round_trips_exactly(exported) -> None:
    from segml.policy import FittedPolicy

    _, path = exported
    text = (path / "policy" / "policy.yaml").read_text(encoding="utf-8")
    policy = FittedPolicy.from_yaml(text)
    assert policy.to_yaml() == text
    again = FittedPolicy.from_yaml(policy.to_yaml())
    assert again.grade_thresholds == policy.grade_thresholds
    assert again.potential_reference == policy.potential_reference


# --------------------------------------------------------------------------------------------------------------
# Grade


def test_grade_cli_reproduces_training_grades(exported, tmp_path: Path) -> None:
    cfg, path = exported
    out = tmp_path / "grades.parquet"
    result = _grade_cli(path, out, cfg=cfg)
    assert result.exit_code == 0, result.output
    graded = pd.read_parquet(out)
    assert (graded["artifact_version"] == "1.0.0").all()
    _same_grades(graded, pd.read_parquet(cfg.paths.processed / "grades.parquet"))


def test_grade_without_customers_grades_attributes_as_missing(exported, tmp_path: Path) -> None:
    """No --customers for a model trained with attributes: one warning, then every buyer is graded."""
    cfg, path = exported
    out = tmp_path / "grades.parquet"
    result = _grade_cli(path, out, cfg=cfg, customers=False)
    assert result.exit_code == 0, result.output
    assert result.output.count("warning:") == 1 and "graded as missing" in result.output
    graded = pd.read_parquet(out)
    buyers = pd.read_parquet(cfg.paths.clean_transactions, columns=["customer_id"])["customer_id"].unique()
    assert sorted(graded["customer_id"]) == sorted(buyers)
    assert graded["grade"].notna().all()


def test_grade_refuses_invoices_the_model_was_not_trained_with(exported, tmp_path: Path) -> None:
    cfg, path = exported
    stray = tmp_path / "invoices.csv"
    stray.write_text("invoice_id,customer_id,issued,due,paid,amount\n", encoding="utf-8")
    result = _grade_cli(path, tmp_path / "g.parquet", "--invoices", str(stray), cfg=cfg)
    assert result.exit_code != 0
    assert "trained without invoices" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "g.parquet").exists()


def test_grade_csv_with_own_mapping(exported, tmp_path: Path) -> None:
    """The user's own column names, a CSV file and a --mapping file give the same grades."""
    cfg, path = exported
    transactions, customers = _raw(cfg)
    raw = pd.read_parquet(transactions).rename(columns={"customer_id": "client", "amount": "value_cny"})
    csv = tmp_path / "orders.csv"
    raw.to_csv(csv, index=False)
    source = dict(cfg.data.transactions[0].__dict__)
    source.pop("path")
    source["format"] = "csv"
    source["columns"] = {**source["columns"], "customer_id": "client", "amount": "value_cny"}
    mapping = tmp_path / "mapping.yaml"
    import yaml

    mapping.write_text(yaml.safe_dump({"transactions": [source]}))
    out = tmp_path / "grades.csv"
    result = runner.invoke(
        app,
        ["grade", str(path), "--transactions", str(csv), "--customers", str(customers)]
        + ["--mapping", str(mapping), "--out", str(out), "--no-reasons"],
    )
    assert result.exit_code == 0, result.output
    graded = pd.read_csv(out, dtype={"customer_id": str})
    expected = pd.read_parquet(cfg.paths.processed / "grades.parquet")
    assert "reason_1" not in graded.columns
    assert graded["customer_id"].tolist() == expected["customer_id"].tolist()
    assert graded["grade"].tolist() == expected["grade"].tolist()
    np.testing.assert_allclose(graded["score"], expected["score"], rtol=1e-12)


def test_schema_mismatch_is_one_clear_line(exported, tmp_path: Path) -> None:
    cfg, path = exported
    transactions, _ = _raw(cfg)
    bad = tmp_path / "orders.parquet"
    pd.read_parquet(transactions).rename(columns={"amount": "total"}).to_parquet(bad)
    result = runner.invoke(
        app, ["grade", str(path), "--transactions", str(bad), "--out", str(tmp_path / "g.csv")]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1]  # after the no-customers warning, one error line
    assert "amount" in errors[0] and "orders.parquet" in errors[0]


def test_one_customer_graded_alone_gets_the_same_row(exported, current_features) -> None:
    cfg, path = exported
    artifact = load_artifact(path)
    full = artifact.score(current_features)
    purchased = np.flatnonzero(current_features["has_purchases"].to_numpy())
    for position in (0, int(purchased[len(purchased) // 2]), len(current_features) - 1):
        alone = artifact.score(current_features.iloc[[position]].reset_index(drop=True))
        pd.testing.assert_frame_equal(alone, full.iloc[[position]].reset_index(drop=True), check_exact=True)
    # an explicit re-derivation on the training population gives back the frozen boundaries
    refit = artifact.score(current_features, refit_boundaries=True)
    assert refit["grade"].tolist() == full["grade"].tolist()


def test_pyfunc_predict_equals_cli(exported, current_features, tmp_path: Path) -> None:
    import mlflow.pyfunc

    cfg, path = exported
    out = tmp_path / "grades.parquet"
    assert _grade_cli(path, out, cfg=cfg).exit_code == 0
    model = mlflow.pyfunc.load_model(str(path / "pyfunc"))
    predicted = model.predict(current_features)
    cli = pd.read_parquet(out)
    predicted["as_of"] = predicted["as_of"].astype(cli["as_of"].dtype)
    pd.testing.assert_frame_equal(predicted, cli, check_exact=True)
    verify(path)  # loading wrote nothing into the artifact


@pytest.mark.slow
@pytest.mark.spark
def test_spark_udf_equals_pandas(exported, current_features, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mlflow.pyfunc.spark_udf(env_manager="local")`` on the artifact's pyfunc folder alone."""
    pytest.importorskip("pyspark", reason="the spark extra is not installed")
    import mlflow.pyfunc
    from pyspark.sql.functions import col, struct

    from segml.features import spark_session

    _, path = exported
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    spark = spark_session()
    try:
        frame = spark.createDataFrame(current_features)
        udf = mlflow.pyfunc.spark_udf(
            spark,
            str(path / "pyfunc"),
            env_manager="local",
            result_type="customer_id string, grade string, score double, predicted_value double",
        )
        graded = (
            frame.withColumn("g", udf(struct(*[col(c) for c in current_features.columns])))
            .select("g.*")
            .toPandas()
            .sort_values("customer_id")
            .reset_index(drop=True)
        )
    finally:
        spark.stop()
    expected = load_artifact(path).score(current_features, reasons=False)
    pd.testing.assert_frame_equal(
        graded, expected[["customer_id", "grade", "score", "predicted_value"]], check_exact=True
    )


# --------------------------------------------------------------------------------------------------------------
# Tampering


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    position = len(data) // 2
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipping_one_byte_of_any_file_is_refused(exported, tmp_path: Path) -> None:
    cfg, path = exported
    relatives = list_files(path)
    assert len(relatives) >= 18
    transactions, _ = _raw(cfg)
    for i, rel in enumerate(relatives):
        copy = tmp_path / f"a{i}"
        shutil.copytree(path, copy)
        _flip(copy / rel)
        checked = runner.invoke(app, ["verify", str(copy)])
        assert checked.exit_code == 2, (rel, checked.output)
        assert rel.split("/")[-1] in checked.output, (rel, checked.output)
        graded = runner.invoke(
            app, ["grade", str(copy), "--transactions", str(transactions), "--out", str(copy / "g.csv")]
        )
        assert graded.exit_code == 2, (rel, graded.output)
        assert rel.split("/")[-1] in graded.output, (rel, graded.output)
        assert not (copy / "g.csv").exists()
        with pytest.raises(ArtifactError):
            load_artifact(copy)


def test_changed_scoring_code_is_refused(exported, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe customers catch an installed segml that ranks differently from the exporting one."""
    import segml.policy

    _, path = exported
    load_artifact(path)  # the probe passes with the exporting code
    original = segml.policy.percentile_rank
    monkeypatch.setattr(segml.policy, "percentile_rank", lambda v, r: np.minimum(original(v, r) + 1e-9, 1.0))
    with pytest.raises(ArtifactError, match=r"probe\.json.*scores the probe customers differently"):
        load_artifact(path)


def test_missing_and_extra_files_are_named(exported, tmp_path: Path) -> None:
    _, path = exported
    copy = tmp_path / "a"
    shutil.copytree(path, copy)
    (copy / "policy" / "reference_stats.json").unlink()
    (copy / "model" / "extra.txt").write_text("x")
    with pytest.raises(ArtifactError) as info:
        verify(copy)
    assert "missing: policy/reference_stats.json" in str(info.value)
    assert "not in manifest: model/extra.txt" in str(info.value)


# --------------------------------------------------------------------------------------------------------------
# ONNX


def test_onnx_parity_on_smoke_customers(exported, current_features) -> None:
    from segml.artifact.onnx_export import combine, onnx_session, run_onnx

    _, path = exported
    artifact = load_artifact(path)
    model = artifact.model
    matrix = model._columns().matrix(current_features, model.horizon_days)
    responses = {}
    for name in model.boosters_:
        session = onnx_session((path / f"model/onnx/{name}.onnx").read_bytes())
        responses[name] = run_onnx(session, matrix)
        expected = model.boosters_[name].predict(matrix, num_iteration=model.n_estimators_[name])
        np.testing.assert_allclose(responses[name], expected, rtol=1e-4, atol=1e-5)
    predicted = combine(model, responses, current_features)
    np.testing.assert_allclose(predicted, model.predict(current_features), rtol=1e-4, atol=1e-5)
    parity = json.loads((path / "model/onnx/parity.json").read_text())
    assert parity["passed"] is True and parity["target_opset"] <= 15
    assert parity["n_grade_differs_away_from_boundary"] == 0
    assert parity["n_grade_differs"] <= parity["n_within_error_of_boundary"]
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["onnx"]["n_within_error_of_boundary"] == parity["n_within_error_of_boundary"]
    assert manifest["onnx"]["summary"] == parity["summary"]
    assert parity["summary"] == "no grade differs" or parity["summary"].endswith(
        "all within float32 error of a boundary"
    )


def test_export_refuses_when_onnx_grades_differ_away_from_a_boundary(exported, monkeypatch) -> None:
    from segml.artifact import onnx_export

    cfg, path = exported
    real = onnx_export.export_onnx

    def failing(*args, **kwargs):
        report = real(*args, **kwargs)
        return {**report, "passed": False, "summary": onnx_export.parity_summary(7, 2)}

    monkeypatch.setattr(onnx_export, "export_onnx", failing)
    before = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(ArtifactError, match=r"ONNX parity failed .*7 grades differ, 2 of them away"):
        export_artifact(cfg, "9.9.9")
    assert sorted(p.name for p in path.parent.iterdir()) == before  # nothing half-written is left


def test_parity_summary_says_how_many_grades_differ_and_where() -> None:
    from segml.artifact.onnx_export import parity_summary

    assert parity_summary(0, 0) == "no grade differs"
    assert parity_summary(20, 0) == "20 grades differ, all within float32 error of a boundary"
    assert parity_summary(1, 0) == "1 grade differs, all within float32 error of a boundary"
    assert parity_summary(1258, 3) == "1,258 grades differ, 3 of them away from a boundary"
    assert parity_summary(0, 0, boosters_ok=False).startswith("booster outputs outside tolerance")


# --------------------------------------------------------------------------------------------------------------
# Slim scoring path

_BLOCKER = textwrap.dedent(
    """
    import sys
    BLOCKED = ("pyspark", "shap", "jupyter", "jupyter_client", "jupyter_core", "ipykernel", "IPython",
               "nbformat", "nbconvert", "papermill", "matplotlib", "mlflow", "onnx", "onnxmltools",
               "onnxruntime", "lifetimes")

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked import of {name} on the grading path")
            return None

    sys.meta_path.insert(0, Blocker())
    from segml.cli import main
    sys.argv = ["segml", *sys.argv[1:]]
    try:
        main()
    finally:
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not leaked, leaked
    """
)


def test_grade_runs_without_jupyter_spark_shap_or_mlflow(exported, tmp_path: Path) -> None:
    cfg, path = exported
    transactions, customers = _raw(cfg)
    out = tmp_path / "grades.parquet"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    for command in (
        [
            "grade",
            str(path),
            "--transactions",
            str(transactions),
            "--customers",
            str(customers),
            "--out",
            str(out),
        ],
        ["verify", str(path)],
    ):
        done = subprocess.run(
            [sys.executable, "-c", _BLOCKER, *command], capture_output=True, text=True, env=env, cwd=REPO
        )
        assert done.returncode == 0, done.stderr[-3000:]
    _same_grades(pd.read_parquet(out), pd.read_parquet(cfg.paths.processed / "grades.parquet"))


# --------------------------------------------------------------------------------------------------------------
# MLflow


@pytest.mark.slow
def test_log_to_mlflow_and_load_from_the_registry(exported, current_features, tmp_path: Path) -> None:
    import mlflow

    from segml import tracking
    from segml.artifact import log_to_mlflow

    cfg, path = exported
    store = tmp_path / "store"
    store.mkdir()
    tracking.configure(store, "artifact-test")
    try:
        with mlflow.start_run() as run:
            run_id = run.info.run_id
        uri = log_to_mlflow(path, run_id)
        version = tracking.register_model(uri, "smoke-grading", 0.5, evaluation_key="test")
        model = mlflow.pyfunc.load_model(f"models:/smoke-grading/{version}")
        predicted = model.predict(current_features.iloc[:50])
        expected = load_artifact(path).score(current_features.iloc[:50])
        pd.testing.assert_frame_equal(predicted, expected, check_exact=True)
        logged = mlflow.artifacts.list_artifacts(run_id=run_id, artifact_path="grading_artifact/smoke/1.0.0")
        assert {Path(a.path).name for a in logged} >= {"manifest.json", "model_card.md", "pyfunc"}
    finally:
        tracking.reset()


# --------------------------------------------------------------------------------------------------------------
# CDNOW end to end


@pytest.fixture(scope="module")
def cdnow_exported(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cdnow_artifact")
    (root / "experiments").mkdir()
    shutil.copy(REPO / "experiments" / "cdnow.yaml", root / "experiments" / "cdnow.yaml")
    (root / "pyproject.toml").write_text("[project]\nname = 'scratch'\n")
    shutil.copytree(REPO / "data" / "raw" / "cdnow", root / "data" / "raw" / "cdnow")
    cfg = _train(root, "cdnow")
    return cfg, export_artifact(cfg)


@pytest.mark.slow
def test_cdnow_export_grade_reproduces_grades_and_onnx_parity(cdnow_exported, tmp_path: Path) -> None:
    cfg, path = cdnow_exported
    out = tmp_path / "grades.parquet"
    raw = cfg.root / "data" / "raw" / "cdnow" / "CDNOW_master.txt"
    result = runner.invoke(app, ["grade", str(path), "--transactions", str(raw), "--out", str(out)])
    assert result.exit_code == 0, result.output
    _same_grades(pd.read_parquet(out), pd.read_parquet(cfg.paths.processed / "grades.parquet"))
    parity = json.loads((path / "model/onnx/parity.json").read_text())
    assert parity["customers"] == 23570
    for booster in parity["boosters"].values():
        assert booster["within_tolerance"]
    assert parity["predicted_value"]["max_rel_error"] < 1e-4
    assert parity["n_grade_differs_away_from_boundary"] == 0 and parity["passed"]
    card = (path / "model_card.md").read_text()
    assert str(parity["n_within_error_of_boundary"]) in card


# --------------------------------------------------------------------------------------------------------------
# Forecast interval and grade range

PRED_COLUMNS = ("predicted_p10", "predicted_value", "predicted_p90")


def test_grades_carry_the_forecast_interval_and_the_grade_range(exported) -> None:
    """Every buyer gets a P10 ≤ point ≤ P90 and the grades at both ends bracket the grade; customers without
    purchases get none; the summary and the grade lists carry them."""
    cfg, _ = exported
    grades = pd.read_parquet(cfg.paths.processed / "grades.parquet")
    policy = GradePolicy.from_config(cfg.policy)
    rank = {g.code: k for k, g in enumerate(policy.grades)}
    buyers = grades["grade"] != policy.new_customer.code
    low, point, high = (grades.loc[buyers, c].to_numpy(dtype=float) for c in PRED_COLUMNS)
    assert np.isfinite(low).all() and np.isfinite(high).all()
    assert (low <= point + 1e-9).all() and (point <= high + 1e-9).all() and (high > point).any()
    here = grades.loc[buyers, "grade"].map(rank)
    assert (grades.loc[buyers, "grade_low"].map(rank) >= here).all(), "the grade at P10 is never higher"
    assert (grades.loc[buyers, "grade_high"].map(rank) <= here).all(), "the grade at P90 is never lower"
    assert grades.loc[~buyers, ["predicted_p10", "predicted_p90"]].isna().all().all()
    assert grades.loc[~buyers, ["grade_low", "grade_high"]].isna().all().all()

    summary = json.loads((cfg.paths.reports / "grades_summary.json").read_text(encoding="utf-8"))
    table = {row["grade"]: row for row in summary["grade_range"]}
    assert list(table) == [g.code for g in policy.grades]
    for code, row in table.items():
        if row["n"]:
            assert row["firm_share"] + row["may_fall_share"] + row["may_rise_share"] >= 1 - 1e-9
            assert row["revenue_p10_total"] <= row["revenue_total"] <= row["revenue_p90_total"]
            assert row["n"] == int((grades["grade"] == code).sum())
    card = (exported[1] / "model_card.md").read_text(encoding="utf-8")
    assert "## Forecast interval" in card and "predicted_p90" in card
    lists = sorted((cfg.paths.processed / "grade_lists").glob("grade_*.csv"))
    header = lists[0].read_text(encoding="utf-8-sig").splitlines()[0]
    assert "Predicted revenue, high (P90)" in header and "Grade at the low forecast" in header


def test_a_model_without_an_interval_grades_the_same_with_an_empty_range(exported, current_features) -> None:
    """A model stored before intervals existed (no ``interval`` state) grades exactly as before; only the
    interval and range columns are empty."""
    from segml.scoring import INTERVAL_COLUMNS, grade_features

    cfg, path = exported
    artifact = load_artifact(path)
    model = artifact.model
    full = grade_features(
        current_features, model, artifact.policy, artifact.reference, scorer=artifact.scorer
    )
    state = model.params_["interval"]
    assert state is not None and state["lower"] and state["upper"]
    try:
        model.params_["interval"] = None
        bare = grade_features(
            current_features, model, artifact.policy, artifact.reference, scorer=artifact.scorer
        )
    finally:
        model.params_["interval"] = state
    kept = [c for c in full.columns if c not in INTERVAL_COLUMNS]
    pd.testing.assert_frame_equal(bare[kept], full[kept], check_exact=True)
    assert bare[list(INTERVAL_COLUMNS)].isna().all().all()
