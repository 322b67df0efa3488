"""The select stage: what the grades are built on, decided inside calibration; then the holdout, scored once.

1. Inner validation (:func:`segml.selection.inner_validation`): every scorer — the potential model refit on
   data up to an inner cutoff, BG/NBD + Gamma-Gamma, past spend, the RFM rank — is measured on the rest of the
   calibration period. The potential model drives the grades only if it wins there; otherwise the best of the
   others does (the fallback, said in one sentence). With ``policy.weights: auto`` the policy weights are chosen
   on the same split.
2. The holdout: the comparison of every model (``comparison.json``, ``holdout.json``), the policy's grades at
   the calibration end checked against realised value (``holdout_grades.json``), the grade-level evaluation of
   the policy against the same grade sizes by RFM, R+F+M, past spend and the forecast alone
   (``grading_evaluation.json``), and the selection record (``selection.json``) with the thin-holdout sentence.
"""

from __future__ import annotations

import dataclasses
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


def chosen_policy(cfg: ExperimentConfig, weights: Mapping[str, float] | None) -> Any:
    """The experiment's policy with the weights chosen inside calibration applied (``weights: auto``)."""
    from segml.policy import GradePolicy, Weights

    policy = GradePolicy.from_config(cfg.policy)
    if policy.auto_weights:
        if weights is None:
            raise SegmlError("policy.weights is auto but no weights were chosen — run the select stage first")
        policy = policy.with_weights(Weights(**dict(weights)))
    return policy


def recorded_choice(ctx: TrainContext) -> tuple[Any, str]:
    """The policy (with the weights chosen inside calibration) and the scorer name the select stage recorded
    in ``selection.json``: what the grade and monitor stages grade with."""
    import json

    path = ctx.reports / "selection.json"
    if not path.is_file():
        raise SegmlError(f"{path}: no selection record — run the select stage first")
    selection = json.loads(path.read_text(encoding="utf-8"))
    weights = selection.get("weights") if selection.get("weights_chosen") else None
    return chosen_policy(ctx.cfg, weights), selection.get("selected_scorer", "potential")


def holdout_grades(
    ctx: TrainContext,
    score: np.ndarray,
    *,
    weights: Mapping[str, float] | None = None,
    axis_potential: np.ndarray | None = None,
) -> tuple[dict[str, Any], Any, Any]:
    """Grade the evaluation population at calibration_end with the chosen policy (fit on that population)
    and check that realised holdout value decreases A→E.

    Returns
    -------
    (check, fitted policy, grades frame)
    """
    policy = chosen_policy(ctx.cfg, weights)
    fitted = policy.fit(ctx.calibration_features, score, axis_potential=axis_potential)
    grades = fitted.grade(ctx.calibration_features, score, axis_potential=axis_potential)
    order = "".join(g.code for g in policy.grades)
    table = evaluate.grade_table(ctx.holdout_spend, grades["grade"].to_numpy(), order=order)
    check = {"grade_table": table, "monotone": bool(evaluate.grades_monotone(table))}
    write_json(ctx.reports / "holdout_grades.json", jsonable(check))
    return check, fitted, grades


def inner_validate(ctx: TrainContext) -> Any:
    """The in-calibration choice of scorer and (for ``weights: auto``) weights: :func:`segml.selection.inner_validation`
    with the experiment's potential-model settings refit at the inner cutoff."""
    import dataclasses

    from segml.pipeline.families import potential_model
    from segml.policy import GradePolicy
    from segml.selection import inner_validation

    def potential_factory(cutoff: Any, horizon_days: int, features: Any) -> np.ndarray:
        model = potential_model(ctx)
        model.horizon_days = horizon_days
        model.fit(ctx.transactions_path, cutoff, ctx.cfg.features, ctx.customers_path, **ctx.event_tables)
        return model.predict(features)

    baselines = ctx.models.baselines
    return inner_validation(
        ctx.transactions_path,
        ctx.timeline.calibration_end,
        ctx.cfg.features,
        ctx.customers_path,
        ctx.timeline.holdout_days,
        potential_factory,
        GradePolicy.from_config(ctx.cfg.policy),
        seed=ctx.cfg.seed,
        **ctx.feature_kwargs,
        n_boot=min(ctx.models.evaluation.n_boot, 200),
        baseline_settings={k: v for k, v in dataclasses.asdict(baselines).items()},
    )


def select_model(
    cfg: ExperimentConfig, comparison: Sequence[Mapping[str, Any]], selected: str = "potential"
) -> dict[str, Any]:
    """The holdout part of the selection record (``reports/<experiment>/selection.json``).

    ``selected`` is the scorer the grades are built on (chosen inside calibration); the record says how it
    ranks on the holdout against every other model and whether its Gini beats the best baseline with a paired
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
    grading_evaluation: dict[str, Any]
    inner_validation: dict[str, Any]


def run_select(ctx: TrainContext) -> SelectionResult:
    """Choose the scorer and weights inside calibration, then score the holdout once: comparison, grades at
    the calibration end, grade-level evaluation and the selection record."""
    from segml import grading_evaluation as ge
    from segml.selection import SCORER_LABELS, thin_holdout_warning

    predictions = load_predictions(ctx)
    inner = inner_validate(ctx)
    scorer = inner.selected_scorer
    score = predictions[scorer]
    axis = predictions["potential"] if inner.fallback else None
    comparison = compare(ctx, predictions)
    check, fitted, grades = holdout_grades(ctx, score, weights=inner.weights, axis_potential=axis)
    current = ge.current_value_before(
        ctx.transactions_path, ctx.timeline.calibration_end, ctx.timeline.holdout_days, ctx.eval_ids
    )
    scores = {
        name: predictions[name]
        for name in ("rfm", "rfm_sum", "past_spend", "potential")
        if name in predictions
    }
    evaluation = ge.grading_evaluation(
        ctx.eval_ids,
        ctx.holdout_spend,
        current,
        grades["grade"].to_numpy(),
        ge.cells_from_grades(grades),
        scores,
        fitted,
        selected_scorer=scorer,
        n_boot=ctx.models.evaluation.n_boot,
        seed=ctx.cfg.seed,
    )
    evaluation = jsonable(evaluation)
    write_json(ctx.reports / "grading_evaluation.json", evaluation)
    thin = thin_holdout_warning(
        ctx.holdout_spend, score, n_boot=ctx.models.evaluation.n_boot, seed=ctx.cfg.seed
    )
    selection = select_model(ctx.cfg, comparison, scorer)
    selection.update(
        {
            "selected_scorer": scorer,
            "selected_label": SCORER_LABELS.get(scorer, scorer),
            "fallback": bool(inner.fallback),
            "sentence": inner.explanation
            or "The potential model beat every baseline inside the calibration period, so it drives the grades.",
            "weights": dataclasses.asdict(fitted.policy.weights)
            if hasattr(fitted, "policy")
            else inner.weights,
            "weights_chosen": inner.weights is not None,
            "thin_holdout": thin,
            # a money forecast worse than a money baseline inside calibration is said, never shipped silently
            "money_warning": inner.money_check.get("warning"),
            "inner_validation": jsonable(inner.to_dict()),
        }
    )
    write_json(ctx.reports / "selection.json", jsonable(selection))
    return SelectionResult(comparison, check, selection, predictions, evaluation, inner.to_dict())


__all__ = [
    "SelectionResult",
    "chosen_policy",
    "recorded_choice",
    "compare",
    "holdout_grades",
    "inner_validate",
    "run_select",
    "select_model",
]
