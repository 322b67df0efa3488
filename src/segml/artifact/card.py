"""``model_card.md``: what the artifact is for, what it was trained on, how good it is, and its limits.

The card is a pure function of the training outputs (no timestamps), so re-exporting gives the same bytes.
"""

from __future__ import annotations

from typing import Any

from segml.config import ExperimentConfig

_METRICS = ("normalized_gini", "spearman", "top20_capture", "decile_mape", "total_error")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _selection_lines(selection: dict[str, Any] | None, evaluation: dict[str, Any] | None) -> list[str]:
    """What drives the grades (chosen inside calibration), the thin-holdout warning and the grade-level
    comparison with RFM, past spend and the forecast alone, in plain words."""
    lines: list[str] = []
    if selection:
        lines += ["", "## What the grades are built on", "", str(selection.get("sentence", ""))]
        weights = selection.get("weights") or {}
        if weights:
            chosen = "chosen inside the calibration period" if selection.get("weights_chosen") else "fixed"
            lines.append(
                f"Weights ({chosen}): value {weights.get('value', 0):g}, potential {weights.get('potential', 0):g}, "
                f"loyalty {weights.get('loyalty', 0):g}."
            )
        for key in ("thin_holdout", "money_warning"):
            if selection.get(key):
                lines += ["", f"**Warning:** {selection[key]}"]
    if evaluation:
        top = "+".join(evaluation.get("top_grades", []))
        lines += [
            "",
            f"## Do the grades beat a rule of thumb? ({top}, same grade sizes)",
            "",
            f"| grading | share of holdout value in {top} | difference vs RFM grading (95 % CI) | "
            "value falls from A to E |",
            "|---|---:|---:|---|",
        ]
        for row in evaluation.get("gradings", []):
            ci = row.get("top_capture_diff_vs_rfm_ci") or [None, None]
            lines.append(
                f"| {row['grading']} | {_fmt(row.get('top_capture'))} | "
                f"{_fmt(row.get('top_capture_diff_vs_rfm'))} [{_fmt(ci[0])}, {_fmt(ci[1])}] | "
                f"{'yes' if row.get('monotone') else 'no'} |"
            )
    return lines


def _interval_lines(model: Any) -> list[str]:
    """How the P10 / P90 in the grades were measured, and how they held on the fold (cross-fitted)."""
    state = (getattr(model, "params_", None) or {}).get("interval")
    if not state:
        return ["", "## Forecast interval", "", "This model carries no P10 / P90 (the grade range is empty)."]
    check = state.get("check") or {}
    held = (
        f"cross-fitted on that fold, {_fmt(check.get('above'))} of buyers realised more than their P90 and "
        f"{_fmt(check.get('below'))} less than their P10 (nominally 0.100 each)"
        if check.get("rows")
        else "the fold was too small for a cross-fitted check"
    )
    return [
        "",
        "## Forecast interval",
        "",
        f"`predicted_p10` / `predicted_p90` (and the grades at both ends, `grade_low` / `grade_high`) come from "
        f"the spread of realised ÷ forecast spend on the model's validation fold ({state.get('window_days')} "
        f"days, inside the calibration period), per band of forecast; {held}. A fold window shorter than the "
        "horizon makes the P90 conservative. The holdout figures are in the training reports "
        "(`reports/<experiment>/models/potential.json` → `interval`).",
    ]


def _event_lines(cfg: ExperimentConfig) -> list[str]:
    """What the model reads beyond transactions and attributes, and what `segml grade` then needs."""
    events = [
        (key, what)
        for key, what in (("invoices", "payment"), ("interactions", "contact"))
        if getattr(cfg.data, key) is not None
    ]
    if not events:
        return []
    named = " and ".join(f"{key} ({what} features)" for key, what in events)
    options = " ".join(f"`--{key} FILE`" for key, _ in events)
    return [
        f"- Event sources: {named}, each as known at the cutoff; `segml grade` needs {options}, and the "
        "grades carry per-customer `risk_flags`.",
    ]


