"""`segml run`: notebooks executed by papermill, reports index, MLflow parent/nested runs and the registry."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from conftest import make_project
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from segml import monitor, pipeline, runner, tracking
from segml.config import load_experiment
from segml.errors import ConfigError
from segml.pipeline.context import evaluation_key
from segml.pipeline.selection import select_model

SEGML = Path(sys.executable).parent / "segml"
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: one nested run per tracked stage, the same under `segml run` and `segml train`
MODEL_RUNS = {
    "baselines",
    "clustering",
    "tree",
    "potential",
    "comparison",
    "evaluation",
    "grading",
    "monitoring",
}


def run_cli(root: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``segml <args>`` in ``root`` with no MLflow state inherited from this process."""
    env = tracking.scrubbed_environ()
    env.pop("SEGML_ROOT", None)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return subprocess.run(
        [str(SEGML), *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def mlflow_client(root: Path):
    from mlflow import MlflowClient

    uri = tracking.tracking_uri_for(root)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@dataclass
class SmokeRun:
    root: Path
    first: subprocess.CompletedProcess
    second: subprocess.CompletedProcess
    comparison_first: str
    comparison_second: str


@functools.cache
def smoke_run() -> SmokeRun:
    """`segml run experiments/smoke.yaml` twice in a fresh project (shared by the slow end-to-end tests)."""
    root = Path(tempfile.mkdtemp(prefix="segml-run-"))
    make_project(root)
    first = run_cli(root, "run", "experiments/smoke.yaml")
    assert first.returncode == 0, first.stderr[-3000:]
    comparison_first = (root / "reports" / "smoke" / "comparison.json").read_text(encoding="utf-8")
    second = run_cli(root, "run", "experiments/smoke.yaml")
    assert second.returncode == 0, second.stderr[-3000:]
    comparison_second = (root / "reports" / "smoke" / "comparison.json").read_text(encoding="utf-8")
    return SmokeRun(root, first, second, comparison_first, comparison_second)


# --------------------------------------------------------------------------------------------------------------
# End to end (slow: eight notebooks, twice)


@pytest.mark.slow
def test_run_writes_index_and_every_report() -> None:
    run = smoke_run()
    reports = run.root / "reports" / "smoke"
    index = reports / "index.html"
    assert index.is_file()
    htmls = sorted(p.name for p in reports.glob("0*.html"))
    assert len(htmls) >= 7
    assert htmls == sorted(f"{nb.stem}.html" for nb in NOTEBOOKS.glob("0*.ipynb"))
    text = index.read_text(encoding="utf-8")
    for html_name in htmls:
        assert f'href="{html_name}"' in text
    assert "not generated" not in text
    comparison = json.loads(run.comparison_first)
    for row in comparison:
        assert row["model"] in text
    assert str(index) in run.first.stdout and "make mlflow-ui" in run.first.stdout
    # executed notebooks carry outputs and no error; the source notebooks stay output-free
    executed = nbformat.read(reports / "07_grading_report.ipynb", as_version=4)
    assert (
        "exception" not in executed.metadata.get("papermill", {}) or not executed.metadata.papermill.exception
    )
    assert any(cell.get("outputs") for cell in executed.cells if cell.cell_type == "code")


@pytest.mark.slow
def test_second_run_reproduces_the_comparison_exactly() -> None:
    run = smoke_run()
    assert run.comparison_first == run.comparison_second
    assert len(json.loads(run.comparison_first)) == 7  # four baselines, three model families


@pytest.mark.slow
def test_mlflow_parent_runs_nested_runs_and_registry() -> None:
    run = smoke_run()
    client = mlflow_client(run.root)
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2  # one per `segml run`
    for parent in parents:
        assert parent.info.status == "FINISHED"
        tags = parent.data.tags
        assert tags[tracking.TAG_EXPERIMENT_FILE] == "experiments/smoke.yaml"
        assert tags[tracking.TAG_DATA_FINGERPRINT].startswith("sha256:")
        assert tracking.TAG_GIT_COMMIT in tags
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert {c.info.run_name for c in children} == MODEL_RUNS
        potential = next(c for c in children if c.info.run_name == "potential")
        assert 0 < potential.data.metrics["normalized_gini"] <= 1
        assert "potential.top20_capture" in potential.data.metrics
        artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "notebooks")}
        assert "notebooks/07_grading_report.html" in artifacts
        assert "notebooks/05_potential_value.ipynb" in artifacts
        child_artifacts = {a.path for a in client.list_artifacts(potential.info.run_id, "notebook")}
        assert child_artifacts == {"notebook/05_potential_value.html", "notebook/05_potential_value.ipynb"}
    # both runs registered a version; equal metric on the same evaluation: the first stays champion
    versions = sorted(int(v.version) for v in client.search_model_versions("name='smoke-grading'"))
    assert versions == [1, 2]
    assert str(client.get_model_version_by_alias("smoke-grading", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("smoke-grading", "challenger").version) == "2"
    tags = client.get_model_version("smoke-grading", "1").tags
    assert tags[tracking.VERSION_TAG_EVALUATION_KEY] == "normalized_gini@holdout:2025-06-30..2026-06-30"


@pytest.mark.slow
def test_promote_makes_a_version_champion() -> None:
    run = smoke_run()
    promoted = run_cli(run.root, "promote", "smoke-grading", "2")
    assert promoted.returncode == 0, promoted.stderr
    client = mlflow_client(run.root)
    assert str(client.get_model_version_by_alias("smoke-grading", "champion").version) == "2"
    missing = run_cli(run.root, "promote", "smoke-grading", "9")
    assert missing.returncode == 2
    assert "no version 9" in missing.stderr and "Traceback" not in missing.stderr
    run_cli(run.root, "promote", "smoke-grading", "1")  # leave the store as the other tests expect


# --------------------------------------------------------------------------------------------------------------
# Failures, --only (fast: one or two tiny notebooks)


def _notebook(path: Path, *sources: str) -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "segml", "display_name": "segml", "language": "python"}
    parameters = new_code_cell('experiment = "experiments/smoke.yaml"\noverrides = []\nparent_run_id = None')
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell(f"# {path.stem}"), parameters, *(new_code_cell(s) for s in sources)]
    nbformat.write(nb, path)


