"""``engine: spark`` end to end on the smoke experiment: ``segml grade --engine spark`` on ``local[2]`` and
ingest, features and grades on a real standalone cluster (one master, one worker on 127.0.0.1), both compared
with the DuckDB path: exactly for ids, dates, counts, reasons and grades, within 1e-9 relative for money.
Ingest parity on ``local[2]`` over many more inputs is in tests/test_ingest_spark.py."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_project
from typer.testing import CliRunner

from segml.artifact import export_artifact, load_artifact
from segml.artifact.load import grade
from segml.cli import app
from segml.config import SparkSettings, load_experiment
from segml.errors import InputFileError, SegmlError
from segml.features import build_features, run_features, spark_session, training_frame
from segml.ingest import run_ingest
from segml.pipeline import run_pipeline, stages_between

pytestmark = [pytest.mark.slow, pytest.mark.spark]

runner = CliRunner()
#: small resources: the tests share two cores with the rest of the suite
SMALL = {"spark.driver.memory": "1g", "spark.executor.memory": "512m", "spark.sql.shuffle.partitions": "2"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("pyspark", reason="the spark extra is not installed")
    root = tmp_path_factory.mktemp("spark_project")
    make_project(root)
    cfg = load_experiment(root / "experiments" / "smoke.yaml", [], root=root)
    run_ingest(cfg)
    run_pipeline(cfg, stages=stages_between(until="monitor"), backtest=False, progress=False, track=False)
    return cfg, export_artifact(cfg)


def _raw(cfg) -> tuple[Path, Path]:
    raw = cfg.root / "data" / "raw" / "smoke"
    return raw / "transactions.parquet", raw / "customers.parquet"


def assert_same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same columns and rows; float columns holding whole numbers in ``expected`` (counts, days) exactly,
    other floats (money, ranks, scores) within 1e-9 relative; everything else exactly."""
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected)
    for name in expected.columns:
        left, right = got[name], expected[name]
        if pd.api.types.is_float_dtype(right):
            values = right.to_numpy(dtype=float)
            finite = np.isfinite(values)
            if np.array_equal(values[finite], np.round(values[finite])):
                np.testing.assert_array_equal(left.to_numpy(dtype=float), values, err_msg=name)
            else:
                np.testing.assert_allclose(
                    left.to_numpy(dtype=float), values, rtol=1e-9, atol=0, err_msg=name
                )
        else:
            pd.testing.assert_series_equal(left, right, check_exact=True, check_names=False, obj=name)


def _read_spark_grades(folder: Path, expected: pd.DataFrame) -> pd.DataFrame:
    got = pd.read_parquet(folder)
    got["grade"] = got["grade"].astype(str)  # a partition column comes back as a category
    got = got[list(expected.columns)].sort_values("customer_id").reset_index(drop=True)
    got["as_of"] = got["as_of"].astype(expected["as_of"].dtype)
    return got


def _duckdb_grades(cfg, path: Path) -> pd.DataFrame:
    transactions, customers = _raw(cfg)
    return grade(load_artifact(path), transactions, customers).reset_index(drop=True)


# --------------------------------------------------------------------------------------------------------------
# local[2]


def test_grade_cli_on_local_spark_equals_duckdb(exported, tmp_path: Path, monkeypatch) -> None:
    cfg, path = exported
    transactions, customers = _raw(cfg)
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    out = tmp_path / "grades"
    args = ["grade", str(path), "--engine", "spark", "--transactions", str(transactions)]
    args += ["--customers", str(customers), "--out", str(out), "--partition-by", "grade"]
    for key, value in SMALL.items():
        args += ["--spark-conf", f"{key}={value}"]
    try:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "on Spark (local[2]): 800 customers" in result.output
        # a cutoff before every purchase: one line, and no output folder left behind
        from segml.artifact.spark_grade import grade_on_spark

        early = tmp_path / "early"
        with pytest.raises(InputFileError, match="no customer has data on or before 1990-01-01"):
            grade_on_spark(path, transactions, early, customers, as_of="1990-01-01")
        assert not early.exists() and not list(tmp_path.glob(".early.*"))
        # an active session on another master is refused in one line, not replaced behind the user's back
        with pytest.raises(SegmlError, match=r"a Spark session is already active on local\[2\]"):
            spark_session(SparkSettings(master="local[1]"))
    finally:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [f"grade={g}" for g in "ABCDEN"]
    expected = _duckdb_grades(cfg, path)
    got = _read_spark_grades(out, expected)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)  # local[2]: bit for bit
    assert not list(tmp_path.glob(".grades.*.tmp"))  # written next to the target, then renamed


