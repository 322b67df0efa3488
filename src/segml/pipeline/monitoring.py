"""Monitoring: the single-step monitor stage of the pipeline and the monitor series of ``segml monitor``.

The monitor stage (:func:`run_monitor`): how the grades at the calibration end moved by the data end, and
feature drift between the two populations; writes ``reports/<exp>/monitoring.json`` (aggregates only).

The monitor series (:func:`run_monitor_series`, ``segml monitor``): re-grade with an exported artifact at
several cutoffs from the experiment's clean transactions as they stood then, and compare each step with the
previous one and with the training reference stored in the artifact. Writes, per step,
``reports/<exp>/monitoring/<as_of>/`` (``step.json``, ``grades.parquet``, ``migration.parquet``,
``psi.parquet``: aggregates only) and ``data/processed/<exp>/monitoring/<as_of>/`` (customer-level grades
and the migration list), then ``reports/<exp>/monitoring/monitoring.json`` =
``{"steps": [...], "alerts": [...]}``. A step whose inputs did not change is reused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from segml import catalog, features, monitor
from segml.jsonable import jsonable
from segml.pipeline.context import TrainContext, feature_sources
from segml.pipeline.families import load_predictions
from segml.storage import write_json


@dataclass
class MonitorResult:
    """Grade migration from the calibration end to the data end, movement shares and PSI per feature."""

    migration: pd.DataFrame
    movement: pd.Series
    psi: pd.DataFrame
    document: dict[str, Any]


def stage_monitoring_file(cfg: Any) -> Any:
    """The monitor stage's one-step summary (calibration end → data end), beside ``segml monitor``'s series
    under ``reports/<exp>/monitoring/``."""
    return cfg.paths.reports / "monitoring" / "calibration_to_data_end.json"


def run_monitor(ctx: TrainContext) -> MonitorResult:
    """Re-grade the calibration population with the policy fitted there and compare with the current grades."""
    from segml.pipeline.selection import recorded_choice

    tl = ctx.timeline
    policy, scorer = recorded_choice(ctx)
    predictions = load_predictions(ctx)
    score = predictions[scorer]
    axis = predictions["potential"] if scorer != "potential" else None
    fitted = policy.fit(ctx.calibration_features, score, axis_potential=axis)
    then = fitted.grade(ctx.calibration_features, score, axis_potential=axis)
    current = pd.read_parquet(ctx.processed / "grades.parquet", columns=["customer_id", "grade"])
    order = [g.code for g in policy.grades] + [policy.new_customer.code]
    migration = monitor.migration_matrix(then, current, order)
    rank = {code: i for i, code in enumerate(order)}
    moved = then[["customer_id", "grade"]].merge(current, on="customer_id", suffixes=("_then", "_now"))
    step = moved["grade_now"].map(rank) - moved["grade_then"].map(rank)
    movement = pd.Series(
        {
            "customers in both": len(moved),
            "same grade": float((step == 0).mean()),
            "moved up": float((step < 0).mean()),
            "moved down": float((step > 0).mean()),
        }
    )
    now = ctx.features_at(tl.data_end)
    now = now[now["has_purchases"].astype(bool)]
    drift = catalog.drift_features(now.columns)
    psi = monitor.psi_table(ctx.calibration_features, now, drift)
    document = jsonable(
        {
            "from": tl.calibration_end,
            "to": tl.data_end,
            "migration": {
                "rows": list(migration.index),
                "columns": list(migration.columns),
                "counts": migration.to_numpy().tolist(),
            },
            "movement": movement.to_dict(),
            "psi": psi,
        }
    )
    write_json(stage_monitoring_file(ctx.cfg), document)
    return MonitorResult(migration, movement, psi, document)


def load_monitor_result(cfg: Any) -> MonitorResult:
    """The monitor stage's ``monitoring.json`` read back as frames (for reports)."""
    import json

    from segml.errors import SegmlError

    path = stage_monitoring_file(cfg)
    if not path.is_file():
        raise SegmlError(
            f"{path}: no monitoring output yet — run the monitor stage (`segml train {cfg.label}`)"
        )
    document = json.loads(path.read_text(encoding="utf-8"))
    m = document["migration"]
    migration = pd.DataFrame(m["counts"], index=m["rows"], columns=m["columns"])
    migration.index.name, migration.columns.name = "grade before", "grade after"
    return MonitorResult(migration, pd.Series(document["movement"]), pd.DataFrame(document["psi"]), document)


