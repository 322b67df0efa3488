"""Training steps: what ``segml train`` runs headless and notebooks 03–07 call one at a time.

The time axis of an experiment (all dates inclusive)::

    data start ......... calibration_end | holdout (calibration_end, holdout_end] ... data_end
    └─ models see only this ─────────────┘└─ scored once, after selection ─┘

* Every model and baseline is fit with rows up to ``calibration_end`` only and scored on the holdout spend of
  the customers who had bought by then. Potential-value candidate selection happens inside the calibration
  period (see :mod:`segml.models.potential`).
* The production potential model is then refit with the selected settings on all data up to ``data_end``
  (the last transaction day); it produces the current grades.

Each ``fit_*`` step persists what later steps need — holdout predictions (customer-level, under
``data/processed/<exp>/``) and an aggregate JSON (under ``reports/<exp>/models/``) — so steps can run in
separate processes (papermill kernels) and nothing trains twice. :func:`compare` and :func:`grade_customers`
read those files back.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from segml import evaluate, features
from segml.config import ExperimentConfig, from_mapping
from segml.errors import ConfigError, SegmlError
from segml.storage import write_json, write_parquet, write_text

# ----------------------------------------------------------------------------------------------------------
# models: section of the experiment YAML


@dataclass
class PotentialSettings:
    """LightGBM potential-value model (``segml.models.potential.PotentialValueModel``)."""

    objective: Literal["auto", "tweedie", "hurdle"] = "auto"
    n_estimators: int | None = None
    max_estimators: int = 400
    categorical: Literal["auto", "drop"] = "auto"
    max_levels: int = 50
    seasonality: Literal["auto", "flat"] = "auto"
    num_threads: int = 1


@dataclass
class ClusteringSettings:
    method: Literal["kmeans", "gmm"] = "kmeans"
    k_min: int = 3
    k_max: int = 8
    selection: Literal["silhouette", "bic"] | None = None
    silhouette_sample: int = 5000
    features: list[str] | None = None


@dataclass
class TreeSettings:
    max_depth: int = 3
    min_samples_leaf: float = 0.01
    target: Literal["auto", "log1p", "raw"] = "auto"
    #: depth of the tree distilled from the final grades (rules for the sales team)
    rules_max_depth: int = 4


@dataclass
class BaselineSettings:
    rfm_bins: int = 5
    btyd_penalizer: float = 0.0
    gg_penalizer: float = 0.0


@dataclass
class EvaluationSettings:
    #: paired bootstrap replicates for the Gini-difference CI
    n_boot: int = 1000
    #: run the backtest over cutoffs.backtest in `segml train`
    backtest: bool = True


@dataclass
class ModelsConfig:
    potential: PotentialSettings = field(default_factory=PotentialSettings)
    clustering: ClusteringSettings = field(default_factory=ClusteringSettings)
    tree: TreeSettings = field(default_factory=TreeSettings)
    baselines: BaselineSettings = field(default_factory=BaselineSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)


def models_config(cfg: ExperimentConfig) -> ModelsConfig:
    """Validate the experiment's ``models:`` section (unknown keys are errors naming the key path)."""
    try:
        return from_mapping(ModelsConfig, cfg.models or {}, "models")
    except ConfigError as exc:
        where = cfg.source_path or cfg.name
        raise ConfigError(f"{where}: {exc}") from None


BASELINES = ("rfm", "past_spend", "btyd")
MODEL_FAMILIES = ("baselines", "clustering", "tree", "potential")


# ----------------------------------------------------------------------------------------------------------
# Context: the data every step shares


@dataclass
class Timeline:
    data_start: dt.date
    calibration_end: dt.date
    holdout_end: dt.date
    data_end: dt.date
    horizon_days: int

    @property
    def holdout_days(self) -> int:
        return (self.holdout_end - self.calibration_end).days

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_start": self.data_start.isoformat(),
            "calibration_end": self.calibration_end.isoformat(),
            "holdout_end": self.holdout_end.isoformat(),
            "data_end": self.data_end.isoformat(),
            "horizon_days": self.horizon_days,
            "holdout_days": self.holdout_days,
        }


