"""Fit stages of each model family: baselines, clustering, spend tree and the potential-value model.

Each fit persists what later stages need — holdout predictions (customer-level, under
``data/processed/<exp>/holdout_predictions/``), an aggregate JSON (``reports/<exp>/models/<family>.json``) and
the fitted state (``data/processed/<exp>/models/``) — so stages can run in separate processes (papermill
kernels) and nothing trains twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from segml import evaluate, features
from segml.errors import ConfigError, SegmlError
from segml.jsonable import jsonable
from segml.models import registry
from segml.models.intervals import interval_report
from segml.pipeline.context import TrainContext
from segml.storage import write_json, write_parquet

#: the baselines a model must beat (the best of them is the reference of every comparison)
BASELINES = ("rfm", "rfm_sum", "past_spend", "btyd")
#: the model families, in fit order (from the model registry)
MODEL_FAMILIES = registry.family_names()


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


def persist(ctx: TrainContext, result: FamilyResult) -> FamilyResult:
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
    write_json(ctx.model_report_file(result.family), jsonable(document))
    result.details["holdout_metrics"] = metrics
    return result


def _timed(start: float) -> float:
    return round(time.perf_counter() - start, 3)


@contextlib.contextmanager
def yaml_errors(family: str) -> Iterator[None]:
    """A model's ``ValueError`` naming its parameter becomes a configuration error naming the YAML key
    (``models.potential.max_estimators: …``, ``cutoffs.horizon_days: …``)."""
    from segml.models.base import InvalidParameter

    try:
        yield
    except InvalidParameter as exc:
        raise ConfigError(f"{registry.config_key(family, exc.parameter)}: {exc}") from None


def fit_baselines(ctx: TrainContext) -> FamilyResult:
    """The baselines users know — R+F+M (ties broken by M), plain R+F+M, past spend and BG/NBD + Gamma-Gamma —
    fit on the calibration features, each through the model-family interface."""
    X = ctx.calibration_features
    t0 = time.perf_counter()
    models = registry.build_family("baselines", ctx.models.baselines, ctx.cfg.seed, ctx.timeline.holdout_days)
    with yaml_errors("baselines"):
        fitted = {name: model.fit(X) for name, model in models.items()}
    predictions = {name: model.predict_value(X) for name, model in fitted.items()}
    details = {
        "btyd_diagnostics": fitted["btyd"].diagnostics_,
        "rfm_score_counts": pd.Series(fitted["rfm_sum"].predict(X)).value_counts().sort_index().to_dict(),
        "fit_seconds": _timed(t0),
    }
    money = registry.family("baselines").predicts_money
    result = FamilyResult("baselines", predictions, money, details, fitted)
    return persist(ctx, result)


def calibration_training_frame(ctx: TrainContext) -> pd.DataFrame:
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
        **ctx.feature_kwargs,
    )
    frame = frame[frame["has_purchases"].astype(bool)].reset_index(drop=True)
    scale = tl.holdout_days / frame["label_days"].clip(lower=1)
    frame["target"] = frame["future_spend"].clip(lower=0) * scale
    return frame


def default_cluster_features(spec: Any) -> list[str]:
    """The clustering model's default features, with its 365-day spend replaced by the longest spend window
    this configuration builds (a four-month data set has no 365-day window)."""
    from segml.models.clustering import DEFAULT_CLUSTER_FEATURES

    longest = f"spend_{max(spec.windows)}d"
    return [longest if name == "spend_365d" else name for name in DEFAULT_CLUSTER_FEATURES]


def fit_clustering(ctx: TrainContext) -> FamilyResult:
    with yaml_errors("clustering"):
        return _fit_clustering(ctx)


def _fit_clustering(ctx: TrainContext) -> FamilyResult:
    """Value-ordered clustering of calibration features; a cluster's value is its mean future spend
    measured inside the calibration period."""
    from threadpoolctl import threadpool_limits

    from segml.models.clustering import ValueClustering

    s = ctx.models.clustering
    t0 = time.perf_counter()
    train = calibration_training_frame(ctx)
    # k-means/GMM use OpenMP; one thread keeps results identical across machines and avoids
    # oversubscription on small machines.
    with threadpool_limits(1):
        model = ValueClustering(
            method=s.method,
            k_range=(s.k_min, s.k_max),
            features=s.features or default_cluster_features(ctx.cfg.features),
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
    write_json(ctx.model_state_file("clustering"), jsonable(model.to_dict()))
    return persist(ctx, result)


def fit_tree(ctx: TrainContext) -> FamilyResult:
    with yaml_errors("tree"):
        return _fit_tree(ctx)


def _fit_tree(ctx: TrainContext) -> FamilyResult:
    """Shallow decision tree fit directly on future spend measured inside calibration."""
    from segml.models.tree import SpendTree

    s = ctx.models.tree
    t0 = time.perf_counter()
    train = calibration_training_frame(ctx)
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
    write_json(ctx.model_state_file("spend_tree"), jsonable(model.to_dict()))
    result = FamilyResult("tree", {"spend_tree": prediction}, {"spend_tree": True}, details, {"model": model})
    return persist(ctx, result)


#: the potential model refit without the event sources (``data.invoices`` / ``data.interactions``), shown in the
#: comparison when the experiment has them
TRANSACTIONS_ONLY = "potential_transactions_only"


def potential_model(ctx: TrainContext):
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
        monotone=s.monotone,
        blend=s.blend,
        lapse=s.lapse,
    )


def fit_potential(ctx: TrainContext, *, production: bool = True) -> FamilyResult:
    """LightGBM potential value: selection and fit inside calibration, one holdout score, then (optionally)
    the production refit on all data up to data_end with the selected settings."""
    with yaml_errors("potential"):
        return _fit_potential(ctx, production=production)


def _fit_potential(ctx: TrainContext, *, production: bool = True) -> FamilyResult:
    """LightGBM potential value: selection and fit inside calibration, one holdout score, then (optionally)
    the production refit on all data up to data_end with the selected settings."""
    t0 = time.perf_counter()
    model = potential_model(ctx).fit(
        ctx.transactions_path,
        ctx.timeline.calibration_end,
        ctx.cfg.features,
        ctx.customers_path,
        **ctx.event_tables,
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
    low, high = model.predict_interval(ctx.calibration_features, prediction)
    # the P10 / P90 against the realised holdout spend (reported, never used to choose anything)
    details["interval"] = interval_report(
        ctx.holdout_spend, prediction, low, high, model.params_.get("interval")
    )
    predictions = {"potential": prediction}
    events = sorted(name for name, table in ctx.event_tables.items() if table is not None)
    if events:
        # what the event sources are worth: the same settings on transactions (and customers) alone, scored on
        # the same holdout; reported next to the model, never used to choose it
        t2 = time.perf_counter()
        plain = potential_model(ctx).fit(
            ctx.transactions_path, ctx.timeline.calibration_end, ctx.cfg.features, ctx.customers_path
        )
        predictions[TRANSACTIONS_ONLY] = plain.predict(ctx.calibration_features)
        diff, low, high = evaluate.paired_bootstrap_gini_diff(
            ctx.holdout_spend,
            prediction,
            predictions[TRANSACTIONS_ONLY],
            n_boot=ctx.models.evaluation.n_boot,
            seed=ctx.cfg.seed,
        )
        details["event_sources"] = {
            "sources": events,
            "transactions_only_fit_seconds": _timed(t2),
            "holdout_gini": evaluate.normalized_gini(ctx.holdout_spend, prediction),
            "holdout_gini_transactions_only": evaluate.normalized_gini(
                ctx.holdout_spend, predictions[TRANSACTIONS_ONLY]
            ),
            "holdout_gini_gain": {"diff": diff, "low": low, "high": high},
        }
    fitted: dict[str, Any] = {"holdout_model": model}
    write_json(ctx.model_state_file("potential_holdout"), jsonable(model.to_dict()))
    if production:
        t1 = time.perf_counter()
        prod = model.fit_production(
            ctx.transactions_path,
            ctx.timeline.data_end,
            ctx.cfg.features,
            ctx.customers_path,
            **ctx.event_tables,
        )
        details["production_fit_seconds"] = _timed(t1)
        details["production_training_end"] = ctx.timeline.data_end
        write_json(ctx.model_state_file("potential_production"), jsonable(prod.to_dict()))
        fitted["production_model"] = prod
    money = dict.fromkeys(predictions, True)
    result = FamilyResult("potential", predictions, money, details, fitted)
    return persist(ctx, result)


#: model name -> True when it predicts money over the horizon (from the model registry)
MONEY_MODELS = registry.money_models()


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


__all__ = [
    "BASELINES",
    "MODEL_FAMILIES",
    "MONEY_MODELS",
    "FamilyResult",
    "calibration_training_frame",
    "fit_baselines",
    "fit_clustering",
    "fit_potential",
    "fit_tree",
    "load_predictions",
    "persist",
    "potential_model",
]