# --------------------------------------------------------------------------------------------------------------
# The monitor series (segml monitor)

#: format marker of ``reports/<exp>/monitoring/monitoring.json``
SERIES_FORMAT = "segml.monitoring"
SERIES_VERSION = 1
#: customer-level columns kept per step (data/processed only)
_CUSTOMER_COLUMNS = (
    "customer_id",
    "grade",
    "plain_grade",
    "hysteresis_pending",
    "has_purchases",
    "score",
    "predicted_value",
    "recency_days",
    "reason_1",
    "reason_1_feature",
)


@dataclass
class MonitorSeries:
    """What ``segml monitor`` computed: the document written to ``monitoring.json`` and where files went."""

    document: dict[str, Any]
    warnings: list[str]
    reused: list[str]
    report_dir: Any
    data_dir: Any

    @property
    def steps(self) -> list[dict[str, Any]]:
        return self.document["steps"]

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return self.document["alerts"]


def series_dirs(cfg: Any) -> tuple[Any, Any]:
    """``reports/<exp>/monitoring`` (aggregates) and ``data/processed/<exp>/monitoring`` (customer rows)."""
    return cfg.paths.reports / "monitoring", cfg.paths.processed / "monitoring"


def _step_key(parts: dict[str, Any]) -> str:
    import hashlib
    import json

    text = json.dumps(jsonable(parts), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _training_gini(artifact: Any) -> float | None:
    import json

    from segml.artifact.manifest import COMPARISON

    path = artifact.path / COMPARISON
    if not path.is_file():
        return None
    rows = json.loads(path.read_text(encoding="utf-8"))
    for row in rows if isinstance(rows, list) else []:
        if row.get("model") == "potential" and row.get("normalized_gini") is not None:
            return float(row["normalized_gini"])
    return None


def _grade_table(
    customers: pd.DataFrame, order: list[str], names: dict[str, str], value: str
) -> pd.DataFrame:
    """Grade sizes and value shares (current value, predicted value) of one step, in grade order."""
    counts = customers["grade"].value_counts()
    values = customers.groupby("grade")["value"].sum()
    predicted = customers.groupby("grade")["predicted_value"].sum()
    total_value = float(customers["value"].sum())
    total_predicted = float(customers["predicted_value"].sum())
    rows = []
    for code in order:
        n = int(counts.get(code, 0))
        rows.append(
            {
                "grade": code,
                "name": names.get(code, code),
                "n": n,
                "share": n / len(customers) if len(customers) else None,
                "value": float(values.get(code, 0.0)),
                "value_share": float(values.get(code, 0.0)) / total_value if total_value else None,
                "predicted_value_share": (
                    float(predicted.get(code, 0.0)) / total_predicted if total_predicted else None
                ),
            }
        )
    table = pd.DataFrame(rows)
    table.attrs["value_feature"] = value
    return table


def _matrix_document(matrix: pd.DataFrame) -> dict[str, Any]:
    counts = matrix.to_numpy(dtype=np.int64)
    sums = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, sums, out=np.zeros(counts.shape, dtype=float), where=sums > 0)
    return {
        "rows": list(matrix.index),
        "columns": list(matrix.columns),
        "counts": counts.tolist(),
        "shares": shares.tolist(),
    }


def _customer_flows(previous: pd.DataFrame, current: pd.DataFrame, days: int) -> dict[str, int]:
    """New, returning and lapsed customers between two steps ``days`` apart (purchasers only).

    new: a purchaser now who was not one at the previous step; returning: a purchaser at both steps who had
    not bought in the ``days`` before the previous step and bought since; lapsed: bought in the ``days``
    before the previous step but not since.
    """
    before = previous[previous["has_purchases"].astype(bool)].set_index("customer_id")["recency_days"]
    now = current[current["has_purchases"].astype(bool)].set_index("customer_id")["recency_days"]
    both = now.index.intersection(before.index)
    active_before = before.loc[both] < days
    active_now = now.loc[both] < days
    return {
        "purchasers": len(now),
        "new": int((~now.index.isin(before.index)).sum()),
        "returning": int((~active_before & active_now).sum()),
        "lapsed": int((active_before & ~active_now).sum()),
        "active": int((now < days).sum()),
    }


