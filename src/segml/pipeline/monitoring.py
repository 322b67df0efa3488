"""The monitor stage: how the grades at the calibration end moved by the data end, and feature drift between
the two populations.

Writes ``reports/<exp>/monitoring.json`` (aggregates only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from segml import catalog, features, monitor
from segml.jsonable import jsonable
from segml.pipeline.context import TrainContext
from segml.pipeline.families import load_predictions
from segml.storage import write_json


@dataclass
class MonitorResult:
    """Grade migration from the calibration end to the data end, movement shares and PSI per feature."""

    migration: pd.DataFrame
    movement: pd.Series
    psi: pd.DataFrame
    document: dict[str, Any]


def run_monitor(ctx: TrainContext) -> MonitorResult:
    """Re-grade the calibration population with the policy fitted there and compare with the current grades."""
    from segml.pipeline.grading import read_selection
    from segml.pipeline.selection import chosen_policy

    tl = ctx.timeline
    selection = read_selection(ctx)
    policy = chosen_policy(ctx.cfg, selection.get("weights") if selection.get("weights_chosen") else None)
    predictions = load_predictions(ctx)
    scorer = selection.get("selected_scorer", "potential")
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
    now = features.build_features(ctx.transactions_path, tl.data_end, ctx.cfg.features, ctx.customers_path)
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
    write_json(ctx.reports / "monitoring.json", document)
    return MonitorResult(migration, movement, psi, document)


def load_monitor_result(cfg: Any) -> MonitorResult:
    """The monitor stage's ``monitoring.json`` read back as frames (for reports)."""
    import json

    from segml.errors import SegmlError

    path = cfg.paths.reports / "monitoring.json"
    if not path.is_file():
        raise SegmlError(
            f"{path}: no monitoring output yet — run the monitor stage (`segml train {cfg.label}`)"
        )
    document = json.loads(path.read_text(encoding="utf-8"))
    m = document["migration"]
    migration = pd.DataFrame(m["counts"], index=m["rows"], columns=m["columns"])
    migration.index.name, migration.columns.name = "grade before", "grade after"
    return MonitorResult(migration, pd.Series(document["movement"]), pd.DataFrame(document["psi"]), document)


__all__ = ["MonitorResult", "load_monitor_result", "run_monitor"]
