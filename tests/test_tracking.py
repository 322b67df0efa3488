"""MLflow conventions on a throw-away SQLite store: parent + nested runs (one from a subprocess), metrics,
fingerprints, registry aliases."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from segml import tracking

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

_MLFLOW_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
    tracking.PARENT_RUN_ENV,
)


@pytest.fixture(scope="session")
def empty_store_db(tmp_path_factory) -> Path:
    """An initialised, empty MLflow SQLite database (table creation takes ~3 s; tests copy it)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("mlflow_template")
    db = folder / "mlflow.db"
    store = SqlAlchemyStore(f"sqlite:///{db}", (folder / "mlruns").as_uri())
    store.engine.dispose()
    return db


@pytest.fixture()
def store_root(tmp_path, empty_store_db, monkeypatch) -> Path:
    """A project root with its own mlflow.db; MLflow env/globals restored afterwards (no leaks)."""
    for name in _MLFLOW_ENV:
        monkeypatch.delenv(name, raising=False)  # records the original value; restored at teardown
    shutil.copy(empty_store_db, tmp_path / "mlflow.db")
    yield tmp_path
    tracking.reset()


def test_configure_uses_sqlite_and_project_mlruns(store_root):
    experiment_id = tracking.configure(store_root, "smoke")
    assert mlflow.get_tracking_uri() == f"sqlite:///{store_root.resolve()}/mlflow.db"
    assert os.environ["MLFLOW_TRACKING_URI"].startswith("sqlite:///")
    experiment = MlflowClient().get_experiment(experiment_id)
    assert experiment.name == "smoke"
    assert experiment.artifact_location == (store_root.resolve() / "mlruns" / "smoke").as_uri()
    # idempotent: same experiment the second time
    assert tracking.configure(store_root, "smoke") == experiment_id


def test_reset_leaves_no_mlflow_state(store_root):
    tracking.configure(store_root, "smoke")
    tracking.reset()
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_EXPERIMENT_ID" not in os.environ


def test_parent_tags_and_git_commit(store_root):
    tracking.configure(store_root, "smoke")
    with tracking.parent_run(
        "smoke",
        {tracking.TAG_EXPERIMENT_FILE: "experiments/smoke.yaml", tracking.TAG_DATA_FINGERPRINT: "sha256:ab"},
        repo_dir=store_root,  # not a git repository
    ) as run_id:
        pass
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.TAG_EXPERIMENT_FILE] == "experiments/smoke.yaml"
    assert run.data.tags[tracking.TAG_DATA_FINGERPRINT] == "sha256:ab"
    assert run.data.tags[tracking.TAG_GIT_COMMIT] == "unknown"


def test_parent_run_marked_failed_on_error(store_root):
    tracking.configure(store_root, "smoke")
    with pytest.raises(RuntimeError), tracking.parent_run("smoke", {}) as run_id:
        raise RuntimeError("boom")
    assert MlflowClient().get_run(run_id).info.status == "FAILED"


