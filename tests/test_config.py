"""Experiment YAML loading: strict keys, types, overrides, paths."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from segml.config import ExperimentConfig, apply_override, load_experiment
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
