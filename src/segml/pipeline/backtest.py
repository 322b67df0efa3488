"""The evaluate stage's backtest: refit baselines and the potential model at earlier cutoffs."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from segml import evaluate, features
from segml.jsonable import jsonable
from segml.pipeline.context import TrainContext
from segml.pipeline.families import potential_model
from segml.storage import write_json


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
        model = potential_model(ctx)
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
    write_json(ctx.reports / "backtest.json", jsonable(table))
    return table


__all__ = ["backtest"]
