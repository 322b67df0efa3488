"""MLflow conventions: where runs are stored, how they nest, what they are tagged with, and registry aliases.

One project-local store per checkout: the tracking URI is ``sqlite:///<root>/mlflow.db`` and each experiment
keeps its artifacts under ``<root>/mlruns/<experiment>`` (the experiment's ``artifact_location``). MLflow's
plain file store is never used (MLflow 3 refuses it without an opt-in flag).

One execution of an experiment YAML is one *parent run*; every model fit or notebook step is a *child run*
nested under it, possibly from another process (a papermill kernel). That process gets the store and the parent
run id through :func:`child_env`, and opens its nested run with :func:`child_run`.

Registry: every registered version gets the alias ``challenger``; it also becomes ``champion`` when there is
no champion yet or when it beats the champion on the same evaluation key (metric and key are stored as version
tags, so a metric measured on another holdout never decides a promotion). :func:`promote` sets the champion
explicitly.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import re
import socket
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from segml.errors import SegmlError
from segml.jsonable import flat_params, flatten_metrics
from segml.storage import sha256_file

# MLflow reads this when it is imported; set it before any import of mlflow in this process.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402  (must follow the telemetry switch)
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Run  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

#: Run tags written on every parent run.
TAG_EXPERIMENT_FILE = "segml.experiment_file"
TAG_GIT_COMMIT = "segml.git_commit"
TAG_DATA_FINGERPRINT = "segml.data_fingerprint"
#: MLflow's own tag for the source commit (shown in the UI).
_MLFLOW_GIT_COMMIT_TAG = "mlflow.source.git.commit"

#: Model-version tags used to decide promotions.
VERSION_TAG_METRIC = "segml.metric"
VERSION_TAG_EVALUATION_KEY = "segml.evaluation_key"
VERSION_TAG_HIGHER_IS_BETTER = "segml.higher_is_better"

ALIAS_CHAMPION = "champion"
ALIAS_CHALLENGER = "challenger"

#: Tags of a parent run naming the process that runs it (to find runs left RUNNING by a killed process).
TAG_PID = "segml.pid"
TAG_HOST = "segml.host"

#: Environment variable naming the parent run for a child process.
PARENT_RUN_ENV = "SEGML_PARENT_RUN_ID"

#: Variables a child process must not inherit from the parent: an active run id would make the child resume
#: the parent run, and a stale store/experiment from another process would send its runs elsewhere.
_MLFLOW_VARS_CHILD_MUST_NOT_INHERIT = (
    "MLFLOW_RUN_ID",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
)


class RegistryError(SegmlError):
    """A registry operation names a model or version that does not exist, or a metric that is not a number."""


# --------------------------------------------------------------------------------------------------------------
# Store configuration


def tracking_uri_for(root: Path) -> str:
    """The SQLite tracking URI of the project rooted at ``root`` (``sqlite:////abs/path/mlflow.db``)."""
    return f"sqlite:///{(Path(root).resolve() / 'mlflow.db').as_posix()}"


def artifact_location_for(root: Path, experiment_name: str) -> str:
    """The artifact location (``file://`` URI) of an experiment: ``<root>/mlruns/<experiment name>``."""
    folder = re.sub(r"[^\w.-]+", "_", experiment_name).strip("._") or "experiment"
    return (Path(root).resolve() / "mlruns" / folder).as_uri()


def configure(root: Path, experiment_name: str, *, description: str = "") -> str:
    """Point MLflow at the project store and make ``experiment_name`` the active experiment.

    Creates ``<root>/mlflow.db`` and the experiment (with its artifact location under ``<root>/mlruns``) on
    first use. MLflow records the URI and experiment in ``os.environ`` (``MLFLOW_TRACKING_URI``,
    ``MLFLOW_EXPERIMENT_ID``), so processes started afterwards inherit them; use :func:`child_env` to pass a
    child exactly what it needs.

    Parameters
    ----------
    root:
        Project root holding ``mlflow.db`` and ``mlruns/``.
    experiment_name:
        MLflow experiment name (by convention the experiment YAML's file stem).
    description:
        The experiment YAML's ``description``, shown on the MLflow experiment page (``mlflow.note.content``).

    Returns
    -------
    str
        The experiment id.
    """
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    root = Path(root)
    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri_for(root))
    mlflow.set_registry_uri(tracking_uri_for(root))
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        experiment_id = client.create_experiment(
            experiment_name, artifact_location=artifact_location_for(root, experiment_name)
        )
    else:
        experiment_id = experiment.experiment_id
    if description:
        client.set_experiment_tag(experiment_id, "mlflow.note.content", description)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def log_experiment(run_id: str, cfg: Any) -> None:
    """The experiment as run: every YAML value (after ``--set``) as a parameter and the YAML file itself."""
    from segml.config import raw_experiment

    if cfg.source_path is None:
        return
    client = MlflowClient()
    params = flat_params(raw_experiment(cfg.source_path, list(cfg.overrides)))
    for key, value in sorted(params.items()):
        client.log_param(run_id, key[:250], value)
    client.log_artifact(run_id, str(cfg.source_path), "experiment")
    client.set_tag(run_id, "segml.overrides", " ".join(cfg.overrides) or "-")