def test_grade_cli_refuses_what_spark_does_not_do(exported, tmp_path: Path) -> None:
    cfg, path = exported
    transactions, _ = _raw(cfg)
    base = ["grade", str(path), "--transactions", str(transactions)]
    cases = [
        (["--engine", "spark", "--out", str(tmp_path / "g.csv")], "--engine spark: a .csv --out"),
        (["--engine", "spark", "--refit-boundaries", "--out", str(tmp_path / "g")], "--refit-boundaries"),
        (["--partition-by", "grade", "--out", str(tmp_path / "g.parquet")], "--partition-by needs --engine"),
        (["--engine", "polars", "--out", str(tmp_path / "g.parquet")], "--engine: 'polars' is not one of"),
        (
            ["--engine", "spark", "--master", "mesos://x:1", "--out", str(tmp_path / "g")],
            "not a Spark master",
        ),
    ]
    for extra, message in cases:
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code != 0 and message in result.output, (extra, result.output)
        assert "Traceback" not in result.output


# --------------------------------------------------------------------------------------------------------------
# A standalone cluster on loopback


@pytest.fixture(scope="module")
def cluster(exported, tmp_path_factory: pytest.TempPathFactory):
    """``spark://127.0.0.1:P`` with one worker (1 core, 1 GB); both stopped by PID at teardown."""
    from segml.spark_cluster import StandaloneCluster

    src = str(Path(__import__("segml").__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        # executors import segml from the same sources as the driver
        "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p),
    }
    with StandaloneCluster(tmp_path_factory.mktemp("spark_cluster"), cores=1, memory="1g", env=env) as master:
        yield master


@pytest.fixture(scope="module")
def cluster_settings(cluster: str) -> SparkSettings:
    conf = {**SMALL, "spark.cores.max": "1", "spark.driver.host": "127.0.0.1"}
    conf["spark.driver.bindAddress"] = "127.0.0.1"
    return SparkSettings(master=cluster, app_name="segml-test", conf=conf)


def test_ingest_features_and_grades_on_a_standalone_cluster(
    exported, cluster: str, cluster_settings: SparkSettings, tmp_path: Path, monkeypatch
) -> None:
    cfg, path = exported
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    as_of = pd.Timestamp(json.loads(cfg.paths.dq_report.read_text())["date_max"]).date()
    cutoffs = [cfg.cutoffs.calibration_end, as_of]
    # the cluster ingests the raw files into a root of its own; features and grades then read its output
    cluster_root = tmp_path / "cluster_root"
    (cluster_root / "data").mkdir(parents=True)
    (cluster_root / "data" / "raw").symlink_to(cfg.root / "data" / "raw")
    (cluster_root / "experiments").symlink_to(cfg.root / "experiments")
    session = spark_session(cluster_settings)
    try:
        assert session.sparkContext.master == cluster_settings.master
        assert session.conf.get("spark.sql.session.timeZone") == "UTC"
        t0 = time.perf_counter()
        # the experiment's own settings: `engine: spark` and a `spark:` section naming the cluster
        on_yaml = load_experiment(
            cluster_root / "experiments" / cfg.source_path.name,
            ["engine=spark", f"spark.master={cluster}"],
            root=cluster_root,
        )
        on_yaml.spark.conf.update(cluster_settings.conf)
        ingested = run_ingest(on_yaml)
        transactions, customers = ingested.transactions_path, ingested.customers_path
        features_file, n_customers = run_features(on_yaml, as_of)
        on_cluster = build_features(transactions, as_of, cfg.features, customers, engine="spark")
        frame_on_cluster = training_frame(
            transactions, cutoffs, 90, cfg.features, customers, engine="spark", spark=cluster_settings
        )
        raw_tx, raw_customers = _raw(cfg)
        out = tmp_path / "grades"
        from segml.artifact.spark_grade import grade_on_spark

        counts = grade_on_spark(
            path, raw_tx, out, raw_customers, partition_by=["grade"], spark=cluster_settings
        )
        seconds = time.perf_counter() - t0
    finally:
        session.stop()
    print(f"standalone cluster: ingest, features, training frame and grades in {seconds:.1f} s")
    # ingest on the cluster wrote what ingest on DuckDB wrote: the same rows, reasons and report
    for name in sorted(p.name for p in cfg.paths.interim.iterdir()):
        duck_file, cluster_file = cfg.paths.interim / name, on_yaml.paths.interim / name
        if name.endswith(".parquet"):
            assert_same(pd.read_parquet(cluster_file), pd.read_parquet(duck_file))
        elif name.endswith(".json"):
            assert json.loads(cluster_file.read_text()) == json.loads(duck_file.read_text()), name
    transactions, customers = cfg.paths.clean_transactions, cfg.paths.clean_customers
    duck = build_features(transactions, as_of, cfg.features, customers)
    assert len(duck) == 800
    assert_same(on_cluster, duck)
    assert n_customers == 800 and on_yaml.features.engine == "spark"
    assert_same(pd.read_parquet(features_file), duck)
    assert_same(frame_on_cluster, training_frame(transactions, cutoffs, 90, cfg.features, customers))
    expected = _duckdb_grades(cfg, path)
    got = _read_spark_grades(out, expected)
    assert counts == expected["grade"].value_counts().sort_index().to_dict()
    assert got["grade"].tolist() == expected["grade"].tolist()
    assert_same(got, expected)
