"""The select stage: holdout comparison of every model, the holdout grading check and the selection record.

Writes ``reports/<exp>/comparison.json``, ``holdout.json``, ``holdout_grades.json`` and ``selection.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segml import evaluate
from segml.config import ExperimentConfig
from segml.errors import SegmlError
from segml.jsonable import jsonable
from segml.pipeline.context import SELECTION_METRIC, TrainContext, evaluation_key
from segml.pipeline.families import BASELINES, MONEY_MODELS, load_predictions
from segml.storage import write_json


def compare(ctx: TrainContext, predictions: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """Holdout comparison of every model and baseline (``reports/<exp>/comparison.json``)."""
    predictions = predictions if predictions is not None else load_predictions(ctx)
    results = {
        name: evaluate.evaluate_predictions(
            ctx.holdout_spend, values, ctx.eval_ids, predicts_money=MONEY_MODELS.get(name, True)
        )
        for name, values in predictions.items()
    }
    table = evaluate.comparison_table(
        results,
        ctx.holdout_spend,
        predictions,
        [b for b in BASELINES if b in predictions],
        n_boot=ctx.models.evaluation.n_boot,
        seed=ctx.cfg.seed,
    )
    table = jsonable(table)
    write_json(ctx.reports / "comparison.json", table)
    deciles = {
        name: evaluate.decile_table(ctx.holdout_spend, values, ctx.eval_ids)
        for name, values in predictions.items()
        if MONEY_MODELS.get(name, True)
    }
    write_json(
        ctx.reports / "holdout.json",
        jsonable(
            {
                "timeline": ctx.timeline.to_dict(),
                "customers": len(ctx.eval_ids),
                "share_zero_holdout_spend": float(np.mean(ctx.holdout_spend <= 0)),
                "holdout_spend_total": float(ctx.holdout_spend.sum()),
                "decile_tables": deciles,
            }
        ),
    )
    return table


def holdout_grades(ctx: TrainContext, potential_prediction: np.ndarray) -> dict[str, Any]:
    """Grade the evaluation population at calibration_end with the chosen policy (fit on that population)
    and check that realised holdout value decreases A→E."""
    from segml.policy import GradePolicy

    policy = GradePolicy.from_config(ctx.cfg.policy)
    fitted = policy.fit(ctx.calibration_features, potential_prediction)
    grades = fitted.grade(ctx.calibration_features, potential_prediction)
    order = "".join(g.code for g in policy.grades)
    table = evaluate.grade_table(ctx.holdout_spend, grades["grade"].to_numpy(), order=order)
    check = {"grade_table": table, "monotone": bool(evaluate.grades_monotone(table))}
    write_json(ctx.reports / "holdout_grades.json", jsonable(check))
    return check


def select_model(
    cfg: ExperimentConfig, comparison: Sequence[Mapping[str, Any]], selected: str = "potential"
) -> dict[str, Any]:
    """The selection record of notebook 06 (``reports/<experiment>/selection.json``).

    The production grades come from the potential-value model, so it is the selected model; the record says
    how it ranks against every other model and whether its Gini beats the best baseline with a paired
    bootstrap CI above 0.

    Returns
    -------
    dict
        ``selected, metric, value, evaluation_key, best_by_metric, reference_baseline, gini_diff,
        gini_diff_ci, beats_baselines, ranking`` (model names by the metric, best first).
    """
    rows = {row["model"]: row for row in comparison}
    if selected not in rows:
        raise SegmlError(f"comparison.json: no row for model {selected!r} (models: {', '.join(rows)})")
    row = rows[selected]
    ranking = sorted(rows, key=lambda name: (-(rows[name].get(SELECTION_METRIC) or float("-inf")), name))
    ci = row.get("gini_diff_ci") or [None, None]
    return {
        "selected": selected,
        "metric": SELECTION_METRIC,
        "value": row.get(SELECTION_METRIC),
        "evaluation_key": evaluation_key(cfg),
        "best_by_metric": ranking[0],
        "ranking": ranking,
        "reference_baseline": row.get("gini_diff_vs"),
        "gini_diff": row.get("gini_diff"),
        "gini_diff_ci": ci,
        "beats_baselines": bool(ci[0] is not None and ci[0] > 0),
    }


@dataclass
class SelectionResult:
    """What the select stage produced."""

    comparison: list[dict[str, Any]]
    holdout_check: dict[str, Any]
    selection: dict[str, Any]
    predictions: dict[str, np.ndarray]


def run_select(ctx: TrainContext) -> SelectionResult:
    """Compare every model on the holdout, check the policy's grades there and write the selection record."""
    predictions = load_predictions(ctx)
    comparison = compare(ctx, predictions)
    check = holdout_grades(ctx, predictions["potential"])
    selection = select_model(ctx.cfg, comparison)
    write_json(ctx.reports / "selection.json", jsonable(selection))
    return SelectionResult(comparison, check, selection, predictions)


__all__ = [
    "SELECTION_METRIC",
    "SelectionResult",
    "compare",
    "evaluation_key",
    "holdout_grades",
    "run_select",
    "select_model",
]