def _realised(
    cfg: Any,
    customers: pd.DataFrame,
    cutoff: Any,
    data_end: Any,
    horizon: int,
    order: list[str],
    training_gini: float | None,
) -> dict[str, Any]:
    """Normalized Gini, top-grade capture and monotonicity over the ``horizon`` days after ``cutoff``."""
    import datetime as dt

    from segml import evaluate

    window_end = cutoff + dt.timedelta(days=horizon)
    document: dict[str, Any] = {
        "horizon_days": horizon,
        "window_end": window_end,
        "passed": window_end <= data_end,
    }
    if not document["passed"]:
        return document
    labels = features.build_labels(cfg.paths.clean_transactions, cutoff, horizon, label_end=data_end)
    graded = customers[customers["has_purchases"].astype(bool)]
    actual = (
        graded[["customer_id"]]
        .merge(labels[["customer_id", "future_spend"]], on="customer_id", how="left")["future_spend"]
        .fillna(0.0)
        .to_numpy(dtype=float)
    )
    gini = evaluate.normalized_gini(actual, graded["predicted_value"].to_numpy(dtype=float))
    total = float(actual.sum())
    top = order[0]

    def checks(grades: pd.Series) -> dict[str, Any]:
        in_top = (grades == top).to_numpy()
        table = evaluate.grade_table(actual, grades.to_numpy(dtype=str), order)
        return {
            "top_grade": top,
            "top_grade_share": float(in_top.mean()) if len(in_top) else None,
            "top_grade_capture": float(actual[in_top].sum()) / total if total else None,
            "monotone": evaluate.grades_monotone(table),
            "mean_by_grade": {str(r.grade): r.mean_actual for r in table.itertuples()},
        }

    document.update(
        {
            "customers": len(graded),
            "realised_total": total,
            "normalized_gini": gini,
            "training_gini": training_gini,
            "gini_drop": None if training_gini is None else training_gini - gini,
            **checks(graded["grade"].astype(str)),
            "without_hysteresis": checks(graded["plain_grade"].astype(str)),
        }
    )
    return document


def _risk_document(graded: pd.DataFrame, current: pd.DataFrame, order: list[str], codes: list[str]) -> dict:
    """The step's risk flags (only when the grades carry them: payment or contact data): the share of each
    grade's customers per flag, and ``flagged_top_share``, the share of the two best grades' customers with any
    flag (what the ``flagged_top_rise`` alert watches)."""
    from segml.flags import flags_per_grade

    if "risk_flags" not in graded.columns:
        return {}
    flagged = pd.DataFrame(
        {"grade": current["grade"].to_numpy(), "risk_flags": graded["risk_flags"].fillna("").to_numpy()}
    )
    top = flagged["grade"].isin(codes[:2]).to_numpy()
    share = float((flagged["risk_flags"][top] != "").mean()) if top.any() else None
    return {"risk_flags": flags_per_grade(flagged, order), "flagged_top_share": share}


