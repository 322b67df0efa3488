"""The grade stage: current grades at the data end from the production potential model, with reason codes,
the fitted policy, the reference statistics and the rules distilled from the grades.

Writes ``data/processed/<exp>/grades.parquet``, ``models/policy.yaml``, ``models/reference_stats.json``,
``models/grade_rules.json`` and ``reports/<exp>/grades_summary.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from segml import features, summaries
from segml.errors import SegmlError
from segml.jsonable import jsonable
from segml.pipeline.context import TrainContext
from segml.pipeline.selection import recorded_choice
from segml.storage import write_json, write_parquet, write_text


@dataclass
class GradeOutputs:
    grades: pd.DataFrame
    summary: pd.DataFrame
    rules_text: str
    fidelity: dict[str, Any]


def production_scorer(ctx: TrainContext, scorer: str, now: pd.DataFrame) -> Any | None:
    """The fallback scorer refit on every customer at the data end (None when the potential model drives the
    grades). It forecasts the same horizon as the production potential model."""
    if scorer == "potential":
        return None
    from segml.models import registry

    models = registry.build_family("baselines", ctx.models.baselines, ctx.cfg.seed, ctx.timeline.holdout_days)
    if scorer not in models:
        raise SegmlError(f"selection.json: unknown scorer {scorer!r} (known: potential, {', '.join(models)})")
    return models[scorer].fit(now)


def grade_customers(ctx: TrainContext, production_model: Any | None = None) -> GradeOutputs:
    """Current grades at data_end from the production potential model, with reason codes and the rules
    distilled from the grades. Writes ``data/processed/<exp>/grades.parquet``."""
    from segml.explain import reference_stats
    from segml.flags import flags_per_grade
    from segml.models.registry import load_model
    from segml.models.tree import GradeRulesTree
    from segml.policy import grade_summary
    from segml.scoring import grade_features, grade_range_table

    if production_model is None:
        state_file = ctx.model_state_file("potential_production")
        if not state_file.is_file():
            raise SegmlError(f"{state_file}: no production model — run the potential step first")
        production_model = load_model(json.loads(state_file.read_text(encoding="utf-8")))
    now = ctx.features_at(ctx.timeline.data_end)
    policy, scorer_name = recorded_choice(ctx)
    potential = production_model.predict(now)
    scorer = production_scorer(ctx, scorer_name, now)
    score = potential if scorer is None else scorer.predict_value(now)
    axis = None if scorer is None else potential
    fitted = policy.fit(now, score, axis_potential=axis)
    contrib = production_model.predict_contrib(now)
    reference = reference_stats(now[now["has_purchases"].astype(bool)])
    # the same function `segml grade` and the pyfunc call: the artifact reproduces these grades exactly
    graded = grade_features(
        now,
        production_model,
        fitted,
        reference,
        as_of=ctx.timeline.data_end,
        feature_config=ctx.cfg.features,
        potential=potential,
        contributions=contrib,
        scorer=scorer,
    )
    write_parquet(graded, ctx.processed / "grades.parquet")
    # one CSV per grade for the sales team (customer-level: under data/processed, never in a report)
    summaries.write_grade_lists(
        graded,
        summaries.grade_lists_dir(ctx.cfg),
        order=[g.code for g in policy.grades] + [policy.new_customer.code],
        currency=ctx.cfg.data.currency,
    )
    scorer_file = ctx.model_state_file("scorer_production")
    if scorer is not None:
        write_json(scorer_file, jsonable(scorer.to_dict()))
    else:
        scorer_file.unlink(missing_ok=True)
    write_text(ctx.model_state_file("policy").with_suffix(".yaml"), fitted.to_yaml())
    write_json(ctx.model_state_file("reference_stats"), jsonable(reference))

    purchased = now["has_purchases"].astype(bool).to_numpy()
    rules = GradeRulesTree(
        max_depth=ctx.models.tree.rules_max_depth,
        features=features.NUMERIC_FEATURES(ctx.cfg.features),
        random_state=ctx.cfg.seed,
    ).fit(now[purchased], graded.loc[purchased, "grade"].to_numpy())
    write_json(ctx.model_state_file("grade_rules"), jsonable(rules.to_dict()))
    value = now[policy.value_feature].fillna(0.0).to_numpy(dtype=float)
    summary = grade_summary(
        graded, value, potential, policy=fitted, future_margin=summaries.predicted_margin(now, potential)
    )
    rules_text = rules.rules_text()
    order = [*(g.code for g in fitted.policy.grades), fitted.policy.new_customer.code]
    risk = flags_per_grade(graded, order)
    write_json(
        ctx.reports / "grades_summary.json",
        jsonable(
            {
                "as_of": ctx.timeline.data_end,
                "customers": len(graded),
                "summary": summary,
                "matrix": graded.groupby(["value_level", "potential_level"]).size().reset_index(name="n"),
                "grade_rules_text": rules_text,
                "grade_rules": rules.rules_json(),
                "grade_rules_fidelity": rules.fidelity_,
                "global_importance": global_importance_safe(contrib),
                # share of each grade's customers per risk flag (only with payment / interaction data)
                **({} if risk.empty else {"risk_flags": risk}),
                # per grade: how many hold their grade across the forecast's P10..P90 (segml.scoring)
                "grade_range": grade_range_table(graded, order[:-1]),
            }
        ),
    )
    return GradeOutputs(graded, summary, rules_text, rules.fidelity_)


def global_importance_safe(contrib: pd.DataFrame) -> Any:
    from segml.explain import global_importance

    return global_importance(contrib)


def load_grade_outputs(cfg: Any) -> GradeOutputs:
    """The grade stage's outputs read back (for reports): grades, summary, rules text and their fidelity."""
    grades_file = cfg.paths.processed / "grades.parquet"
    summary_file = cfg.paths.reports / "grades_summary.json"
    if not grades_file.is_file() or not summary_file.is_file():
        raise SegmlError(f"{grades_file}: no grades yet — run the grade stage (`segml train {cfg.label}`)")
    document = json.loads(summary_file.read_text(encoding="utf-8"))
    return GradeOutputs(
        pd.read_parquet(grades_file),
        pd.DataFrame(document["summary"]),
        document["grade_rules_text"],
        document["grade_rules_fidelity"],
    )


__all__ = ["GradeOutputs", "grade_customers", "load_grade_outputs"]
