"""Experiment YAML loading: strict keys, types, overrides, paths."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from segml.config import ExperimentConfig, SparkSettings, apply_override, load_experiment
from segml.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["cdnow", "synthetic"])
def test_shipped_experiments_load(name: str) -> None:
    cfg = load_experiment(ROOT / "experiments" / f"{name}.yaml", root=ROOT)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.name == name
    assert cfg.paths.interim == ROOT / "data" / "interim" / name
    assert cfg.paths.features_file(dt.date(1997, 9, 30)).name == "features_1997-09-30.parquet"


def test_cdnow_values() -> None:
    cfg = load_experiment(ROOT / "experiments" / "cdnow.yaml", root=ROOT)
    src = cfg.data.transactions[0]
    assert src.format == "whitespace"
    assert src.columns["customer_id"] == "customer_id"
    assert cfg.cutoffs.calibration_end == dt.date(1997, 9, 30)
    assert cfg.cutoffs.horizon_days == 273
    assert cfg.data.cleaning.zero_amount == "keep"
    assert cfg.resolve(src.path) == ROOT / "data/raw/cdnow/CDNOW_master.txt"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = """
data:
  transactions:
    - path: t.csv
      columns: {customer_id: id, timestamp: ts, amount: amt}
cutoffs:
  calibration_end: 2024-01-31