def reset() -> None:
    """Forget the configured store in this process: end active runs, unset MLflow's URIs and experiment.

    Long-lived processes (tests, notebook sessions) call this before switching to another store.
    """
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    # set_experiment has no public inverse; the module global and the env var it writes are cleared here.
    from mlflow.tracking import fluent

    fluent._active_experiment_id = None
    for name in _MLFLOW_VARS_CHILD_MUST_NOT_INHERIT:
        os.environ.pop(name, None)


# --------------------------------------------------------------------------------------------------------------
# Runs


def git_commit(repo_dir: Path | None = None) -> str:
    """``git rev-parse HEAD`` of ``repo_dir`` (default: cwd), or ``"unknown"`` outside a repository."""
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo_dir,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = completed.stdout.strip()
    return commit if completed.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit) else "unknown"


def start_parent_run(
    experiment_name: str,
    tags: Mapping[str, Any],
    *,
    run_name: str | None = None,
    repo_dir: Path | None = None,
) -> str:
    """Create the parent run of one experiment execution (call :func:`configure` first).

    The run is created through the client, not made active in this process, so nothing in this process
    accidentally logs into it; child runs nest under it by id (:func:`child_run`). End it with
    :func:`end_parent_run`.

    Parameters
    ----------
    experiment_name:
        The MLflow experiment (created by :func:`configure`).
    tags:
        Run tags; by convention :data:`TAG_EXPERIMENT_FILE` (the YAML path) and :data:`TAG_DATA_FINGERPRINT`
        (:func:`data_fingerprint` of the clean transactions). Values are stored as strings.
    run_name:
        Display name; default the experiment name.
    repo_dir:
        Where to read the git commit (default: cwd). Recorded as :data:`TAG_GIT_COMMIT` and as MLflow's
        ``mlflow.source.git.commit``; ``"unknown"`` outside a repository.

    Returns
    -------
    str
        The parent run id.
    """
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise RegistryError(
            f"MLflow experiment {experiment_name!r} not found in {mlflow.get_tracking_uri()}: "
            "call tracking.configure(root, experiment_name) first"
        )
    commit = git_commit(repo_dir)
    all_tags = {str(k): str(v) for k, v in tags.items()}
    all_tags.setdefault(TAG_GIT_COMMIT, commit)
    if commit != "unknown":
        all_tags.setdefault(_MLFLOW_GIT_COMMIT_TAG, commit)
    sweep_stale_runs(experiment.experiment_id)
    all_tags[TAG_PID] = str(os.getpid())
    all_tags[TAG_HOST] = socket.gethostname()
    run = client.create_run(experiment.experiment_id, tags=all_tags, run_name=run_name or experiment_name)
    return run.info.run_id


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale_runs(experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of this host whose process is gone (a run killed with SIGKILL, or a
    machine that lost power), and their nested runs. Runs of live processes (a concurrent run) are left alone.

    Returns
    -------
    list of str
        The run ids marked KILLED.
    """
    client = MlflowClient()
    host = socket.gethostname()
    running = client.search_runs(
        [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    stale = []
    for run in running:
        tags = run.data.tags
        pid = tags.get(TAG_PID)
        if pid and tags.get(TAG_HOST) == host and pid.isdigit() and not _alive(int(pid)):
            stale.append(run.info.run_id)
    for parent_id in stale:
        children = client.search_runs(
            [experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'RUNNING'",
        )
        for child in children:
            client.set_terminated(child.info.run_id, status="KILLED")
        client.set_terminated(parent_id, status="KILLED")
    return stale


class SignalState:
    """What :func:`killed_on_signal` saw: ``signal`` is the number of the signal that stopped the block."""

    signal: int | None = None


@contextlib.contextmanager
def killed_on_signal() -> Iterator[SignalState]:
    """While the block runs, SIGTERM, SIGINT and SIGHUP raise ``KeyboardInterrupt`` (so ``finally`` blocks
    run) and are recorded in the yielded state: the caller ends its parent run KILLED with
    ``end_parent_run(run_id, killed=state.signal is not None)``. Outside the main thread nothing changes."""
    import signal
    import threading

    state = SignalState()

    def handler(signum: int, _frame: Any) -> None:
        state.signal = signum
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield state
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def end_parent_run(run_id: str, *, failed: bool = False, killed: bool = False) -> None:
    """Mark a parent run FINISHED, FAILED or KILLED (stopped by a signal), and any nested run it left
    RUNNING the same way."""
    client = MlflowClient()
    status = "KILLED" if killed else "FAILED" if failed else "FINISHED"
    if killed or failed:
        run = client.get_run(run_id)
        children = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'",
        )
        for child in children:
            client.set_terminated(child.info.run_id, status=status)
    client.set_terminated(run_id, status=status)


@contextlib.contextmanager
def parent_run(experiment_name: str, tags: Mapping[str, Any], **kwargs: Any) -> Iterator[str]:
    """Context manager around :func:`start_parent_run` / :func:`end_parent_run`; FAILED on exception."""
    run_id = start_parent_run(experiment_name, tags, **kwargs)
    try:
        yield run_id
    except BaseException:
        end_parent_run(run_id, failed=True)
        raise
    end_parent_run(run_id)


def child_env(parent_run_id: str) -> dict[str, str]:
    """Environment variables a child process (papermill kernel, subprocess) needs to log a nested run.

    Contains the tracking and registry URIs, the parent's experiment id, the parent run id
    (:data:`PARENT_RUN_ENV`) and the telemetry switch. Merge it into an environment from which
    :func:`scrubbed_environ` removed inherited MLflow state.
    """
    run = MlflowClient().get_run(parent_run_id)
    uri = mlflow.get_tracking_uri()
    return {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_REGISTRY_URI": mlflow.get_registry_uri() or uri,
        "MLFLOW_EXPERIMENT_ID": run.info.experiment_id,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        PARENT_RUN_ENV: parent_run_id,
    }


def scrubbed_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default ``os.environ``) without the MLflow state a child must not inherit."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k not in _MLFLOW_VARS_CHILD_MUST_NOT_INHERIT}


@contextlib.contextmanager
def child_run(parent_run_id: str | None, run_name: str) -> Iterator[Run]:
    """Open a run nested under ``parent_run_id``, from this or another process.

    The store comes from ``MLFLOW_TRACKING_URI`` (set by :func:`child_env` or :func:`configure`); the run is
    created in the parent's experiment. With ``parent_run_id=None`` the id is read from
    :data:`PARENT_RUN_ENV`; if that is unset too, a top-level run is opened (notebooks run by hand).

    Yields
    ------
    mlflow.entities.Run
        The active child run (``mlflow.log_*`` calls go to it).
    """
    parent_run_id = parent_run_id or os.environ.get(PARENT_RUN_ENV) or None
    if parent_run_id is None:
        with mlflow.start_run(run_name=run_name) as run:
            yield run
        return
    parent = MlflowClient().get_run(parent_run_id)
    with mlflow.start_run(
        run_name=run_name,
        experiment_id=parent.info.experiment_id,
        parent_run_id=parent_run_id,
        nested=True,
    ) as run:
        yield run


# --------------------------------------------------------------------------------------------------------------
# Metrics and fingerprints


def log_metrics_safe(
    metrics: Mapping[str, Any], *, step: int | None = None, run_id: str | None = None
) -> dict:
    """Log a metrics mapping, skipping what MLflow cannot store as a metric.

    ``None``, NaN/inf and non-numeric values are skipped; a 2-element list/tuple/array such as
    ``gini_diff_ci=[lo, hi]`` becomes ``gini_diff_ci_lo`` / ``gini_diff_ci_hi`` (other lengths ``_0``,
    ``_1``, …); nested mappings are flattened with ``_``.

    Parameters
    ----------
    metrics:
        Name → value.
    step:
        Optional step (e.g. backtest index).
    run_id:
        Target run; default the active run.

    Returns
    -------
    dict
        The flattened name → float mapping that was logged.
    """
    flat = flatten_metrics(metrics)
    if not flat:
        return flat
    if run_id is None:
        mlflow.log_metrics(flat, step=step)
    else:
        client = MlflowClient()
        for name, value in flat.items():
            client.log_metric(run_id, name, value, step=step or 0)
    return flat


def data_fingerprint(data: Path | str | Any) -> str:
    """SHA-256 identifying a data set.

    Parameters
    ----------
    data:
        A file path (parquet or anything else): hash of the file's bytes, streamed. Or a pandas DataFrame:
        hash of its canonical Arrow IPC bytes (index dropped, schema metadata removed), which depend only on
        column names, dtypes, order and values — not on the pandas/pyarrow version that wrote them (a parquet
        footer records the writer's version, so it is not used for in-memory frames).

    Returns
    -------
    str
        ``"sha256:<hex>"``.
    """
    if isinstance(data, str | Path):
        return f"sha256:{sha256_file(data)}"
    import pyarrow as pa

    table = pa.Table.from_pandas(data, preserve_index=False).replace_schema_metadata(None)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return f"sha256:{hashlib.sha256(sink.getvalue()).hexdigest()}"


# --------------------------------------------------------------------------------------------------------------
# Registry


def _version_metric(client: MlflowClient, name: str, version: str) -> tuple[float | None, str | None]:
    tags = client.get_model_version(name, version).tags
    raw = tags.get(VERSION_TAG_METRIC)
    return (float(raw) if raw is not None else None), tags.get(VERSION_TAG_EVALUATION_KEY)


def current_champion(name: str) -> int | None:
    """Version number carrying the ``champion`` alias of registered model ``name``, or None."""
    client = MlflowClient()
    try:
        return int(client.get_model_version_by_alias(name, ALIAS_CHAMPION).version)
    except MlflowException:
        return None


def register_model(
    model_uri: str,
    name: str,
    metric: float,
    higher_is_better: bool = True,
    *,
    evaluation_key: str,
) -> int:
    """Register a logged model as a new version of ``name`` and set its aliases.

    The new version always gets ``challenger``. It also gets ``champion`` when the model has no champion
    yet, or when ``metric`` is strictly better than the champion's metric recorded under the same
    ``evaluation_key`` (e.g. ``"normalized_gini@holdout_2025-06-30"``). A champion evaluated under another
    key is never replaced automatically: use :func:`promote`.

    Parameters
    ----------
    model_uri:
        ``models:/m-<id>`` or ``runs:/<run>/<path>`` of a logged model.
    name:
        Registered model name.
    metric:
        The comparison metric of this version.
    higher_is_better:
        Direction of ``metric``.
    evaluation_key:
        What the metric was measured on (metric name + holdout). Stored as a version tag.

    Returns
    -------
    int
        The new version number.
    """
    metric = float(metric)
    if not math.isfinite(metric):
        raise RegistryError(f"register_model {name!r}: metric must be a finite number, got {metric}")
    client = MlflowClient()
    champion = current_champion(name)
    version = mlflow.register_model(
        model_uri,
        name,
        tags={
            VERSION_TAG_METRIC: repr(metric),
            VERSION_TAG_EVALUATION_KEY: evaluation_key,
            VERSION_TAG_HIGHER_IS_BETTER: str(bool(higher_is_better)).lower(),
        },
    ).version
    client.set_registered_model_alias(name, ALIAS_CHALLENGER, str(version))
    becomes_champion = champion is None
    if champion is not None:
        champion_metric, champion_key = _version_metric(client, name, str(champion))
        if champion_key == evaluation_key and champion_metric is not None:
            becomes_champion = metric > champion_metric if higher_is_better else metric < champion_metric
    if becomes_champion:
        client.set_registered_model_alias(name, ALIAS_CHAMPION, str(version))
    return int(version)


def promote(name: str, version: int | str) -> None:
    """Make ``version`` of registered model ``name`` the ``champion`` (explicit decision)."""
    client = MlflowClient()
    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        try:
            existing = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        except MlflowException:
            existing = []
        known = ", ".join(map(str, existing)) if existing else "none"
        raise RegistryError(
            f"promote: registered model {name!r} has no version {version} (versions: {known})"
        ) from None
    client.set_registered_model_alias(name, ALIAS_CHAMPION, str(version))
