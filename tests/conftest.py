"""Shared fixtures: a throw-away project root with the smoke experiment's synthetic data."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    benchmarks = REPO / "benchmarks"
    sys.path.insert(0, str(benchmarks))
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", benchmarks / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_project(root: Path, experiment: str = "smoke", n_customers: int = 800, seed: int = 11) -> Path:
    """Create ``root`` with experiments/<experiment>.yaml and its synthetic data; return the YAML path."""
    from segml.datasets.synthetic import SynthSpec, write_synthetic

    (root / "experiments").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "experiments" / f"{experiment}.yaml", root / "experiments" / f"{experiment}.yaml")
    (root / "pyproject.toml").write_text("[project]\nname = 'scratch'\n")
    write_synthetic(SynthSpec(n_customers=n_customers, seed=seed), root / "data" / "raw" / experiment)
    return root / "experiments" / f"{experiment}.yaml"


@pytest.fixture(scope="session")
def smoke_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Project root holding experiments/smoke.yaml and data/raw/smoke (800 synthetic customers)."""
    root = tmp_path_factory.mktemp("smoke_project")
    make_project(root)
    return root