"""


def test_unknown_key_names_dotted_path(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "  horizon_dayz: 10\n")
    with pytest.raises(ConfigError, match=r"unknown key 'cutoffs\.horizon_dayz'"):
        load_experiment(path)


def test_unknown_key_in_list_item(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL.replace("path: t.csv", "path: t.csv\n      colour: red"))
    with pytest.raises(ConfigError, match=r"data\.transactions\.0\.colour"):
        load_experiment(path)


def test_wrong_types_are_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL.replace("2024-01-31", "next tuesday"))
    with pytest.raises(ConfigError, match=r"cutoffs\.calibration_end: expected a date"):
        load_experiment(path)
    path = _write(tmp_path, MINIMAL + "features:\n  windows: [30, ninety]\n")
    with pytest.raises(ConfigError, match=r"features\.windows\.1: expected an integer"):
        load_experiment(path)
    path = _write(tmp_path, MINIMAL + "data_x: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'data_x'"):
        load_experiment(path)


def test_literal_choices(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "features:\n  engine: polars\n")
    with pytest.raises(ConfigError, match=r"features\.engine: 'polars' is not one of 'duckdb', 'spark'"):
        load_experiment(path)


def test_missing_required(tmp_path: Path) -> None:
    path = _write(tmp_path, "data:\n  transactions: []\n")
    with pytest.raises(ConfigError, match="missing required key 'cutoffs'"):
        load_experiment(path)


def test_overrides_are_validated(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL)
    cfg = load_experiment(path, ["data.transactions.0.path=other.parquet", "cutoffs.horizon_days=90"])
    assert cfg.data.transactions[0].path == "other.parquet"
    assert cfg.cutoffs.horizon_days == 90
    with pytest.raises(ConfigError, match="cutoffs.horizon_days: expected an integer"):
        load_experiment(path, ["cutoffs.horizon_days=soon"])
    with pytest.raises(ConfigError, match="no list item"):
        load_experiment(path, ["data.transactions.3.path=x"])
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_experiment(path, ["cutoffs.horizon_days"])


def test_override_creates_nested_section() -> None:
    raw: dict = {"data": {}}
    apply_override(raw, "data.customers.path=c.parquet")
    assert raw == {"data": {"customers": {"path": "c.parquet"}}}


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="experiment file not found"):
        load_experiment(tmp_path / "nope.yaml")
    path = _write(tmp_path, "data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(path)


# --------------------------------------------------------------------------------------------------------------
# engine and spark:


def test_engine_and_its_alias(tmp_path: Path) -> None:
    cfg = load_experiment(_write(tmp_path, MINIMAL))
    assert cfg.engine == cfg.features.engine == "duckdb"
    assert cfg.spark == SparkSettings(master="local[2]", app_name="segml", conf={}, warehouse_dir=None)
    cfg = load_experiment(_write(tmp_path, MINIMAL + "engine: spark\n"))
    assert cfg.engine == cfg.features.engine == "spark"
    cfg = load_experiment(_write(tmp_path, MINIMAL + "features:\n  engine: spark\n"))
    assert cfg.engine == cfg.features.engine == "spark"
    cfg = load_experiment(_write(tmp_path, MINIMAL + "engine: spark\nfeatures:\n  engine: spark\n"))
    assert cfg.engine == "spark"
    assert load_experiment(_write(tmp_path, MINIMAL), ["engine=spark"]).features.engine == "spark"
    path = _write(tmp_path, MINIMAL + "engine: spark\nfeatures:\n  engine: duckdb\n")
    with pytest.raises(ConfigError, match=r"engine: 'spark' differs from features\.engine: 'duckdb'") as err:
        load_experiment(path)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"engine: 'polars' is not one of 'duckdb', 'spark'"):
        load_experiment(_write(tmp_path, MINIMAL + "engine: polars\n"))
    # built in code: either place naming spark is enough
    import dataclasses

    from segml.config import FeatureConfig

    base = load_experiment(_write(tmp_path, MINIMAL))
    built = dataclasses.replace(base, features=FeatureConfig(engine="spark"))
    assert built.engine == built.features.engine == "spark"
    built = dataclasses.replace(base, engine="spark")
    assert built.engine == built.features.engine == "spark"


def test_spark_section(tmp_path: Path) -> None:
    text = MINIMAL + textwrap.dedent(
        """
        engine: spark
        spark:
          master: spark://10.0.0.5:7077
          app_name: grading
          conf: {spark.executor.memory: 4g, spark.sql.shuffle.partitions: 64}
          warehouse_dir: /shared/warehouse
        """
    )
    cfg = load_experiment(_write(tmp_path, text))
    assert cfg.spark.master == "spark://10.0.0.5:7077" and cfg.spark.app_name == "grading"
    assert cfg.spark.conf == {"spark.executor.memory": "4g", "spark.sql.shuffle.partitions": "64"}
    assert cfg.spark.warehouse_dir == "/shared/warehouse"
    for master in ("local[1]", "local[*]", "spark://a:1,b:2", "yarn", "k8s://https://api.example:6443"):
        assert load_experiment(_write(tmp_path, MINIMAL), [f"spark.master={master}"]).spark.master == master


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("spark.master=local[0]", r"spark\.master: 'local\[0\]' is not a Spark master \(local\[N\]"),
        ("spark.master=spark://host", r"spark\.master: 'spark://host' is not a Spark master"),
        ("spark.master=mesos://h:5050", r"spark\.master: 'mesos://h:5050' is not a Spark master"),
        ("spark.conf.spark.sql.session.timeZone=Asia/Taipei", r"spark\.conf\.spark\.sql\.session\.timeZone"),
        ("spark.mastr=yarn", r"unknown key 'spark\.mastr' \(allowed here: app_name, conf, master"),
        ("spark.conf=4g", r"spark\.conf: expected a mapping"),
    ],
)
def test_spark_section_refusals(tmp_path: Path, override: str, message: str) -> None:
    path = _write(tmp_path, MINIMAL)
    if override.startswith("spark.conf.spark"):  # a dotted Spark key cannot go through --set
        path = _write(tmp_path, MINIMAL + "spark:\n  conf: {spark.sql.session.timeZone: Asia/Taipei}\n")
        override = None
    with pytest.raises(ConfigError, match=message) as err:
        load_experiment(path, [override] if override else [])
    assert "\n" not in str(err.value)


def test_utc_conf_is_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "spark:\n  conf: {spark.sql.session.timeZone: UTC}\n")
    assert load_experiment(path).spark.conf == {"spark.sql.session.timeZone": "UTC"}