def run_monitor_series(  # noqa: C901 - one pass over the steps, in reading order
    cfg: Any,
    artifact_dir: Any,
    cutoffs: list[Any],
    *,
    reuse: bool = True,
    progress: Any = None,
) -> MonitorSeries:
    """Re-grade with an artifact at each cutoff and compare steps, drift and realised value.

    Parameters
    ----------
    cfg:
        The experiment (its clean transactions from ``segml ingest``, ``monitor:`` thresholds and
        ``policy.hysteresis``).
    artifact_dir:
        An artifact folder exported by ``segml export`` (verified first).
    cutoffs:
        Monitor cutoffs (dates), any order; duplicates are dropped.
    reuse:
        Reuse a step whose inputs (artifact, clean data, previous steps, settings) did not change.
    progress:
        Called with one line per step.

    Returns
    -------
    MonitorSeries

    Raises
    ------
    SegmlError
        No clean data, a cutoff before the first transaction, an artifact without training reference or one
        whose features do not match the transactions (one-line messages).
    """
    import datetime as dt
    import json

    from segml import __version__
    from segml.artifact.load import load_artifact, read_training_reference
    from segml.errors import InputFileError
    from segml.policy import GradePolicy, apply_hysteresis
    from segml.storage import sha256_file, write_parquet

    clean = cfg.paths.clean_transactions
    experiment = cfg.source_path or f"experiments/{cfg.name}.yaml"
    if not clean.is_file() or not cfg.paths.dq_report.is_file():
        raise InputFileError(f"{clean}: no clean transactions yet — run `segml ingest {experiment}` first")
    artifact = load_artifact(artifact_dir)
    reference = read_training_reference(artifact)
    dq = json.loads(cfg.paths.dq_report.read_text(encoding="utf-8"))
    data_start = dt.date.fromisoformat(dq["date_min"])
    data_end = dt.date.fromisoformat(dq["date_max"])
    cutoffs = sorted(set(cutoffs))
    if not cutoffs:
        raise InputFileError("no monitor cutoff given (--from/--to/--every or --as-of)")
    if cutoffs[0] < data_start:
        raise InputFileError(f"cutoff {cutoffs[0]} is before the first transaction ({data_start}) of {clean}")
    warnings = [
        f"cutoff {day} is after the last transaction ({data_end}) of {clean}: the days after {data_end} "
        "count as days without purchases (is the data up to date?)"
        for day in cutoffs
        if day > data_end
    ]
    sources = feature_sources(cfg)
    customers_path = sources.customers
    hysteresis = GradePolicy.from_config(cfg.policy).hysteresis
    policy = artifact.policy
    codes = [g.code for g in policy.policy.grades]
    order = [*codes, policy.policy.new_customer.code]
    names = {g.code: g.name for g in policy.policy.grades}
    names[policy.policy.new_customer.code] = policy.policy.new_customer.name
    value_feature = policy.policy.value_feature
    horizon = int(cfg.monitor.realised_horizon_days or artifact.model.horizon_days)
    training_gini = _training_gini(artifact)
    spec = dataclasses.replace(artifact.feature_config, engine="duckdb")
    base_key = {
        "layout": SERIES_VERSION,
        "segml": __version__,
        "artifact": artifact.manifest.get("manifest_sha256") or sha256_file(artifact.path / "manifest.json"),
        "transactions": sha256_file(clean),
        "customers": None if customers_path is None else sha256_file(customers_path),
        **{key: sha256_file(path) for key, path in sources.event_tables.items() if path is not None},
        "hysteresis": dataclasses.asdict(hysteresis),
        "realised_horizon_days": horizon,
    }
    report_dir, data_dir = series_dirs(cfg)
    steps: list[dict[str, Any]] = []
    reused: list[str] = []
    previous: pd.DataFrame | None = None
    previous_step: dict[str, Any] | None = None
    previous_key = None
    migrations = []
    for cutoff in cutoffs:
        label = cutoff.isoformat()
        key = _step_key({**base_key, "as_of": label, "previous": previous_key})
        step_report, step_data = report_dir / label, data_dir / label
        step_json = step_report / "step.json"
        if reuse and step_json.is_file() and (step_data / "grades.parquet").is_file():
            document = json.loads(step_json.read_text(encoding="utf-8"))
            if document.get("key") == key:
                current = pd.read_parquet(step_data / "grades.parquet")
                if (step_data / "migration.parquet").is_file():
                    migrations.append(pd.read_parquet(step_data / "migration.parquet"))
                steps.append(document)
                reused.append(label)
                previous, previous_step, previous_key = current, document, key
                if progress:
                    progress(f"{label}: reused")
                continue
        table = features.build_features(clean, cutoff, spec, customers_path, **sources.extra)
        if table.empty:
            raise InputFileError(f"{clean}: no customer has data on or before {cutoff}")
        try:
            graded = artifact.score(table, reasons=True, as_of=cutoff)
        except InputFileError as exc:
            raise InputFileError(
                f"artifact {artifact.name} {artifact.version} does not match the transactions of "
                f"{cfg.name}: {exc}"
            ) from None
        purchased = table["has_purchases"].astype(bool).to_numpy()
        current = pd.DataFrame(
            {
                "customer_id": graded["customer_id"].to_numpy(),
                "grade": graded["grade"].astype(str).to_numpy(),
                "plain_grade": graded["grade"].astype(str).to_numpy(),
                "hysteresis_pending": np.zeros(len(graded), dtype=np.int64),
                "has_purchases": purchased,
                "score": graded["score"].to_numpy(dtype=float),
                "predicted_value": graded["predicted_value"].to_numpy(dtype=float),
                "recency_days": pd.to_numeric(table["recency_days"], errors="coerce").to_numpy(dtype=float),
                "reason_1": graded["reason_1"].astype(object).to_numpy(),
                "reason_1_feature": graded["reason_1_feature"].astype(object).to_numpy(),
                "value": pd.to_numeric(table[value_feature], errors="coerce")
                .fillna(0.0)
                .to_numpy(dtype=float),
            }
        )
        if previous is not None and hysteresis.enabled:
            kept = apply_hysteresis(
                previous[["customer_id", "grade", "hysteresis_pending"]],
                current,
                hysteresis.margin,
                hysteresis.periods,
                thresholds=list(policy.grade_thresholds),
                codes=codes,
                on=policy.threshold_on,
            )
            current["grade"] = kept["grade"].to_numpy()
            current["hysteresis_pending"] = kept["hysteresis_pending"].to_numpy()
        grades_table = _grade_table(current, order, names, value_feature)
        psi = monitor.psi_against_reference(reference, table[purchased], current["score"][purchased])
        document = {
            "as_of": label,
            "previous": None if previous_step is None else previous_step["as_of"],
            "key": key,
            "data_end": data_end,
            "customers": len(current),
            "purchasers": int(purchased.sum()),
            "grades": jsonable(grades_table),
            "value_feature": value_feature,
            "hysteresis": {
                **dataclasses.asdict(hysteresis),
                "enabled": hysteresis.enabled,
                "held": int((current["grade"] != current["plain_grade"]).sum()),
            },
            "psi": jsonable(psi),
            "migration": None,
            "movement": None,
            "movement_without_hysteresis": None,
            "flows": None,
            "realised": _realised(cfg, current, cutoff, data_end, horizon, codes, training_gini),
            **_risk_document(graded, current, order, codes),
        }
        migration_rows = None
        if previous is not None:
            matrix = monitor.migration_matrix(previous, current, order, include_left=True)
            document["migration"] = _matrix_document(matrix)
            document["movement"] = monitor.movement(previous, current, order)
            document["movement_without_hysteresis"] = monitor.movement(
                previous[["customer_id", "plain_grade"]].rename(columns={"plain_grade": "grade"}),
                current[["customer_id", "plain_grade"]].rename(columns={"plain_grade": "grade"}),
                order,
            )
            days = (cutoff - dt.date.fromisoformat(previous_step["as_of"])).days
            document["flows"] = {"days": days, **_customer_flows(previous, current, days)}
            moved = previous[["customer_id", "grade"]].merge(
                current[["customer_id", "grade", "reason_1", "reason_1_feature"]],
                on="customer_id",
                how="outer",
                suffixes=("_before", "_after"),
            )
            moved = moved[moved["grade_before"].astype(str) != moved["grade_after"].astype(str)]
            migration_rows = pd.DataFrame(
                {
                    "as_of": pd.Timestamp(cutoff),
                    "previous": pd.Timestamp(previous_step["as_of"]),
                    "customer_id": moved["customer_id"].to_numpy(),
                    "grade_before": moved["grade_before"].fillna(monitor.NOT_GRADED_BEFORE).to_numpy(),
                    "grade_after": moved["grade_after"].fillna(monitor.NOT_GRADED_NOW).to_numpy(),
                    "top_reason": moved["reason_1"].to_numpy(),
                    "top_reason_feature": moved["reason_1_feature"].to_numpy(),
                }
            ).sort_values("customer_id", kind="stable", ignore_index=True)
        document = jsonable(document)
        # customer rows first (data/processed), then the aggregates; step.json last marks the step finished
        write_parquet(current[list(_CUSTOMER_COLUMNS)], step_data / "grades.parquet")
        if migration_rows is not None:
            write_parquet(migration_rows, step_data / "migration.parquet")
            migrations.append(migration_rows)
        write_parquet(grades_table, step_report / "grades.parquet")
        write_parquet(psi, step_report / "psi.parquet")
        if document["migration"] is not None:
            write_parquet(_migration_long(document["migration"]), step_report / "migration.parquet")
        write_json(step_json, document)
        steps.append(document)
        previous, previous_step, previous_key = current, document, key
        if progress:
            progress(f"{label}: {len(current):,} customers graded")
    if migrations:
        write_parquet(pd.concat(migrations, ignore_index=True), data_dir / "migrations.parquet")
    alert_list = monitor.alerts(steps, cfg.monitor)
    summary = jsonable(
        {
            "format": SERIES_FORMAT,
            "format_version": SERIES_VERSION,
            "experiment": cfg.name,
            "artifact": {"name": artifact.name, "version": artifact.version},
            "data": {"start": data_start, "end": data_end},
            "thresholds": dataclasses.asdict(cfg.monitor),
            "hysteresis": dataclasses.asdict(hysteresis),
            "realised_horizon_days": horizon,
            "steps": steps,
            "alerts": alert_list,
            "warnings": warnings,
        }
    )
    write_json(report_dir / "monitoring.json", summary)
    return MonitorSeries(summary, warnings, reused, report_dir, data_dir)


