"""A killed `segml train` never leaves its MLflow run RUNNING: SIGTERM ends it KILLED, and a run whose process
died without a word (SIGKILL) is marked KILLED by the next run's sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_project

from segml import tracking

SEGML = Path(sys.executable).parent / "segml"


def _env() -> dict[str, str]:
    env = tracking.scrubbed_environ()
    env.pop("SEGML_ROOT", None)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def _runs(root: Path) -> list:
    from mlflow import MlflowClient

    uri = tracking.tracking_uri_for(root)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("smoke")
    if experiment is None:
        return []
    return [
        r
        for r in client.search_runs([experiment.experiment_id], max_results=100)
        if "mlflow.parentRunId" not in r.data.tags
    ]


def _start_and_wait_for_parent(root: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [str(SEGML), "train", "experiments/smoke.yaml", "--no-backtest"],
        cwd=root,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # the features stage's completion record appears once the parent run exists (no database access here:
    # opening the store while the child creates it would race its schema creation)
    marker = root / "data" / "processed" / "smoke" / "stages" / "features.json"
    marker.unlink(missing_ok=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if marker.is_file():
            return process
        if process.poll() is not None:
            pytest.fail(f"segml train ended (rc {process.returncode}) before its run started")
        time.sleep(0.5)
    process.kill()
    pytest.fail("no RUNNING parent run within 120 s")


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    make_project(tmp_path)
    done = subprocess.run(
        [str(SEGML), "ingest", "experiments/smoke.yaml"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return tmp_path


def test_sigterm_ends_the_run_killed(project: Path) -> None:
    process = _start_and_wait_for_parent(project)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) != 0
    (run,) = [r for r in _runs(project) if r.data.tags.get(tracking.TAG_PID) == str(process.pid)]
    assert run.info.status == "KILLED"


def test_a_run_killed_without_a_word_is_swept_by_the_next(project: Path) -> None:
    process = _start_and_wait_for_parent(project)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    (stale,) = [r for r in _runs(project) if r.data.tags.get(tracking.TAG_PID) == str(process.pid)]
    assert stale.info.status == "RUNNING"
    done = subprocess.run(
        [str(SEGML), "train", "experiments/smoke.yaml", "--until", "features"],
        cwd=project,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (swept,) = [r for r in _runs(project) if r.data.tags.get(tracking.TAG_PID) == str(process.pid)]
    assert swept.info.status == "KILLED"
    assert all(r.info.status != "RUNNING" for r in _runs(project))


@pytest.mark.slow
def test_export_refuses_outputs_of_a_killed_run_with_another_seed(project: Path) -> None:
    """Train to the end, then a seed-99 run that stops after the tree (as a killed run would): export refuses."""

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(SEGML), *args], cwd=project, env=_env(), capture_output=True, text=True, timeout=900
        )

    trained = cli("train", "experiments/smoke.yaml", "--no-backtest")
    assert trained.returncode == 0, trained.stderr[-2000:]
    partial = cli("train", "experiments/smoke.yaml", "--set", "seed=99", "--until", "tree")
    assert partial.returncode == 0, partial.stderr[-2000:]
    refused = cli("export", "experiments/smoke.yaml")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "outputs of different runs" in refused.stderr