def model_card(
    *,
    name: str,
    version: str,
    cfg: ExperimentConfig,
    model: Any,
    policy: Any,
    comparison: list[dict[str, Any]],
    holdout: dict[str, Any],
    data_period: dict[str, Any],
    parity: dict[str, Any],
    n_graded: int,
    selection: dict[str, Any] | None = None,
    grading_evaluation: dict[str, Any] | None = None,
) -> str:
    """Markdown model card of an artifact (see the module docstring)."""
    grading = policy.policy
    currency = cfg.data.currency
    lines = [
        f"# Model card: {name}",
        "",
        # the version lives in manifest.json only, so re-exports of the same model give the same card bytes
        "Version, creation time and checksums: `manifest.json`.",
        "",
        "## Intended use",
        "",
        f"Grade existing customers A–E ({', '.join(g.code for g in grading.grades)}; "
        f"{grading.new_customer.code} for customers without purchases) from their own transaction history, "
        "to decide service levels and account coverage. The grade combines current value, predicted "
        f"{data_period['horizon_days']}-day spend (potential) and loyalty as percentile ranks against "
        "the training population. Grade a population with `segml grade` at a cutoff (`--as-of`); "
        "grades are comparable across runs because the boundaries are frozen at training.",
        "",
        "Not intended for: credit, pricing or any decision about individuals that has legal or similarly "
        "significant effects; populations from other markets or products than the training data.",
        "",
        "## Training data",
        "",
        f"- Experiment `{cfg.name}`: {cfg.description.strip() or 'no description'}",
        f"- Data period {data_period['start']} .. {data_period['end']}: {data_period['rows']:,} clean "
        f"transaction rows, {data_period['customers']:,} customers; currency {currency}.",
        f"- Evaluation: models fit on data up to {data_period['calibration_end']}, scored on the holdout "
        f"({data_period['calibration_end']}, {data_period['holdout_end']}].",
        f"- Production model refit on {data_period['model_training_start']} .. "
        f"{data_period['model_training_end']} with the selected settings "
        f"({model.objective_}, trees {dict(sorted(model.n_estimators_.items()))}).",
        "- Training data fingerprint: see `manifest.json` (`training_data.fingerprint`).",
        *_event_lines(cfg),
        "",
        "## Holdout metrics vs baselines",
        "",
        "| model | " + " | ".join(_METRICS) + " | Gini diff vs rfm (95 % CI) |",
        "|---|" + "---:|" * (len(_METRICS) + 1),
    ]
    for row in comparison:
        ci = row.get("gini_diff_ci") or [None, None]
        diff = row.get("gini_diff")
        lines.append(
            f"| {row['model']} | "
            + " | ".join(_fmt(row.get(m)) for m in _METRICS)
            + f" | {_fmt(diff)} [{_fmt(ci[0])}, {_fmt(ci[1])}] |"
        )
    lines += _selection_lines(selection, grading_evaluation)
    lines += _interval_lines(model)
    monotone = "yes" if holdout.get("monotone") else "NO"
    lines += [
        "",
        "`potential` is the packaged model (its holdout fit; production refit on all data). Money metrics "
        "(decile MAPE, total error) do not apply to the RFM score.",
        "",
        f"Grades on the holdout: realised value decreases A→E: **{monotone}**.",
        "",
        "| grade | customers | mean realised holdout value | share of holdout value |",
        "|---|---:|---:|---:|",
    ]
    for row in holdout.get("grade_table", []):
        lines.append(
            f"| {row['grade']} | {row['n']:,} | {_fmt(row.get('mean_actual'), 2)} | "
            f"{_fmt(row.get('share_actual'))} |"
        )
    lines += [
        "",
        "## Grade definitions",
        "",
        f"Score = {grading.weights.value:g} × value rank ({grading.value_feature}) + "
        f"{grading.weights.potential:g} × potential rank + {grading.weights.loyalty:g} × loyalty rank "
        f"(loyalty = {1 - grading.loyalty.repurchase_weight:g} × {grading.loyalty.feature} + "
        f"{grading.loyalty.repurchase_weight:g} × {grading.loyalty.repurchase_feature}). Ranks are against "
        f"{grading.reference_quantiles} quantiles frozen on {policy.n_training_customers:,} training customers. "
        f"Method: `{grading.method}`; a customer exactly at a lower bound gets the better grade.",
        "",
        f"| grade | name | lower bound ({policy.threshold_on}) | training share | training customers | strategy |",
        "|---|---|---:|---:|---:|---|",
    ]
    bounds = [*policy.grade_thresholds, None]
    for grade, bound in zip(grading.grades, bounds, strict=True):
        count = policy.training_grade_counts.get(grade.code, 0)
        share = count / policy.n_training_customers if policy.n_training_customers else 0.0
        lines.append(
            f"| {grade.code} | {_cell(grade.name)} | {'—' if bound is None else repr(float(bound))} | "
            f"{share:.3f} | {count:,} | {_cell(grade.strategy)} |"
        )
    new = grading.new_customer
    lines += [
        f"| {new.code} | {_cell(new.name)} | no purchases yet | — | — | {_cell(new.strategy)} |",
        "",
        "Value × potential matrix: each rank cut at "
        f"{grading.matrix.value_cuts} (value) and {grading.matrix.potential_cuts} (potential) into low / mid "
        "/ high; cell names in `policy/policy.yaml`.",
        "",
        "## ONNX",
        "",
    ]
    if parity.get("skipped"):
        lines.append(f"Not exported: {parity['skipped']}.")
    else:
        value = parity["predicted_value"]
        lines += [
            f"Boosters converted with target opset {parity['target_opset']} (`model/onnx/`); parity on the "
            f"{parity['customers']:,} customers graded at the data end: predicted value max abs error "
            f"{value['max_abs_error']:.3g}, max rel error {value['max_rel_error']:.3g}; max "
            f"{parity['grades_on']} error {parity['max_score_error']:.3g} (a rank jumps where customers tie on "
            "a reference quantile). Customers whose grade can change when their predicted value moves by the "
            f"measured max relative error: {parity['n_within_error_of_boundary']}; grades that differ: "
            f"{parity['n_grade_differs']} (away from a boundary: {parity['n_grade_differs_away_from_boundary']}): "
            f"{parity.get('summary', '')}. Passed: {parity['passed']}. The LightGBM "
            "booster text (`model/booster_*.txt`) is the reference; ONNX Runtime computes in float32.",
        ]
    lines += [
        "",
        "## Limits",
        "",
        "- Potential value is a forecast from purchase history (and attributes, if mapped): it cannot see "
        "events outside the data (new competitors, price changes, customers buying elsewhere).",
        f"- The forecast horizon is {data_period['horizon_days']} days; grades at a cutoff far beyond "
        f"{data_period['end']} extrapolate the seasonal profile and the customer mix of the training period. "
        "Watch drift (reference distributions in `policy/policy.yaml`) and re-train when it grows.",
        "- Share-based boundaries are frozen: on a new population grade sizes follow the population. "
        "`segml grade --refit-boundaries` re-derives them explicitly.",
        "- Customers with purchases but very short histories have noisy forecasts; new customers (no "
        f"purchases) all get grade {new.code}.",
        "",
        "## Fairness and privacy",
        "",
        "- Inputs are transaction amounts and dates plus the mapped customer attributes and event files (see "
        "`spec/feature_spec.json`). No protected characteristic is needed; do not map one as an attribute. "
        "Attributes that proxy for one (e.g. region) can carry its bias: check grade shares per attribute "
        "level before use.",
        "- Grades steer service levels: a low grade means less attention, which can make a low forecast "
        "self-fulfilling. Review the lowest grades with the people who serve those customers.",
        "- The artifact holds no customer-level rows: only model trees, aggregate reference quantiles and "
        "medians, tree rules, cluster centroids and aggregate evaluation tables. Grade outputs are "
        "customer-level personal data: store them as such.",
        f"- Graded at export for the exactness check: {n_graded:,} customers (not stored).",
        "",
    ]
    return "\n".join(lines)