@dataclass
class TrainContext:
    """Inputs shared by the steps. Build with :func:`load_context`."""

    cfg: ExperimentConfig
    models: ModelsConfig
    timeline: Timeline
    transactions_path: Path
    customers_path: Path | None
    #: features at calibration_end of customers who bought by then (the evaluation population)
    calibration_features: pd.DataFrame
    #: net spend of those customers in the holdout (aligned by position)
    holdout_spend: np.ndarray

    @property
    def eval_ids(self) -> np.ndarray:
        return self.calibration_features["customer_id"].to_numpy()

    @property
    def processed(self) -> Path:
        return self.cfg.paths.processed

    @property
    def reports(self) -> Path:
        return self.cfg.paths.reports

    def predictions_file(self, family: str) -> Path:
        return self.processed / "holdout_predictions" / f"{family}.parquet"

    def model_report_file(self, family: str) -> Path:
        return self.reports / "models" / f"{family}.json"

    def model_state_file(self, name: str) -> Path:
        return self.processed / "models" / f"{name}.json"


def _read_dq(cfg: ExperimentConfig) -> dict[str, Any]:
    path = cfg.paths.dq_report
    if not path.is_file() or not cfg.paths.clean_transactions.is_file():
        raise SegmlError(
            f"{cfg.paths.clean_transactions}: clean transactions not found — run `segml ingest "
            f"{cfg.source_path or cfg.name}` first"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_context(cfg: ExperimentConfig) -> TrainContext:
    """Read the clean data, fix the timeline and build the evaluation population and its holdout spend."""
    models = models_config(cfg)
    dq = _read_dq(cfg)
    data_start = dt.date.fromisoformat(dq["date_min"])
    data_end = dt.date.fromisoformat(dq["date_max"])
    cal_end = cfg.cutoffs.calibration_end
    holdout_end = min(cfg.cutoffs.holdout_end or data_end, data_end)
    horizon = cfg.cutoffs.horizon_days
    if not data_start < cal_end < holdout_end:
        raise ConfigError(
            f"cutoffs.calibration_end {cal_end} must lie inside the data period {data_start}..{data_end} "
            f"and before the holdout end {holdout_end}"
        )
    timeline = Timeline(data_start, cal_end, holdout_end, data_end, horizon)
    transactions = cfg.paths.clean_transactions
    customers = (
        cfg.paths.clean_customers if cfg.data.customers and cfg.paths.clean_customers.is_file() else None
    )

    feats = features.build_features(transactions, cal_end, cfg.features, customers)
    feats = feats[feats["has_purchases"].astype(bool)].reset_index(drop=True)
    # The holdout spend is observed over (calibration_end, holdout_end]; horizon_days sets what the money
    # models forecast, so the two must agree for money metrics to mean anything.
    labels = features.build_labels(transactions, cal_end, timeline.holdout_days)
    spend = (
        feats[["customer_id"]]
        .merge(labels[["customer_id", "future_spend"]], on="customer_id", how="left")["future_spend"]
        .fillna(0.0)
        .to_numpy(dtype=float)
    )
    return TrainContext(cfg, models, timeline, transactions, customers, feats, spend)


# ----------------------------------------------------------------------------------------------------------
# Results


@dataclass
class FamilyResult:
    """What one model family produced on the holdout."""

    family: str
    #: model name -> prediction per evaluation customer (aligned with ctx.eval_ids)
    predictions: dict[str, np.ndarray]
    #: model name -> True when the prediction is money over the horizon (decile MAPE, total error apply)
    predicts_money: dict[str, bool]
    #: aggregate, JSON-able details (profiles, rules, diagnostics, selection, timings)
    details: dict[str, Any]
    #: fitted objects, in memory only
    fitted: dict[str, Any] = field(default_factory=dict, repr=False)


def _persist(ctx: TrainContext, result: FamilyResult) -> FamilyResult:
    frame = pd.DataFrame({"customer_id": ctx.eval_ids})
    for name, values in result.predictions.items():
        frame[name] = np.asarray(values, dtype=float)
    write_parquet(frame, ctx.predictions_file(result.family))
    metrics = {
        name: evaluate.evaluate_predictions(
            ctx.holdout_spend, values, ctx.eval_ids, predicts_money=result.predicts_money[name]
        )
        for name, values in result.predictions.items()
    }
    for m in metrics.values():
        m.pop("decile_table", None)
    document = {
        "family": result.family,
        "models": {name: {"predicts_money": result.predicts_money[name]} for name in result.predictions},
        "holdout_metrics": metrics,
        "timeline": ctx.timeline.to_dict(),
        **result.details,
    }
    write_json(ctx.model_report_file(result.family), _jsonable(document))
    result.details["holdout_metrics"] = metrics
    return result


def _jsonable(obj: Any) -> Any:
    """Convert numpy / pandas / dates to plain JSON types (NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, pd.DataFrame):
        return _jsonable(obj.to_dict(orient="records"))
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dt.date | pd.Timestamp):
        return obj.isoformat()
    return obj


def _timed(start: float) -> float:
    return round(time.perf_counter() - start, 3)


# ----------------------------------------------------------------------------------------------------------
# Steps


def fit_baselines(ctx: TrainContext) -> FamilyResult:
    """RFM quintile score, past spend and BG/NBD + Gamma-Gamma, fit on calibration features."""
    from segml.models.baselines import BTYDModel, PastSpend, RFMScore

    settings = ctx.models.baselines
    X = ctx.calibration_features
    horizon = ctx.timeline.holdout_days
    t0 = time.perf_counter()
    rfm = RFMScore(n_bins=settings.rfm_bins).fit(X)
    past = PastSpend().fit(X)
    btyd = BTYDModel(penalizer=settings.btyd_penalizer, gg_penalizer=settings.gg_penalizer).fit(X)
    predictions = {
        "rfm": rfm.predict_rank_key(X),
        "past_spend": past.predict(X, horizon),
        "btyd": btyd.predict(X, horizon),
    }
    details = {
        "btyd_diagnostics": btyd.diagnostics_,
        "rfm_score_counts": pd.Series(rfm.predict(X)).value_counts().sort_index().to_dict(),
        "fit_seconds": _timed(t0),
    }
    result = FamilyResult(
        "baselines",
        predictions,
        {"rfm": False, "past_spend": True, "btyd": True},
        details,
        {"rfm": rfm, "past_spend": past, "btyd": btyd},
    )
    return _persist(ctx, result)


def _calibration_training_frame(ctx: TrainContext) -> pd.DataFrame:
    """Features at a cutoff inside calibration with labels observed up to calibration_end.

    Used by the clustering value map and the spend tree: their targets must come from the calibration
    period only. The label is a per-day spend rate scaled to the holdout length, so the target is in the
    same units as the holdout spend.
    """
    tl = ctx.timeline
    span = (tl.calibration_end - tl.data_start).days
    label_days = max(min(tl.holdout_days, span // 2), 1)
    cutoff = tl.calibration_end - dt.timedelta(days=label_days)
    frame = features.training_frame(
        ctx.transactions_path,
        [cutoff],
        label_days,
        ctx.cfg.features,
        ctx.customers_path,
        label_end=tl.calibration_end,
    )
    frame = frame[frame["has_purchases"].astype(bool)].reset_index(drop=True)
    scale = tl.holdout_days / frame["label_days"].clip(lower=1)
    frame["target"] = frame["future_spend"].clip(lower=0) * scale
    return frame


def fit_clustering(ctx: TrainContext) -> FamilyResult:
    """Value-ordered clustering of calibration features; a cluster's value is its mean future spend
    measured inside the calibration period."""
    from threadpoolctl import threadpool_limits

    from segml.models.clustering import ValueClustering

    s = ctx.models.clustering
    t0 = time.perf_counter()
    train = _calibration_training_frame(ctx)
    # k-means/GMM use OpenMP; one thread keeps results identical across machines and avoids
    # oversubscription on small machines.
    with threadpool_limits(1):
        model = ValueClustering(
            method=s.method,
            k_range=(s.k_min, s.k_max),
            features=s.features,
            selection=s.selection,
            silhouette_sample=s.silhouette_sample,
            random_state=ctx.cfg.seed,
        ).fit(train, train["target"].to_numpy())
        X = ctx.calibration_features
        value = model.predict_value(X)
        profile = model.profile(X, ctx.holdout_spend)
    details = {
        "method": s.method,
        "k": int(model.k_),
        "selection": model.selection_,
        "selection_criterion": model.selection_criterion_,
        "profile_holdout": profile,
        "fit_seconds": _timed(t0),
    }
    result = FamilyResult(
        "clustering", {"clustering": value}, {"clustering": True}, details, {"model": model}
    )
    write_json(ctx.model_state_file("clustering"), _jsonable(model.to_dict()))
    return _persist(ctx, result)


def fit_tree(ctx: TrainContext) -> FamilyResult:
    """Shallow decision tree fit directly on future spend measured inside calibration."""
    from segml.models.tree import SpendTree

    s = ctx.models.tree
    t0 = time.perf_counter()
    train = _calibration_training_frame(ctx)
    model = SpendTree(
        max_depth=s.max_depth,
        min_samples_leaf=s.min_samples_leaf,
        target=s.target,
        features=features.NUMERIC_FEATURES(ctx.cfg.features),
        random_state=ctx.cfg.seed,
    ).fit(train, train["target"].to_numpy())
    prediction = model.predict(ctx.calibration_features)
    details = {
        "target": model.target_,
        "target_selection": model.target_selection_,
        "rules_text": model.rules_text(currency=ctx.cfg.data.currency),
        "rules": model.rules_json(),
        "fit_seconds": _timed(t0),
    }
    write_json(ctx.model_state_file("spend_tree"), _jsonable(model.to_dict()))
    result = FamilyResult("tree", {"spend_tree": prediction}, {"spend_tree": True}, details, {"model": model})
    return _persist(ctx, result)


def _potential_model(ctx: TrainContext):
    from segml.models.potential import PotentialValueModel

    s = ctx.models.potential
    return PotentialValueModel(
        horizon_days=ctx.timeline.holdout_days,
        objective=s.objective,
        n_estimators=s.n_estimators,
        max_estimators=s.max_estimators,
        categorical=s.categorical,
        max_levels=s.max_levels,
        seasonality=s.seasonality,
        random_state=ctx.cfg.seed,
        num_threads=s.num_threads,
    )


def fit_potential(ctx: TrainContext, *, production: bool = True) -> FamilyResult:
    """LightGBM potential value: selection and fit inside calibration, one holdout score, then (optionally)
    the production refit on all data up to data_end with the selected settings."""
    t0 = time.perf_counter()
    model = _potential_model(ctx).fit(
        ctx.transactions_path, ctx.timeline.calibration_end, ctx.cfg.features, ctx.customers_path
    )
    fit_seconds = _timed(t0)
    prediction = model.predict(ctx.calibration_features)
    contrib = model.predict_contrib(ctx.calibration_features)
    from segml.explain import global_importance

    details: dict[str, Any] = {
        "objective": model.objective_,
        "n_estimators": model.n_estimators_,
        "selection": model.selection_,
        "season_profile": model.season_profile_,
        "params": model.params_,
        "global_importance": global_importance(contrib),
        "fit_seconds": fit_seconds,
    }
    fitted: dict[str, Any] = {"holdout_model": model}
    write_json(ctx.model_state_file("potential_holdout"), _jsonable(model.to_dict()))
    if production:
        t1 = time.perf_counter()
        prod = model.fit_production(
            ctx.transactions_path, ctx.timeline.data_end, ctx.cfg.features, ctx.customers_path
        )
        details["production_fit_seconds"] = _timed(t1)
        details["production_training_end"] = ctx.timeline.data_end
        write_json(ctx.model_state_file("potential_production"), _jsonable(prod.to_dict()))
        fitted["production_model"] = prod
    result = FamilyResult("potential", {"potential": prediction}, {"potential": True}, details, fitted)
    return _persist(ctx, result)


# ----------------------------------------------------------------------------------------------------------
# Comparison, holdout grading check, current grades


def load_predictions(ctx: TrainContext, families: tuple[str, ...] = MODEL_FAMILIES) -> dict[str, np.ndarray]:
    """Holdout predictions persisted by the fit steps, aligned with ``ctx.eval_ids``."""
    predictions: dict[str, np.ndarray] = {}
    for family in families:
        path = ctx.predictions_file(family)
        if not path.is_file():
            raise SegmlError(f"{path}: no holdout predictions for '{family}' — run its fit step first")
        frame = pd.read_parquet(path)
        if not np.array_equal(frame["customer_id"].to_numpy(), ctx.eval_ids):
            raise SegmlError(f"{path}: customers differ from the current evaluation population — refit")
        for column in frame.columns.drop("customer_id"):
            predictions[column] = frame[column].to_numpy(dtype=float)
    return predictions


MONEY_MODELS = {"rfm": False, "past_spend": True, "btyd": True, "clustering": True, "spend_tree": True}


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
    table = _jsonable(table)
    write_json(ctx.reports / "comparison.json", table)
    deciles = {
        name: evaluate.decile_table(ctx.holdout_spend, values, ctx.eval_ids)
        for name, values in predictions.items()
        if MONEY_MODELS.get(name, True)
    }
    write_json(
        ctx.reports / "holdout.json",
        _jsonable(
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
    write_json(ctx.reports / "holdout_grades.json", _jsonable(check))
    return check


@dataclass
class GradeOutputs:
    grades: pd.DataFrame
    summary: pd.DataFrame
    rules_text: str
    fidelity: dict[str, Any]


def grade_customers(ctx: TrainContext, production_model: Any | None = None) -> GradeOutputs:
    """Current grades at data_end from the production potential model, with reason codes and the rules
    distilled from the grades. Writes ``data/processed/<exp>/grades.parquet``."""
    from segml.explain import reference_stats
    from segml.models.potential import PotentialValueModel
    from segml.models.tree import GradeRulesTree
    from segml.policy import GradePolicy, grade_summary
    from segml.scoring import grade_features

    if production_model is None:
        state_file = ctx.model_state_file("potential_production")
        if not state_file.is_file():
            raise SegmlError(f"{state_file}: no production model — run the potential step first")
        production_model = PotentialValueModel.from_dict(json.loads(state_file.read_text(encoding="utf-8")))
    now = features.build_features(
        ctx.transactions_path, ctx.timeline.data_end, ctx.cfg.features, ctx.customers_path
    )
    potential = production_model.predict(now)
    policy = GradePolicy.from_config(ctx.cfg.policy)
    fitted = policy.fit(now, potential)
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
    )
    write_parquet(graded, ctx.processed / "grades.parquet")
    write_text(ctx.model_state_file("policy").with_suffix(".yaml"), fitted.to_yaml())
    write_json(ctx.model_state_file("reference_stats"), _jsonable(reference))

    purchased = now["has_purchases"].astype(bool).to_numpy()
    rules = GradeRulesTree(
        max_depth=ctx.models.tree.rules_max_depth,
        features=features.NUMERIC_FEATURES(ctx.cfg.features),
        random_state=ctx.cfg.seed,
    ).fit(now[purchased], graded.loc[purchased, "grade"].to_numpy())
    write_json(ctx.model_state_file("grade_rules"), _jsonable(rules.to_dict()))
    value = now[policy.value_feature].fillna(0.0).to_numpy(dtype=float)
    summary = grade_summary(graded, value, potential, policy=fitted)
    rules_text = rules.rules_text()
    write_json(
        ctx.reports / "grades_summary.json",
        _jsonable(
            {
                "as_of": ctx.timeline.data_end,
                "customers": len(graded),
                "summary": summary,
                "matrix": graded.groupby(["value_level", "potential_level"]).size().reset_index(name="n"),
                "grade_rules_text": rules_text,
                "grade_rules": rules.rules_json(),
                "grade_rules_fidelity": rules.fidelity_,
                "global_importance": _global_importance_safe(contrib),
            }
        ),
    )
    return GradeOutputs(graded, summary, rules_text, rules.fidelity_)


def _global_importance_safe(contrib: pd.DataFrame) -> Any:
    from segml.explain import global_importance

    return global_importance(contrib)


# ----------------------------------------------------------------------------------------------------------
# Backtest


def backtest(ctx: TrainContext, cutoffs: list[dt.date] | None = None) -> pd.DataFrame:
    """Refit baselines and the potential model (with its own in-calibration selection) at each backtest
    cutoff and score the following window of ``holdout_days`` (clipped at data_end)."""
    from segml.models.baselines import BTYDModel, RFMScore

    cutoffs = cutoffs if cutoffs is not None else list(ctx.cfg.cutoffs.backtest)
    rows = []
    for cutoff in cutoffs:
        window = min(ctx.timeline.holdout_days, (ctx.timeline.data_end - cutoff).days)
        if window < 28 or cutoff <= ctx.timeline.data_start:
            continue
        X = features.build_features(ctx.transactions_path, cutoff, ctx.cfg.features, ctx.customers_path)
        X = X[X["has_purchases"].astype(bool)].reset_index(drop=True)
        labels = features.build_labels(ctx.transactions_path, cutoff, window)
        actual = (
            X[["customer_id"]]
            .merge(labels[["customer_id", "future_spend"]], on="customer_id", how="left")["future_spend"]
            .fillna(0.0)
            .to_numpy(dtype=float)
        )
        s = ctx.models.baselines
        model = _potential_model(ctx)
        model.horizon_days = window
        model.fit(ctx.transactions_path, cutoff, ctx.cfg.features, ctx.customers_path)
        preds = {
            "rfm": RFMScore(n_bins=s.rfm_bins).fit(X).predict_rank_key(X),
            "btyd": BTYDModel(penalizer=s.btyd_penalizer, gg_penalizer=s.gg_penalizer)
            .fit(X)
            .predict(X, window),
            "potential": model.predict(X),
        }
        for name, values in preds.items():
            m = evaluate.evaluate_predictions(actual, values, X["customer_id"].to_numpy(), name != "rfm")
            rows.append(
                {
                    "cutoff": cutoff.isoformat(),
                    "window_days": window,
                    "model": name,
                    "customers": len(X),
                    **{k: m[k] for k in ("normalized_gini", "spearman", "top20_capture", "total_error")},
                }
            )
    table = pd.DataFrame(rows)
    write_json(ctx.reports / "backtest.json", _jsonable(table))
    return table


# ----------------------------------------------------------------------------------------------------------
# Headless run


@dataclass
class TrainOutputs:
    comparison: list[dict[str, Any]]
    grades_path: Path
    holdout_check: dict[str, Any]
    backtest: pd.DataFrame | None
    seconds: dict[str, float] = field(default_factory=dict)


def run_train(
    cfg: ExperimentConfig, *, backtest_cutoffs: bool | None = None, progress: bool = True
) -> TrainOutputs:
    """Fit every family, compare on the holdout, check grade monotonicity, grade current customers."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    seconds: dict[str, float] = {}
    steps: list[tuple[str, Any]] = []
    state: dict[str, Any] = {}

    def step(name: str):
        def decorator(fn):
            steps.append((name, fn))
            return fn

        return decorator

    @step("features + holdout labels")
    def _ctx():
        state["ctx"] = load_context(cfg)

    @step("baselines (RFM, past spend, BG/NBD)")
    def _baselines():
        state["baselines"] = fit_baselines(state["ctx"])

    @step("clustering")
    def _clustering():
        state["clustering"] = fit_clustering(state["ctx"])

    @step("decision tree")
    def _tree():
        state["tree"] = fit_tree(state["ctx"])

    @step("potential value (LightGBM) + production refit")
    def _potential():
        state["potential"] = fit_potential(state["ctx"])

    @step("comparison")
    def _compare():
        state["comparison"] = compare(state["ctx"])
        state["holdout_check"] = holdout_grades(state["ctx"], state["potential"].predictions["potential"])

    @step("current grades")
    def _grades():
        state["grades"] = grade_customers(state["ctx"], state["potential"].fitted["production_model"])

    run_backtest = models_config(cfg).evaluation.backtest if backtest_cutoffs is None else backtest_cutoffs

    if run_backtest and cfg.cutoffs.backtest:

        @step("backtest")
        def _backtest():
            state["backtest"] = backtest(state["ctx"])

    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TimeElapsedColumn(),
        disable=not progress,
        transient=False,
    ) as bar:
        for name, fn in steps:
            task = bar.add_task(name, total=1)
            t0 = time.perf_counter()
            fn()
            seconds[name] = _timed(t0)
            bar.update(task, completed=1)
    seconds["total"] = round(sum(seconds.values()), 3)
    write_json(state["ctx"].reports / "train_timings.json", seconds)
    return TrainOutputs(
        comparison=state["comparison"],
        grades_path=state["ctx"].processed / "grades.parquet",
        holdout_check=state["holdout_check"],
        backtest=state.get("backtest"),
        seconds=seconds,
    )


__all__ = [
    "FamilyResult",
    "ModelsConfig",
    "TrainContext",
    "backtest",
    "compare",
    "fit_baselines",
    "fit_clustering",
    "fit_potential",
    "fit_tree",
    "grade_customers",
    "holdout_grades",
    "load_context",
    "models_config",
    "run_train",
]
