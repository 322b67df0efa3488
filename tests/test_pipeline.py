"""The stage layer: declared stages, settings parameters, completion records, notebooks that drive stages,
and `segml train` / `segml run` giving the same outputs and the same MLflow runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import make_project
from test_run import run_cli

from segml import pipeline, runner, tracking
from segml.config import load_experiment
from segml.errors import ConfigError, SegmlError
from segml.pipeline.stages import check_consistent, record_path, with_settings

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SEGML = Path(sys.executable).parent / "segml"
#: text no notebook code cell may contain: notebooks drive stages, they never write, log or reach inside
FORBIDDEN_IN_NOTEBOOKS = (
    "mlflow.",
    "tracking.",
    ".to_parquet(",
    "write_",
    "storage.write",
    "train.grade_customers",
)


def test_stages_are_declared_once_in_order() -> None:
    assert pipeline.STAGE_NAMES == (
        "ingest",
        "features",
        "baselines",
        "clustering",
        "tree",
        "potential",
        "select",
        "evaluate",
        "grade",
        "monitor",
        "export",
    )
    assert pipeline.stages_between("select", "grade") == ["select", "evaluate", "grade"]
    with pytest.raises(ConfigError, match="--from-stage: unknown stage 'selct'"):
        pipeline.stages_between("selct")


def test_stage_parameters_are_validated_like_the_yaml(smoke_project: Path) -> None:
    cfg = load_experiment(smoke_project / "experiments" / "smoke.yaml", root=smoke_project)
    changed = with_settings(cfg, "models.clustering", {"k_max": 4})
    assert changed.models.clustering.k_max == 4 and cfg.models.clustering.k_max == 5
    with pytest.raises(ConfigError, match=r"unknown key 'models\.clustering\.k_maxx'"):
        with_settings(cfg, "models.clustering", {"k_maxx": 4})
    with pytest.raises(ConfigError, match=r"models\.clustering\.k_max: 1 is below the minimum 2"):
        with_settings(cfg, "models.clustering", {"k_max": 1})


def test_notebooks_drive_stages_and_never_write_or_log() -> None:
    for path in sorted(NOTEBOOKS.glob("0*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        for text in FORBIDDEN_IN_NOTEBOOKS:
            assert text not in code, f"{path.name} contains {text!r}"
        assert "._" not in code.replace("self._", ""), f"{path.name} reaches into a private name"
        role = runner.notebook_role(path)
        assert role.drives or role.reads, path.name
        for stage in role.drives:
            assert f'pipeline.run_stage("{stage}", cfg' in code, f"{path.name} does not run {stage}"
        if not role.drives:
            assert "run_stage(" not in code, f"{path.name} reads only"
        if nb.metadata.segml["audience"] == "stakeholder":
            assert not role.drives, f"stakeholder notebook {path.name} must only read"


def test_every_stage_after_features_is_driven_or_run_in_process() -> None:
    books = sorted(NOTEBOOKS.glob("0*.ipynb"))

    class _Cfg:  # plan_run reads only the notebooks' metadata
        pass

    plan = runner.plan_run(_Cfg(), books, full=True)
    stages = [item for kind, item in plan if kind == "stage"]
    driven = [s for p in books for s in runner.notebook_role(p).drives]
    assert sorted(stages + driven) == sorted(pipeline.STAGE_NAMES[2:])
    order = [item.name if kind == "notebook" else item for kind, item in plan]
    assert order.index("grade") < order.index("07_grading_report.ipynb")
    assert order.index("monitor") < order.index("08_monitoring.ipynb")
    assert order[-1] == "export"


def test_unknown_key_fails_at_load_for_every_command(tmp_path: Path) -> None:
    make_project(tmp_path)
    result = run_cli(tmp_path, "ingest", "experiments/smoke.yaml", "--set", "models.potentail.x=1")
    assert result.returncode == 2
    assert "models.potentail" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "interim").exists()  # refused before reading any data


def test_completion_records_refuse_outputs_of_different_runs(smoke_project: Path, tmp_path: Path) -> None:
    root = tmp_path / "project"
    shutil.copytree(
        smoke_project,
        root,
        ignore=shutil.ignore_patterns("mlflow.db", "mlruns", "artifacts", "interim", "processed"),
    )
    cfg = load_experiment(root / "experiments" / "smoke.yaml", root=root)
    pipeline.run_stage("ingest", cfg, track=False)
    pipeline.run_pipeline(cfg, stages=["tree"], progress=False, track=False)
    check_consistent(cfg, ["tree"])
    other = load_experiment(root / "experiments" / "smoke.yaml", ["seed=99"], root=root)
    pipeline.run_pipeline(other, stages=["baselines"], progress=False, track=False)
    with pytest.raises(SegmlError, match="outputs of different runs"):
        check_consistent(cfg, ["tree", "baselines"])
    with pytest.raises(SegmlError, match="stage 'clustering' has not finished"):
        check_consistent(cfg, ["clustering"])
    # an output rewritten after its stage finished (a killed later run) is refused
    predictions = cfg.paths.processed / "holdout_predictions" / "tree.parquet"
    predictions.write_bytes(predictions.read_bytes() + b"\0")
    with pytest.raises(SegmlError, match="changed since stage 'tree' finished"):
        check_consistent(cfg, ["tree"])
    assert json.loads(record_path(cfg, "tree").read_text())["stage"] == "tree"


@pytest.mark.slow
def test_train_under_segml_root_logs_parent_and_nested_runs(tmp_path: Path) -> None:
    """The acceptance path of the pipeline issue: synth, ingest, train with $SEGML_ROOT set."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(REPO / "experiments", root / "experiments")
    env = tracking.scrubbed_environ()
    env.update({"SEGML_ROOT": str(root), "MLFLOW_DISABLE_TELEMETRY": "true"})
    cwd = tmp_path  # anywhere: every output goes under $SEGML_ROOT
    for args in (
        ["synth", "--customers", "600", "--seed", "5", "--out", str(root / "data" / "raw" / "smoke")],
        ["ingest", str(root / "experiments" / "smoke.yaml")],
        ["train", str(root / "experiments" / "smoke.yaml")],
    ):
        done = subprocess.run(
            [str(SEGML), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert (root / "reports" / "smoke" / "selection.json").is_file()
    from mlflow import MlflowClient

    uri = tracking.tracking_uri_for(root)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED"
    children = {r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert children >= {"baselines", "clustering", "tree", "potential", "comparison", "grading"}
    clustering = next(r for r in runs if r.info.run_name == "clustering")
    assert clustering.data.params["k_max"] == "5"  # settings logged from the dataclass, not by hand


@pytest.mark.slow
def test_train_and_run_give_byte_identical_outputs(tmp_path: Path) -> None:
    make_project(tmp_path)
    shutil.copytree(NOTEBOOKS, tmp_path / "notebooks")
    compared = (
        Path("reports/smoke/comparison.json"),
        Path("reports/smoke/selection.json"),
        Path("data/processed/smoke/grades.parquet"),
    )
    ran = run_cli(tmp_path, "run", "experiments/smoke.yaml")
    assert ran.returncode == 0, ran.stderr[-3000:]
    from_run = {p: (tmp_path / p).read_bytes() for p in compared}
    trained = run_cli(tmp_path, "train", "experiments/smoke.yaml")
    assert trained.returncode == 0, trained.stderr[-3000:]
    for path in compared:
        assert (tmp_path / path).read_bytes() == from_run[path], path


def test_run_from_stage_skips_the_notebooks_of_earlier_stages() -> None:
    books = sorted(NOTEBOOKS.glob("0*.ipynb"))
    plan = runner.plan_run(None, books, full=True, from_stage="select")
    order = [item.name if kind == "notebook" else item for kind, item in plan]
    assert order[0] == "06_model_comparison.ipynb"
    assert not any(name.startswith(("01_", "02_", "03_", "04_", "05_")) for name in order)
    assert order[-1] == "export" and "grade" in order


def test_features_as_of_outside_the_data(tmp_path: Path) -> None:
    make_project(tmp_path)
    assert run_cli(tmp_path, "ingest", "experiments/smoke.yaml").returncode == 0
    before = run_cli(tmp_path, "features", "experiments/smoke.yaml", "--as-of", "1990-01-31")
    assert before.returncode == 2 and "before the first clean transaction" in before.stderr
    assert "Traceback" not in before.stderr
    after = run_cli(tmp_path, "features", "experiments/smoke.yaml", "--as-of", "2031-01-31")
    assert after.returncode == 0 and "after the last clean transaction" in after.stderr


def test_the_grade_and_monitor_stages_share_one_data_end_feature_table(monkeypatch) -> None:
    """Consecutive calls for one cutoff build the features once; another cutoff replaces the kept table; a
    column added to one caller's frame does not reach the next."""
    import datetime as dt
    from types import SimpleNamespace

    import pandas as pd

    from segml.pipeline import context

    calls: list[dt.date] = []

    def fake_build(transactions, cutoff, spec, customers, **kwargs):
        calls.append(cutoff)
        return pd.DataFrame({"customer_id": ["a", "b"], "as_of": [pd.Timestamp(cutoff)] * 2})

    monkeypatch.setattr(context.features, "build_features", fake_build)
    ctx = context.TrainContext(
        SimpleNamespace(features="settings"), None, Path("t.parquet"), None, pd.DataFrame(), None
    )
    end, other = dt.date(2024, 6, 30), dt.date(2024, 3, 31)
    first = ctx.features_at(end)
    first["added"] = 1
    second = ctx.features_at(end)
    assert calls == [end] and "added" not in second.columns
    ctx.features_at(other)
    ctx.features_at(end)
    assert calls == [end, other, end]