@pytest.fixture()
def tiny_project(tmp_path: Path) -> Path:
    make_project(tmp_path)
    books = tmp_path / "notebooks"
    books.mkdir()
    _notebook(books / "01_ok.ipynb", "print('fine')")
    _notebook(books / "02_fails.ipynb", "x = 1", "raise ValueError('deliberate failure 高净值')")
    _notebook(books / "03_never.ipynb", "print('must not run')")
    return tmp_path


def test_failing_notebook_names_notebook_and_cell(tiny_project: Path) -> None:
    result = run_cli(tiny_project, "run", "experiments/smoke.yaml")
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "notebook 02_fails.ipynb failed in cell 4" in message
    assert "ValueError: deliberate failure 高净值" in message
    assert "not run: 03_never.ipynb" in message
    assert "Traceback" not in result.stderr
    reports = tiny_project / "reports" / "smoke"
    partial = nbformat.read(reports / "02_fails.ipynb", as_version=4)
    assert partial.metadata.papermill.exception
    assert (reports / "01_ok.html").is_file()
    assert not (reports / "02_fails.html").exists()
    assert not (reports / "03_never.ipynb").exists()
    client = mlflow_client(tiny_project)
    experiment = client.get_experiment_by_name("smoke")
    (parent,) = client.search_runs([experiment.experiment_id])
    assert parent.info.status == "FAILED"
    assert parent.data.tags["segml.failed_notebook"] == "02_fails.ipynb"
    assert client.search_registered_models() == []


def test_only_runs_the_named_notebooks(tiny_project: Path) -> None:
    result = run_cli(tiny_project, "run", "experiments/smoke.yaml", "--only", "01,3")
    assert result.returncode == 0, result.stderr
    reports = tiny_project / "reports" / "smoke"
    assert (reports / "01_ok.html").is_file() and (reports / "03_never.html").is_file()
    assert not (reports / "02_fails.ipynb").exists()
    index = (reports / "index.html").read_text(encoding="utf-8")
    assert "02_fails.html" in index and "not generated" in index  # listed, marked missing
    assert "registered model" not in result.stdout  # no potential model fitted: nothing registered

    unknown = run_cli(tiny_project, "run", "experiments/smoke.yaml", "--only", "07")
    assert unknown.returncode == 2
    assert "notebook 07 not found" in unknown.stderr and "available: 01, 02, 03" in unknown.stderr


# --------------------------------------------------------------------------------------------------------------
# Units


def test_select_notebooks_and_settings(tmp_path: Path) -> None:
    yaml_path = make_project(tmp_path)
    books = tmp_path / "notebooks"
    books.mkdir()
    for name in ("01_a", "02_b", "10_c"):
        _notebook(books / f"{name}.ipynb", "pass")
    (books / "notes.ipynb").write_text("{}")  # no number: never run
    cfg = load_experiment(yaml_path, root=tmp_path)
    assert [p.name for p in runner.select_notebooks(cfg)] == ["01_a.ipynb", "02_b.ipynb", "10_c.ipynb"]
    assert [p.name for p in runner.select_notebooks(cfg, "10, 1")] == ["01_a.ipynb", "10_c.ipynb"]
    with pytest.raises(ConfigError, match="'x' is not a notebook number"):
        runner.select_notebooks(cfg, "x")
    cfg = load_experiment(
        yaml_path, ["notebooks.run=[2]", "tracking.registered_model=shop-potential"], tmp_path
    )
    assert [p.name for p in runner.select_notebooks(cfg)] == ["02_b.ipynb"]
    assert (cfg.mlflow_experiment, cfg.registered_model) == ("smoke", "shop-potential")
    with pytest.raises(ConfigError, match="unknown key 'tracking.model'"):
        load_experiment(yaml_path, ["tracking.model=x"], tmp_path)


