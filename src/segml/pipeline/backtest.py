"""The evaluate stage's backtest: refit every baseline and the potential model at earlier cutoffs.

At each cutoff of ``cutoffs.backtest`` the potential model is refit with its own in-calibration selection and
every baseline (R+F+M ranked and plain, past spend, BG/NBD + Gamma-Gamma) is fit on the features there; each is
scored on two windows:

* ``forward``: the ``holdout_days`` after the cutoff (clipped at the data end). When that window reaches past
  ``calibration_end`` it overlaps the holdout (``overlaps_holdout``): its customers and days are partly the
  holdout's, so it is not independent evidence.
* ``rolling``: from the cutoff to ``calibration_end`` only (rolling origin): nothing after the calibration end
  is used, so these rows are honest evidence that could have been used to choose a model.

Every row carries the potential model's normalized-Gini gain over the best baseline at that cutoff and window,
with its paired-bootstrap 95 % interval (``gini_diff``, ``gini_diff_ci``, ``gini_diff_vs``).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from segml import evaluate, features
from segml.jsonable import jsonable
from segml.models import registry
from segml.pipeline.context import TrainContext
from segml.pipeline.families import potential_model
from segml.storage import write_json

#: windows shorter than this are not scored (too few days to rank anyone)
MIN_WINDOW_DAYS = 28
_METRICS = ("normalized_gini", "spearman", "top20_capture", "decile_mape", "total_error")


def _actual(ctx: TrainContext, X: pd.DataFrame, cutoff: dt.date, window: int) -> np.ndarray:
    labels = features.build_labels(ctx.transactions_path, cutoff, window)
    return (
        X[["customer_id"]]
        .merge(labels[["customer_id", "future_spend"]], on="customer_id", how="left")["future_spend"]
        .fillna(0.0)
        .to_numpy(dtype=float)
    )


def _windows(ctx: TrainContext, cutoff: dt.date) -> list[tuple[str, int]]:
    tl = ctx.timeline
    forward = min(tl.holdout_days, (tl.data_end - cutoff).days)
    rolling = min(tl.holdout_days, (tl.calibration_end - cutoff).days)
    windows = [("forward", forward)]
    if cutoff < tl.calibration_end and rolling != forward:
        windows.append(("rolling", rolling))
    return [(name, days) for name, days in windows if days >= MIN_WINDOW_DAYS]


def backtest(ctx: TrainContext, cutoffs: list[dt.date] | None = None) -> pd.DataFrame:
    """Refit the baselines and the potential model at each backtest cutoff and score the forward and the
    rolling-origin windows (see the module docstring). Writes ``reports/<exp>/backtest.json``."""
    tl = ctx.timeline
    cutoffs = cutoffs if cutoffs is not None else list(ctx.cfg.cutoffs.backtest)
    money = registry.money_models()
    rows = []
    for cutoff in cutoffs:
        windows = _windows(ctx, cutoff)
        if not windows or cutoff <= tl.data_start:
            continue
        X = ctx.features_at(cutoff)
        X = X[X["has_purchases"].astype(bool)].reset_index(drop=True)
        ids = X["customer_id"].to_numpy()
        model = potential_model(ctx)
        model.horizon_days = windows[0][1]
        model.fit(ctx.transactions_path, cutoff, ctx.cfg.features, ctx.customers_path, **ctx.event_tables)
        for origin, window in windows:
            actual = _actual(ctx, X, cutoff, window)
            baselines = registry.build_family("baselines", ctx.models.baselines, ctx.cfg.seed, window)
            preds = {name: m.fit(X).predict_value(X) for name, m in baselines.items()}
            model.horizon_days = window  # the same fit, forecasting this window's length
            preds["potential"] = model.predict(X)
            results = {
                name: evaluate.evaluate_predictions(actual, values, ids, predicts_money=money.get(name, True))
                for name, values in preds.items()
            }
            table = evaluate.comparison_table(
                results,
                actual,
                preds,
                [name for name in baselines],
                n_boot=ctx.models.evaluation.n_boot,
                seed=ctx.cfg.seed,
            )
            end = cutoff + dt.timedelta(days=window)
            for row in table:
                rows.append(
                    {
                        "cutoff": cutoff.isoformat(),
                        "origin": origin,
                        "window_days": window,
                        "window_end": end.isoformat(),
                        "overlaps_holdout": bool(end > tl.calibration_end),
                        "model": row["model"],
                        "customers": len(X),
                        **{k: row.get(k) for k in _METRICS},
                        "gini_diff": row.get("gini_diff"),
                        "gini_diff_ci": row.get("gini_diff_ci"),
                        "gini_diff_vs": row.get("gini_diff_vs"),
                    }
                )
    table = pd.DataFrame(rows)
    write_json(ctx.reports / "backtest.json", jsonable(table))
    return table


__all__ = ["MIN_WINDOW_DAYS", "backtest"]