def test_git_commit_of_a_repository(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    commit = tracking.git_commit(repo)
    assert commit == "unknown" or len(commit) == 40
    assert tracking.git_commit(tmp_path) == "unknown"


def test_nested_run_from_subprocess(store_root):
    """A child process (like a papermill kernel) nests its run under the parent using only child_env."""
    tracking.configure(store_root, "smoke")
    parent_id = tracking.start_parent_run("smoke", {tracking.TAG_EXPERIMENT_FILE: "smoke.yaml"})
    script = textwrap.dedent(
        """
        import mlflow
        from segml import tracking

        with tracking.child_run(None, "gbm") as run:
            tracking.log_metrics_safe({"normalized_gini": 0.61, "gini_diff_ci": [0.01, 0.05], "mape": None})
            mlflow.log_param("model", "lightgbm")
            print(run.info.run_id)
        """
    )
    # An unrelated store in the inherited environment must not matter: child_env overrides it.
    env = {**tracking.scrubbed_environ(), "MLFLOW_RUN_ID": parent_id, **tracking.child_env(parent_id)}
    env.pop("MLFLOW_RUN_ID")
    completed = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=store_root, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    child_id = completed.stdout.strip().splitlines()[-1]
    tracking.end_parent_run(parent_id)

    client = MlflowClient()
    child = client.get_run(child_id)
    parent = client.get_run(parent_id)
    assert child.data.tags["mlflow.parentRunId"] == parent_id
    assert child.info.experiment_id == parent.info.experiment_id
    assert child.info.status == "FINISHED"
    assert child.data.metrics == {"normalized_gini": 0.61, "gini_diff_ci_lo": 0.01, "gini_diff_ci_hi": 0.05}
    assert child.data.params == {"model": "lightgbm"}
    # nothing leaked into this process
    assert mlflow.active_run() is None


def test_child_env_is_exactly_what_a_kernel_needs(store_root):
    experiment_id = tracking.configure(store_root, "smoke")
    parent_id = tracking.start_parent_run("smoke", {})
    env = tracking.child_env(parent_id)
    assert env == {
        "MLFLOW_TRACKING_URI": tracking.tracking_uri_for(store_root),
        "MLFLOW_REGISTRY_URI": tracking.tracking_uri_for(store_root),
        "MLFLOW_EXPERIMENT_ID": experiment_id,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        tracking.PARENT_RUN_ENV: parent_id,
    }
    assert "MLFLOW_RUN_ID" not in tracking.scrubbed_environ({"MLFLOW_RUN_ID": "x", "PATH": "/bin"})


def test_log_metrics_safe_flattens_and_skips(store_root):
    import numpy as np

    tracking.configure(store_root, "smoke")
    parent_id = tracking.start_parent_run("smoke", {})
    logged = tracking.log_metrics_safe(
        {
            "gini": np.float64(0.5),
            "ci": (0.1, 0.2),
            "per_decile": [1, 2, 3],
            "nested": {"a": 1, "b": None},
            "missing": None,
            "nan": float("nan"),
            "label": "A",
        },
        run_id=parent_id,
    )
    expected = {"gini": 0.5, "ci_lo": 0.1, "ci_hi": 0.2, "per_decile_0": 1.0, "per_decile_1": 2.0}
    expected |= {"per_decile_2": 3.0, "nested_a": 1.0}
    assert logged == expected
    assert MlflowClient().get_run(parent_id).data.metrics == expected


def test_data_fingerprint_file_and_frame(tmp_path):
    frame = pd.DataFrame({"customer_id": ["a", "b"], "amount": [1.0, 2.5]})
    path = tmp_path / "t.parquet"
    frame.to_parquet(path, index=False)
    import hashlib

    assert tracking.data_fingerprint(path) == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    same = tracking.data_fingerprint(frame.copy())
    assert same == tracking.data_fingerprint(frame.set_axis([10, 11]))  # index ignored
    assert same != tracking.data_fingerprint(frame.assign(amount=[1.0, 2.6]))
    assert same.startswith("sha256:") and len(same) == len("sha256:") + 64


_SHIM = """
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class Doubler(PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return model_input * 2


mlflow.models.set_model(Doubler())
"""


@pytest.fixture()
def logged_model_uri(store_root) -> str:
    """A models-from-code pyfunc (no pickle) logged under a child run."""
    tracking.configure(store_root, "registry")
    shim = store_root / "doubler_model.py"
    shim.write_text(_SHIM, encoding="utf-8")
    parent_id = tracking.start_parent_run("registry", {})
    with tracking.child_run(parent_id, "doubler"):
        info = mlflow.pyfunc.log_model(name="model", python_model=str(shim), pip_requirements=["mlflow"])
    tracking.end_parent_run(parent_id)
    return info.model_uri


def _aliases(name: str) -> dict[str, int]:
    model = MlflowClient().get_registered_model(name)
    return {alias: int(version) for alias, version in model.aliases.items()}


def test_registry_aliases_champion_challenger(logged_model_uri, store_root):
    name = "segml-potential"
    key = "normalized_gini@2025-06-30"
    artifacts = list((store_root / "mlruns" / "registry").rglob("*.pkl"))
    assert artifacts == []  # models-from-code: no pickle written

    assert tracking.register_model(logged_model_uri, name, 0.50, evaluation_key=key) == 1
    assert _aliases(name) == {"champion": 1, "challenger": 1}

    assert tracking.register_model(logged_model_uri, name, 0.40, evaluation_key=key) == 2
    assert _aliases(name) == {"champion": 1, "challenger": 2}

    assert tracking.register_model(logged_model_uri, name, 0.55, evaluation_key=key) == 3
    assert _aliases(name) == {"champion": 3, "challenger": 3}

    # better metric but measured on another holdout: never promoted automatically
    assert tracking.register_model(logged_model_uri, name, 0.99, evaluation_key="gini@other") == 4
    assert _aliases(name) == {"champion": 3, "challenger": 4}

    # lower-is-better metrics compare the other way
    assert tracking.register_model(logged_model_uri, "mape-model", 0.30, False, evaluation_key="mape") == 1
    assert tracking.register_model(logged_model_uri, "mape-model", 0.20, False, evaluation_key="mape") == 2
    assert _aliases("mape-model") == {"champion": 2, "challenger": 2}

    tracking.promote(name, 2)
    assert _aliases(name)["champion"] == 2
    assert tracking.current_champion(name) == 2
    version_tags = MlflowClient().get_model_version(name, "3").tags
    assert float(version_tags[tracking.VERSION_TAG_METRIC]) == 0.55
    assert version_tags[tracking.VERSION_TAG_EVALUATION_KEY] == key

    with pytest.raises(tracking.RegistryError, match=r"no version 9 \(versions: 1, 2, 3, 4\)"):
        tracking.promote(name, 9)

    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert loaded.predict(pd.DataFrame({"x": [1.0, 2.0]}))["x"].tolist() == [2.0, 4.0]