def _migration_long(matrix: dict[str, Any]) -> pd.DataFrame:
    rows = [
        {
            "grade_before": str(before),
            "grade_after": str(after),
            "count": int(matrix["counts"][i][j]),
            "share": float(matrix["shares"][i][j]),
        }
        for i, before in enumerate(matrix["rows"])
        for j, after in enumerate(matrix["columns"])
    ]
    return pd.DataFrame(rows, columns=["grade_before", "grade_after", "count", "share"])


def load_monitor_series(cfg: Any) -> dict[str, Any] | None:
    """``reports/<exp>/monitoring/monitoring.json`` of the last ``segml monitor`` run (None when absent)."""
    import json

    path = series_dirs(cfg)[0] / "monitoring.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def series_tables(document: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Frames over time from a ``monitoring.json`` document (for reports).

    Returns
    -------
    dict
        ``steps`` (one row per step: customers, update rate with and without hysteresis, upgrades,
        downgrades, flows, score PSI, realised checks), ``psi`` (step × feature), ``grades`` (step × grade:
        n, share, value share) and ``alerts``.
    """
    rows, psi_rows, grade_rows = [], [], []
    for step in document["steps"]:
        movement = step.get("movement") or {}
        plain = step.get("movement_without_hysteresis") or {}
        flows = step.get("flows") or {}
        realised = step.get("realised") or {}
        score_psi = next((r["psi"] for r in step["psi"] if r["feature"] == "score"), None)
        rows.append(
            {
                "as_of": step["as_of"],
                "customers": step["customers"],
                "purchasers": step["purchasers"],
                "update_rate": movement.get("update_rate"),
                "update_rate_without_hysteresis": plain.get("update_rate"),
                "upgrades": movement.get("upgrades"),
                "downgrades": movement.get("downgrades"),
                "new": flows.get("new"),
                "returning": flows.get("returning"),
                "lapsed": flows.get("lapsed"),
                "held_by_hysteresis": step["hysteresis"]["held"],
                "score_psi": score_psi,
                "normalized_gini": realised.get("normalized_gini"),
                "gini_drop": realised.get("gini_drop"),
                "top_grade_capture": realised.get("top_grade_capture"),
                "monotone": realised.get("monotone"),
            }
        )
        psi_rows += [{"as_of": step["as_of"], "feature": r["feature"], "psi": r["psi"]} for r in step["psi"]]
        grade_rows += [{"as_of": step["as_of"], **g} for g in step["grades"]]
    alerts = pd.DataFrame(
        document.get("alerts", []), columns=["step", "kind", "value", "threshold", "feature"]
    )
    return {
        "steps": pd.DataFrame(rows),
        "psi": pd.DataFrame(psi_rows, columns=["as_of", "feature", "psi"]),
        "grades": pd.DataFrame(grade_rows),
        "alerts": alerts,
    }


def who_moved(cfg: Any, as_of: str | None = None, top: int = 3) -> pd.DataFrame:
    """Who moved and why, without identities: customers per grade pair of one step and their most common
    top reasons (the feature behind each customer's first reason code at the later step).

    Parameters
    ----------
    cfg:
        The experiment (reads ``data/processed/<exp>/monitoring/migrations.parquet``).
    as_of:
        The step (ISO date); default the last one.
    top:
        Reasons listed per grade pair.

    Returns
    -------
    pandas.DataFrame
        ``grade_before, grade_after, customers, share, reasons`` (``"<feature description> (n)"`` joined by
        ``"; "``), largest pairs first; empty when ``segml monitor`` has not run or nobody moved.
    """
    from segml import catalog

    columns = ["grade_before", "grade_after", "customers", "share", "reasons"]
    path = series_dirs(cfg)[1] / "migrations.parquet"
    if not path.is_file():
        return pd.DataFrame(columns=columns)
    moves = pd.read_parquet(path)
    days = moves["as_of"].dt.strftime("%Y-%m-%d")
    moves = moves[days == (as_of or days.max())]
    rows = []
    for (before, after), group in moves.groupby(["grade_before", "grade_after"], sort=False):
        counts = group["top_reason_feature"].dropna().astype(str).value_counts().head(top)
        reasons = "; ".join(
            f"{catalog.describe(name) if catalog.is_catalogued(name) else name} ({n})"
            for name, n in counts.items()
        )
        rows.append(
            {"grade_before": before, "grade_after": after, "customers": len(group), "reasons": reasons}
        )
    table = pd.DataFrame(rows, columns=[c for c in columns if c != "share"])
    table["share"] = table["customers"] / max(len(moves), 1)
    return table.sort_values(["customers", "grade_before", "grade_after"], ascending=[False, True, True])[
        columns
    ].reset_index(drop=True)


def step_migration(step: dict[str, Any]) -> pd.DataFrame | None:
    """The migration counts of one step as a frame (rows grade before, columns grade after)."""
    m = step.get("migration")
    if m is None:
        return None
    frame = pd.DataFrame(m["counts"], index=m["rows"], columns=m["columns"])
    frame.index.name, frame.columns.name = "grade before", "grade after"
    return frame


#: per-step figures of a monitor series logged to MLflow (the step index is MLflow's ``step``)
TRACKED_STEP_COLUMNS = (
    "customers",
    "purchasers",
    "update_rate",
    "update_rate_without_hysteresis",
    "upgrades",
    "downgrades",
    "new",
    "returning",
    "lapsed",
    "score_psi",
    "normalized_gini",
    "top_grade_capture",
)


def log_monitor_series(cfg: Any, series: MonitorSeries, html: Any = None) -> str:
    """Log a ``segml monitor`` series as one MLflow run of the experiment (the project store).

    The run (named ``monitor <first>..<last>``) holds the artifact and cutoffs as parameters, the per-step
    figures of :data:`TRACKED_STEP_COLUMNS` as metrics with the step index as MLflow's ``step``, the alert
    count (``alerts``, and per kind ``alerts_<kind>``), the alert kinds as the tag ``segml.alerts``, and
    ``monitoring.json`` (plus the rendered notebook, when given) as artifacts. Everything is read from the
    written outputs, so logging changes nothing on disk.

    Returns
    -------
    str
        The run id.
    """
    from mlflow.tracking import MlflowClient

    from segml import tracking

    document = series.document
    steps = series_tables(document)["steps"]
    first, last = (steps["as_of"].iloc[0], steps["as_of"].iloc[-1]) if len(steps) else ("-", "-")
    alerts = list(document.get("alerts") or [])
    kinds = sorted({str(alert["kind"]) for alert in alerts})
    tracking.configure(cfg.root, cfg.mlflow_experiment, description=cfg.description)
    tags = {
        tracking.TAG_EXPERIMENT_FILE: cfg.label,
        "segml.command": "monitor",
        "segml.alerts": ",".join(kinds) or "-",
    }
    client = MlflowClient()
    with tracking.parent_run(
        cfg.mlflow_experiment, tags, run_name=f"monitor {first}..{last}", repo_dir=cfg.root
    ) as run_id:
        artifact = document.get("artifact") or {}
        client.log_param(run_id, "artifact", f"{artifact.get('name')} {artifact.get('version')}")
        client.log_param(run_id, "cutoffs", ",".join(str(d) for d in steps["as_of"])[:6000])
        for index, row in enumerate(steps.to_dict(orient="records")):
            tracking.log_metrics_safe(
                {k: row.get(k) for k in TRACKED_STEP_COLUMNS}, step=index, run_id=run_id
            )
        per_kind = {f"alerts_{kind}": sum(a["kind"] == kind for a in alerts) for kind in kinds}
        tracking.log_metrics_safe({"alerts": len(alerts), **per_kind}, run_id=run_id)
        client.log_artifact(run_id, str(series.report_dir / "monitoring.json"), "monitoring")
        if html is not None:
            client.log_artifact(run_id, str(html), "monitoring")
    return run_id


__all__ = [
    "TRACKED_STEP_COLUMNS",
    "MonitorResult",
    "MonitorSeries",
    "load_monitor_result",
    "load_monitor_series",
    "log_monitor_series",
    "run_monitor",
    "run_monitor_series",
    "series_dirs",
    "series_tables",
    "step_migration",
    "who_moved",
]
