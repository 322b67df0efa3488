"""`segml ingest` through the command line: a summary on success, one line and exit code 2 on bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segml.cli import app

EXPERIMENT = """\
data:
  transactions:
    - path: raw/{file}
      columns: {{customer_id: id, timestamp: ts, amount: {amount_column}}}
  cleaning:
    max_date: 2024-06-30
cutoffs:
  calibration_end: 2024-03-31
features:
  threads: 1
"""

GOOD_CSV = "id,ts,value\n001,2024-01-01,10.5\n002,2024-01-02,20\n,2024-01-03,5\n"


def _setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file: str, content: bytes | None, amount_column="value"
):
    """Project root in tmp_path holding raw/<file> (unless content is None) and experiments/exp.yaml."""
    monkeypatch.setenv("SEGML_ROOT", str(tmp_path))
    (tmp_path / "raw").mkdir(exist_ok=True)
    if content is not None:
        (tmp_path / "raw" / file).write_bytes(content)
    experiment = tmp_path / "experiments" / "exp.yaml"
    experiment.parent.mkdir(exist_ok=True)
    experiment.write_text(EXPERIMENT.format(file=file, amount_column=amount_column), encoding="utf-8")
    return experiment


def test_ingest_success_prints_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = _setup(tmp_path, monkeypatch, "tx.csv", GOOD_CSV.encode())
    result = CliRunner().invoke(app, ["ingest", str(experiment)])
    assert result.exit_code == 0, result.output
    assert "ingest exp: 3 rows in, 2 kept, 1 quarantined, 2 customers" in result.stdout
    report = json.loads((tmp_path / "data" / "interim" / "exp" / "dq_report.json").read_text())
    assert report["by_reason"] == {"missing_customer_id": 1}
    assert (tmp_path / "data" / "interim" / "exp" / "transactions.parquet").is_file()


def test_set_override_changes_a_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = _setup(tmp_path, monkeypatch, "tx.csv", GOOD_CSV.encode())
    result = CliRunner().invoke(
        app, ["ingest", str(experiment), "--set", "data.cleaning.max_date=2024-01-01"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "data" / "interim" / "exp" / "dq_report.json").read_text())
    assert report["by_reason"] == {"missing_customer_id": 1, "future_timestamp": 1}


BAD_FILES = {
    "missing column": ("tx.csv", GOOD_CSV.encode(), "amount", r"column 'amount' (role amount) not found"),
    "wrong type": (
        "tx.csv",
        b"id,ts,value\n1,2024-01-01,x\n2,2024-01-01,y\n",
        "value",
        "2 of 2 rows are not numbers",
    ),
    "empty": ("tx.csv", b"", "value", "file is empty"),
    "header only": ("tx.csv", b"id,ts,value\n", "value", "no data rows"),
    "unreadable": (
        "tx.parquet",
        b"\x00\x01garbage bytes, not parquet\xff" * 10,
        "value",
        "cannot read as parquet",
    ),
    "missing file": ("nowhere.csv", None, "value", "file not found"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_exits_2_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    file, content, amount_column, message = BAD_FILES[case]
    experiment = _setup(tmp_path, monkeypatch, file, content, amount_column)
    result = CliRunner().invoke(app, ["ingest", str(experiment)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(tmp_path / "raw" / file) in lines[0]
    assert message in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "data" / "interim" / "exp" / "dq_report.json").exists()


def test_bad_file_in_a_real_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = _setup(tmp_path, monkeypatch, "tx.parquet", b"not a parquet file at all")
    env = {**os.environ, "SEGML_ROOT": str(tmp_path), "COLUMNS": "80"}
    proc = subprocess.run(
        [sys.executable, "-m", "segml.cli", "ingest", str(experiment)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tx.parquet" in lines[0], proc.stderr
