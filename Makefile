# segml — two commands on a fresh machine with Python 3.11, git and make:
#   make run    create .venv, install, run the default experiment (experiments/cdnow.yaml) end to end
#   make test   same bootstrap, then the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
EXPERIMENT ?= experiments/cdnow.yaml
PYTEST_ARGS ?=

export MLFLOW_DISABLE_TELEMETRY := true
export PYTHONHASHSEED := 0

.PHONY: help venv run test test-slow test-all lint format bench bench-quality bench-scale bench-engines lock clean mlflow-ui lab

help:
	@echo "make run | test | test-slow | lint | format | bench | bench-quality | bench-scale | bench-engines | mlflow-ui | lab | lock | clean"

# The venv is (re)installed only when pyproject.toml or the lock file change: a second `make run` reuses it.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name segml --display-name "segml (.venv)" >/dev/null
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/segml run $(EXPERIMENT)
	@echo "reports: reports/$(basename $(notdir $(EXPERIMENT)))/index.html"
	@echo "MLflow UI: make mlflow-ui"

# pytest exit code 5 means "no tests collected": not a failure.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

test-all: test test-slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Features (10M rows vs lifetimes / plain DuckDB), then scoring overhead with the exported CDNOW artifact.
bench: $(STAMP)
	$(BIN)/python benchmarks/features.py
	$(BIN)/segml ingest $(EXPERIMENT)
	$(BIN)/segml train $(EXPERIMENT) --no-backtest
	$(BIN)/segml export $(EXPERIMENT)
	$(BIN)/python benchmarks/scoring.py

# Every model family on CDNOW, Ta Feng and synthetic data (flat, seasonal): benchmarks/results/quality.json.
# Not part of CI (about 6 minutes on 2 cores).
bench-quality: $(STAMP)
	$(BIN)/python benchmarks/quality.py

# DuckDB features at 1M / 30M / 100M transactions and ingest at 1M / 100M, peak RSS of the process tree:
# benchmarks/results/scale.json. Not part of CI (about 20-30 minutes on 2 cores, a few GB of disk while it runs).
bench-scale: $(STAMP)
	nice -n 10 $(BIN)/python benchmarks/scale.py

# Features and grading on DuckDB vs Spark local[2] vs a Spark standalone cluster on loopback, 1M and 10M rows:
# benchmarks/results/engines.json. Not part of CI (needs the spark extra and Java).
bench-engines: $(STAMP)
	nice -n 10 $(BIN)/python benchmarks/engines.py

# MLflow UI on the project's SQLite store, loopback only. The links open each experiment's training runs
# (the Runs tab: parent run per `segml run` / `segml train`, one nested run per stage) rather than the start page.
MLFLOW_UI := http://127.0.0.1:5000
mlflow-ui: $(STAMP)
	@echo "MLflow UI: $(MLFLOW_UI)  (training runs of an experiment: $(MLFLOW_UI)/#/experiments/<id>/runs)"
	@if [ -f mlflow.db ]; then $(BIN)/python -c "import sqlite3; rows = sqlite3.connect('mlflow.db').execute(\"SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active' AND name != 'Default' ORDER BY experiment_id\").fetchall(); print('\n'.join(f'  training runs of {name}: $(MLFLOW_UI)/#/experiments/{eid}/runs' for eid, name in rows))" 2>/dev/null || true; fi
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --default-artifact-root ./mlruns --host 127.0.0.1 --port 5000

# JupyterLab on the project kernel ("segml (.venv)"), notebooks/ as the start directory. As root (containers,
# CI machines) Jupyter refuses to start without --allow-root.
lab: $(STAMP)
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser $(if $(filter 0,$(shell id -u)),--allow-root) notebooks

# Re-resolve the pinned versions from pyproject.toml (run after changing dependencies).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv && .lockenv/bin/pip install -q --upgrade pip \
	  && .lockenv/bin/pip install -q '.[dev]' \
	  && .lockenv/bin/pip freeze --exclude-editable | grep -v '^segml' > requirements.lock && rm -rf .lockenv

clean:
	rm -rf data/interim data/processed reports artifacts mlflow.db mlruns/* .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
