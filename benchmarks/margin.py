"""Benchmark: the margin forecast on the holdout, where the data maps a product cost.

Two margin forecasts, scored against the margin customers realised in the holdout (unclipped: a loss-making
customer counts negative):

* ``margin_model`` — the potential model trained on the margin label (``PotentialValueModel(target="margin")``:
  the same settings, the margin features as inputs, each window's margin clipped at 0, no spend blend);
* ``margin_forecast`` — the spend forecast × the customer's own margin rate shrunk towards the population's
  (``segml.summaries.predicted_margin``: what the grading report's margin ROI uses);

next to two references computed in the same run:

* ``past_margin`` — the customer's margin over the longest feature window, as a run rate over the holdout;
* ``population_rate`` — the same spend forecast × the population's margin rate (no per-customer rate), which
  isolates what the per-customer rate adds to the ranking.

The potential model is the experiment's (its settings, fit on data up to the calibration end only); the
holdout is scored once. Data sets: ``tafeng`` (``experiments/tafeng.yaml``, ``cost: ASSET``, read in place from
``../shared/data/tafeng``) and ``synthetic`` (``segml synth --customers 5000 --seed 3`` when the generator writes
a ``cost`` column; its truth adds Spearman against ``true_expected_margin``).

Writes ``benchmarks/results/margin.json`` and the table between the markers in ``benchmarks/README.md``.

Usage::

    .venv/bin/python benchmarks/margin.py                      # tafeng and synthetic
    .venv/bin/python benchmarks/margin.py --datasets tafeng
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from typing import Any

import numpy as np
import pandas as pd
from _common import update_readme_block  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from segml import evaluate  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "margin.json"
README = REPO / "benchmarks" / "README.md"
BEGIN_MARK = "<!-- margin-benchmark:begin -->"
END_MARK = "<!-- margin-benchmark:end -->"
DATASETS = ("tafeng", "synthetic")
N_BOOT = 1000


def _project(name: str, work: Path, tafeng: Path) -> Path:
    """A scratch project root for one data set; returns its experiment YAML."""
    (work / "experiments").mkdir(parents=True, exist_ok=True)
    (work / "pyproject.toml").write_text("[project]\nname = 'scratch'\n")
    experiment = "tafeng" if name == "tafeng" else "synthetic"
    text = (REPO / "experiments" / f"{experiment}.yaml").read_text(encoding="utf-8")
    if name == "tafeng":
        text = text.replace("../shared/data/tafeng", str(tafeng))
    else:
        from segml.datasets.synthetic import SynthSpec, write_synthetic

        write_synthetic(
            SynthSpec(n_customers=5000, seed=3, planted=True), work / "data" / "raw" / "synthetic"
        )
    path = work / "experiments" / f"{experiment}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _holdout_margin(cfg: Any, ids: np.ndarray, start: dt.date, end: dt.date) -> np.ndarray:
    tx = pd.read_parquet(cfg.paths.clean_transactions, columns=["customer_id", "timestamp", "margin"])
    day = pd.to_datetime(tx["timestamp"]).dt.normalize()
    inside = (day > pd.Timestamp(start)) & (day <= pd.Timestamp(end))
    margin = tx.loc[inside].groupby("customer_id")["margin"].sum()
    return pd.Series(ids).map(margin).fillna(0.0).to_numpy(dtype=float)


def _metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    table = evaluate.decile_table(actual, predicted)
    return {
        "normalized_gini": evaluate.normalized_gini(actual, predicted),
        "spearman": evaluate.spearman(actual, predicted),
        "top20_capture": evaluate.top_k_capture(actual, predicted, 0.2),
        "decile_mape": evaluate.decile_mape(table),
        "total_error": evaluate.total_error(actual, predicted),
    }


def evaluate_dataset(name: str, tafeng: Path) -> dict[str, Any]:
    from segml.config import load_experiment
    from segml.ingest import run_ingest
    from segml.pipeline.context import load_context
    from segml.pipeline.families import potential_model
    from segml.summaries import predicted_margin

    work = Path(tempfile.mkdtemp(prefix=f"segml-margin-{name}-"))
    try:
        cfg = load_experiment(_project(name, work, tafeng), root=work)
        run_ingest(cfg)
        ctx = load_context(cfg)
        features = ctx.calibration_features
        if "margin_total" not in features.columns:
            return {"error": f"{name}: the experiment maps no cost or margin role"}
        tl = ctx.timeline
        started = time.perf_counter()
        model = potential_model(ctx).fit(
            ctx.transactions_path, tl.calibration_end, cfg.features, ctx.customers_path, **ctx.event_tables
        )
        fit_seconds = time.perf_counter() - started
        spend_forecast = model.predict(features)
        started = time.perf_counter()
        margin_model = potential_model(ctx)
        margin_model.target = "margin"  # the same settings, trained on the (clipped) margin label
        margin_model.fit(
            ctx.transactions_path, tl.calibration_end, cfg.features, ctx.customers_path, **ctx.event_tables
        )
        margin_fit_seconds = time.perf_counter() - started
        actual = _holdout_margin(cfg, ctx.eval_ids, tl.calibration_end, tl.holdout_end)
        forecast = predicted_margin(features, spend_forecast)
        gross = features["gross_spend"].to_numpy(dtype=float)
        rate = float(np.nansum(features["margin_total"]) / np.nansum(gross))
        window = max(w for w in cfg.features.windows if w <= (tl.calibration_end - tl.data_start).days + 1)
        past = features[f"margin_{window}d"].fillna(0.0).to_numpy(dtype=float) * tl.holdout_days / window
        predictions = {
            "margin_model": margin_model.predict(features),
            "margin_forecast": forecast,
            "population_rate": spend_forecast * rate,
            "past_margin": past,
        }
        result: dict[str, Any] = {
            "customers": len(features),
            "calibration_end": tl.calibration_end.isoformat(),
            "holdout_days": tl.holdout_days,
            "past_margin_window_days": window,
            "population_margin_rate": rate,
            "holdout_margin_total": float(actual.sum()),
            "customers_with_negative_holdout_margin": int((actual < 0).sum()),
            "fit_seconds": fit_seconds,
            "margin_model_fit_seconds": margin_fit_seconds,
            "models": {k: _metrics(actual, v) for k, v in predictions.items()},
        }
        for other in ("past_margin", "population_rate"):
            diff, low, high = evaluate.paired_bootstrap_gini_diff(
                actual, forecast, predictions[other], n_boot=N_BOOT, seed=0
            )
            result[f"gini_diff_vs_{other}"] = {"diff": diff, "low": low, "high": high}
        diff, low, high = evaluate.paired_bootstrap_gini_diff(
            actual, predictions["margin_model"], forecast, n_boot=N_BOOT, seed=0
        )
        result["margin_model_gini_diff_vs_margin_forecast"] = {"diff": diff, "low": low, "high": high}
        truth_file = work / "data" / "raw" / "synthetic" / "truth.parquet"
        if name == "synthetic" and truth_file.is_file():
            truth = pd.read_parquet(truth_file)
            if "true_expected_margin" in truth.columns:
                expected = (
                    pd.Series(ctx.eval_ids)
                    .map(truth.set_index("customer_id")["true_expected_margin"])
                    .fillna(0)
                )
                result["truth_spearman"] = {
                    k: evaluate.spearman(expected.to_numpy(dtype=float), v) for k, v in predictions.items()
                }
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown_table(results: dict[str, Any]) -> str:
    lines = [
        f"Margin forecast on the holdout ({results['date']}; spend forecast × shrunk per-customer margin rate; "
        "realised margin unclipped):",
        "",
        "| data set | model | Gini | Spearman | top-20 % | decile MAPE | total error |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for name, entry in results["datasets"].items():
        if "error" in entry:
            lines.append(f"| {name} | {entry['error']} | | | | | |")
            continue
        for model in ("margin_model", "margin_forecast", "population_rate", "past_margin"):
            m = entry["models"][model]
            lines.append(
                f"| {name} | {model.replace('_', ' ')} | {m['normalized_gini']:.4f} | {m['spearman']:.4f} | "
                f"{m['top20_capture']:.3f} | {m['decile_mape']:.1%} | {m['total_error']:+.1%} |"
            )
        for other in ("past_margin", "population_rate"):
            d = entry[f"gini_diff_vs_{other}"]
            notes.append(
                f"{name}: margin forecast − {other.replace('_', ' ')} Gini {d['diff']:+.4f} "
                f"[{d['low']:+.4f}, {d['high']:+.4f}]"
            )
        d = entry["margin_model_gini_diff_vs_margin_forecast"]
        notes.append(
            f"{name}: margin model − margin forecast Gini {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
        )
    return "\n".join([*lines, "", "; ".join(notes) + f" (paired bootstrap, {N_BOOT} replicates)."])


def update_readme(table: str) -> None:
    update_readme_block(BEGIN_MARK, END_MARK, table, "## Margin forecast (`benchmarks/margin.py`)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--tafeng", type=Path, default=REPO.parent / "shared" / "data" / "tafeng")
    args = parser.parse_args()
    results: dict[str, Any] = {"date": dt.date.today().isoformat(), "datasets": {}}
    for name in args.datasets:
        print(f"margin: {name}", flush=True)
        results["datasets"][name] = evaluate_dataset(name, args.tafeng.resolve())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    table = markdown_table(results)
    update_readme(table)
    print(table)


if __name__ == "__main__":
    main()
