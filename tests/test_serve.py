"""Real-time scoring: ``mlflow models serve`` on an exported artifact's pyfunc answers ``POST /invocations``
with the grades ``segml grade`` gives for the same customers (docs/artifact.md, "Real-time scoring")."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_project

from segml import pipeline, tracking
from segml.config import load_experiment

BIN = Path(sys.executable).parent
PING_TIMEOUT_S = 120


def _env() -> dict[str, str]:
    env = tracking.scrubbed_environ()
    env.pop("SEGML_ROOT", None)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    # `mlflow models serve` starts uvicorn by name: the environment's bin folder must be on PATH
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _segml(root: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(BIN / "segml"), *args], cwd=root, env=_env(), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _json_value(value: object) -> object:
    """A cell as JSON: full float precision (``repr``), ISO dates, null for missing values."""
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return _json_value(value.item())
    return value


def split_payload(frame: pd.DataFrame) -> dict:
    """``{"dataframe_split": …}`` with every float exact: pandas' ``to_json`` rounds to 10 significant digits
    (15 at most), which moves a customer whose feature ties a frozen reference quantile to another rank."""
    rows = [[_json_value(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    return {"dataframe_split": {"columns": [str(c) for c in frame.columns], "data": rows}}


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode("utf-8"), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # the server's error body says what was wrong
        raise AssertionError(f"POST /invocations: HTTP {exc.code}: {exc.read()[:2000]!r}") from exc


@pytest.mark.slow
def test_served_pyfunc_gives_the_grades_of_segml_grade(tmp_path: Path) -> None:
    make_project(tmp_path)
    _segml(tmp_path, "ingest", "experiments/smoke.yaml")
    _segml(tmp_path, "train", "experiments/smoke.yaml")
    (artifact,) = sorted((tmp_path / "artifacts" / "smoke").iterdir())
    raw = tmp_path / "data" / "raw" / "smoke"
    cli_out = tmp_path / "cli_grades.parquet"
    _segml(
        tmp_path,
        "grade",
        str(artifact),
        "--transactions",
        str(raw / "transactions.parquet"),
        "--customers",
        str(raw / "customers.parquet"),
        "--out",
        str(cli_out),
    )
    cli = pd.read_parquet(cli_out)

    cfg = load_experiment(tmp_path / "experiments" / "smoke.yaml", root=tmp_path)
    features = pipeline.current_features(cfg)
    assert str(features["as_of"].iloc[0])[:10] == str(cli["as_of"].iloc[0])[:10]
    sample = features.iloc[np.r_[0:60, len(features) - 40 : len(features)]]  # buyers and new customers
    assert not sample["has_purchases"].all() and sample["has_purchases"].any()

    port = _free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as log_file:
        server = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", str(artifact / "pyfunc")]
            + ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,
            env=_env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the workers stop with it
        )
    try:
        started = time.monotonic()
        while True:
            assert server.poll() is None, f"server exited {server.returncode}: {log.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() - started < PING_TIMEOUT_S, f"no /ping answer: {log.read_text()[-2000:]}"
            time.sleep(1)
        body = _post(f"http://127.0.0.1:{port}/invocations", split_payload(sample))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)

    served = pd.DataFrame(body["predictions"])
    assert len(served) == len(sample)
    assert served["customer_id"].tolist() == sample["customer_id"].tolist()  # same rows, same order
    expected = cli.set_index("customer_id").loc[served["customer_id"]]
    assert served["grade"].tolist() == expected["grade"].tolist()
    assert served["grade_name"].tolist() == expected["grade_name"].tolist()
    np.testing.assert_allclose(served["score"], expected["score"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(served["predicted_value"], expected["predicted_value"], rtol=1e-9)
    assert served["artifact_version"].eq(artifact.name).all()