def test_source_notebooks_are_committed_clean() -> None:
    books = sorted(NOTEBOOKS.glob("0*.ipynb"))
    assert [p.name[:2] for p in books] == [f"0{i}" for i in range(1, 9)]
    for path in books:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec["name"] == "segml"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), path.name
        assert all(not c.outputs and c.execution_count is None for c in code), path.name
        assert nb.metadata.segml["audience"] in ("analyst", "stakeholder")
    audiences = {p.stem[:2]: nbformat.read(p, as_version=4).metadata.segml["audience"] for p in books}
    assert audiences["07"] == "stakeholder"


def test_psi_and_migration() -> None:
    rng = np.random.default_rng(3)
    same = rng.gamma(2.0, 50.0, 5000)
    assert monitor.population_stability_index(same, same) == pytest.approx(0.0, abs=1e-12)
    shifted = monitor.population_stability_index(same, same * 3)
    assert shifted > 0.25 and monitor.psi_band(shifted) == "major shift"
    table = monitor.psi_table(
        pd.DataFrame({"a": same, "b": same}), pd.DataFrame({"a": same, "b": same * 3}), ["a", "b"]
    )
    assert list(table["feature"]) == ["b", "a"] and list(table["band"]) == ["major shift", "stable"]
    before = pd.DataFrame({"customer_id": ["1", "2", "3", "4"], "grade": ["A", "B", "B", "C"]})
    after = pd.DataFrame({"customer_id": ["1", "2", "3", "5"], "grade": ["A", "A", "C", "N"]})
    matrix = monitor.migration_matrix(before, after, ["A", "B", "C", "N"])
    assert matrix.loc["B", "A"] == 1 and matrix.loc["B", "C"] == 1 and matrix.loc["A", "A"] == 1
    assert matrix.loc[monitor.NOT_GRADED_BEFORE, "N"] == 1
    assert int(matrix.to_numpy().sum()) == len(after)


def test_open_experiment_resolves_against_the_project_root(tmp_path: Path, monkeypatch) -> None:
    make_project(tmp_path)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # where JupyterLab starts a kernel
    monkeypatch.delenv("SEGML_ROOT", raising=False)
    cfg = pipeline.open_experiment("experiments/smoke.yaml", ["seed=5"], seed=None, configure_tracking=False)
    assert cfg.root == tmp_path.resolve() and cfg.seed == 5
    assert pipeline.open_experiment("experiments/smoke.yaml", [], 9, configure_tracking=False).seed == 9


def test_select_model_record(tmp_path: Path) -> None:
    cfg = load_experiment(make_project(tmp_path), root=tmp_path)
    comparison = [
        {
            "model": "rfm",
            "normalized_gini": 0.7,
            "gini_diff": 0.0,
            "gini_diff_ci": [0, 0],
            "gini_diff_vs": "rfm",
        },
        {
            "model": "potential",
            "normalized_gini": 0.8,
            "gini_diff": 0.1,
            "gini_diff_ci": [0.05, 0.15],
            "gini_diff_vs": "rfm",
        },
    ]
    record = select_model(cfg, comparison)
    assert record["selected"] == "potential" and record["beats_baselines"] is True
    assert record["ranking"] == ["potential", "rfm"]
    assert record["evaluation_key"] == evaluation_key(cfg)
    comparison[1]["gini_diff_ci"] = [-0.01, 0.2]
    assert select_model(cfg, comparison)["beats_baselines"] is False


def test_kernel_env_scrubs_inherited_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_RUN_ID", "stale")
    tracking.configure(tmp_path, "scratch")
    try:
        parent = tracking.start_parent_run("scratch", {})
        env = runner.kernel_env(parent, tmp_path)
        assert env["MLFLOW_RUN_ID"] is None and env[tracking.PARENT_RUN_ENV] == parent
        assert env["SEGML_ROOT"] == str(tmp_path) and env["MLFLOW_TRACKING_URI"].startswith("sqlite:///")
        tracking.end_parent_run(parent)
    finally:
        tracking.reset()
        os.environ.pop("MLFLOW_RUN_ID", None)
