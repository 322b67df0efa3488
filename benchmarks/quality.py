"""Benchmark: forecast quality of every model family on several data sets (issue targets as ``met`` flags).

Data sets (one project root each under ``--workdir``, so the runs never share outputs):

* ``cdnow``: ``experiments/cdnow.yaml`` on ``data/raw/cdnow`` (shipped).
* ``tafeng``: ``experiments/tafeng.yaml`` on the Ta Feng files (``--tafeng``, default ``../shared/data/tafeng``
  next to the repository; read in place, never copied).
* ``synthetic_flat`` / ``synthetic_seasonal``: ``segml synth --customers 5000 --seed 3 --no-planted`` without /
  with the month-of-year profile, ``experiments/synthetic.yaml``; planted tier truth in ``truth.parquet`` (the
  lapse / payment / campaign effects are left out here: ``benchmarks/sources.py`` measures them).

Each data set goes through the command line exactly as a user runs it (``segml ingest`` then ``segml train
--no-backtest``, in a subprocess with ``SEGML_ROOT`` set), timed; for CDNOW the backtest stage then runs on
its own (``segml train --from-stage evaluate --until evaluate --backtest``; ``--no-backtest`` skips it), and its
per-cutoff gains fill the backtest target. Then, from ``reports/<exp>/comparison.json``
and ``data/processed/<exp>/holdout_predictions/*.parquet``, every model's holdout metrics are recomputed
(normalized Gini, Spearman, top-10/20 % capture, decile MAPE, total error) with the paired-bootstrap 95 % CI of
its Gini difference to the best baseline (highest holdout Gini among ``rfm``, ``rfm_sum``, ``past_spend``,
``btyd``). On synthetic data the planted truth adds: Spearman against ``true_expected_spend``, predicted ÷ true
expected spend per latent tier, recall of rising-tier customers of the true top 20 %, and the share of the Gini
gap from the best baseline to the oracle (ranking by the true expected spend) that each model closes.

Every target of the issue is written as ``{value, threshold, met}`` (``met`` null when not measured here).
Writes ``benchmarks/results/quality.json`` and the table between the markers in ``benchmarks/README.md``.

Usage::

    .venv/bin/python benchmarks/quality.py                  # all four data sets (~10-20 min on 2 cores)
    .venv/bin/python benchmarks/quality.py --datasets cdnow synthetic_flat
    .venv/bin/python benchmarks/quality.py --reuse          # skip ingest/train where outputs exist
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from typing import Any

import numpy as np
import pandas as pd
import yaml
from _common import update_readme_block  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from segml import evaluate  # noqa: E402
from segml.storage import write_json  # noqa: E402

DATASETS = ("cdnow", "tafeng", "synthetic_flat", "synthetic_seasonal")
#: data sets whose experiment has ``cutoffs.backtest`` with a target on it: their backtest stage is run after
#: the timed ``train --no-backtest`` (``segml train --from-stage evaluate --until evaluate --backtest``)
BACKTESTED = ("cdnow",)
EXPERIMENT = {
    "cdnow": "cdnow",
    "tafeng": "tafeng",
    "synthetic_flat": "synthetic",
    "synthetic_seasonal": "synthetic",
}
BASELINES = ("rfm", "rfm_sum", "past_spend", "btyd")
MONEY_BASELINES = ("past_spend", "btyd")
#: models whose output is not money over the horizon (no decile MAPE / total error)
RANK_ONLY = {"rfm", "rfm_sum"}
RESULTS = REPO / "benchmarks" / "results" / "quality.json"
README = REPO / "benchmarks" / "README.md"
MARK_BEGIN, MARK_END = "<!-- quality-benchmark:begin -->", "<!-- quality-benchmark:end -->"
N_BOOT = 1000
SEED = 0


#: source tree the ``segml`` subprocesses import (``--src``: e.g. an exported older commit, for before/after)
SOURCE = REPO / "src"


def _segml(root: Path, *args: str) -> float:
    """Run ``segml <args>`` with ``SEGML_ROOT=root``; returns the wall time in seconds."""
    env = {
        **os.environ,
        "SEGML_ROOT": str(root),
        "PYTHONPATH": str(SOURCE) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONHASHSEED": "0",
    }
    for leaked in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        env.pop(leaked, None)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "segml.cli", *args], cwd=root, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    (root / "logs").mkdir(exist_ok=True)
    (root / "logs" / f"{args[0]}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"segml {' '.join(args)} failed in {root} (exit {done.returncode}):\n{tail}")
    return seconds


def _prepare(name: str, root: Path, tafeng: Path, seed: int = 3) -> list[str]:
    """Lay out the project root of one data set (``seed``: the synthetic generator's); returns the extra ``--set``
    overrides for ingest."""
    (root / "experiments").mkdir(parents=True, exist_ok=True)
    (root / "data" / "raw").mkdir(parents=True, exist_ok=True)
    experiment = root / "experiments" / f"{EXPERIMENT[name]}.yaml"
    text = (REPO / "experiments" / experiment.name).read_text(encoding="utf-8")
    if name.startswith("synthetic"):
        # the forecast on the tier truth alone: transactions and customers, as every figure of this benchmark
        # was measured (no product cost, invoices or interactions; benchmarks/sources.py measures those)
        document = yaml.safe_load(text)
        document["data"].pop("invoices", None)
        document["data"].pop("interactions", None)
        for source in document["data"]["transactions"]:
            source["columns"].pop("cost", None)
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    experiment.write_text(text, encoding="utf-8")
    if name == "cdnow":
        link = root / "data" / "raw" / "cdnow"
        if not link.exists():
            link.symlink_to(REPO / "data" / "raw" / "cdnow")
        return []
    if name == "tafeng":
        return [
            "--set",
            f"data.transactions.0.path={tafeng / 'transactions.parquet'}",
            "--set",
            f"data.customers.path={tafeng / 'customers.parquet'}",
        ]
    out = root / "data" / "raw" / "synthetic"
    if not (out / "truth.parquet").is_file():
        season = "--seasonality" if name == "synthetic_seasonal" else "--no-seasonality"
        # the transactions-only generator (no planted lapse / payment / campaign effects), so these figures
        # measure the forecast on the tier truth alone; benchmarks/sources.py measures the planted effects
        _segml(
            root,
            "synth",
            "--customers",
            "5000",
            "--seed",
            str(seed),
            season,
            "--no-planted",
            "--out",
            str(out),
        )
    return []


def _holdout_actual(root: Path, exp: str, ids: np.ndarray, start: dt.date, end: dt.date) -> np.ndarray:
    """Net spend per evaluation customer in (start, end] from the clean transactions."""
    tx = pd.read_parquet(
        root / "data" / "interim" / exp / "transactions.parquet",
        columns=["customer_id", "timestamp", "amount"],
    )
    ts = pd.to_datetime(tx["timestamp"])
    inside = (ts >= pd.Timestamp(start) + pd.Timedelta(days=1)) & (
        ts < pd.Timestamp(end) + pd.Timedelta(days=1)
    )
    spend = tx.loc[inside].groupby("customer_id")["amount"].sum()
    return pd.Series(ids).map(spend).fillna(0.0).to_numpy(dtype=float)


def _metrics(actual: np.ndarray, predicted: np.ndarray, money: bool) -> dict[str, Any]:
    table = evaluate.decile_table(actual, predicted)
    return {
        "normalized_gini": evaluate.normalized_gini(actual, predicted),
        "spearman": evaluate.spearman(actual, predicted),
        "top10_capture": evaluate.top_k_capture(actual, predicted, 0.1),
        "top20_capture": evaluate.top_k_capture(actual, predicted, 0.2),
        "decile_mape": evaluate.decile_mape(table) if money else None,
        "total_error": evaluate.total_error(actual, predicted) if money else None,
    }


def _planted(
    truth: pd.DataFrame, ids: np.ndarray, actual: np.ndarray, predictions: dict[str, np.ndarray]
) -> dict:
    """Planted-truth metrics on the evaluation population."""
    t = truth.set_index("customer_id").reindex(ids)
    true_spend = t["true_expected_spend"].fillna(0.0).to_numpy(dtype=float)
    tier = t["tier"].fillna("unknown").to_numpy()
    top_true = np.zeros(len(ids), dtype=bool)
    k = int(round(0.2 * len(ids)))
    top_true[np.argsort(-true_spend, kind="stable")[:k]] = True
    rising_top = top_true & (tier == "rising")
    oracle_gini = evaluate.normalized_gini(actual, true_spend)
    ginis = {n: evaluate.normalized_gini(actual, p) for n, p in predictions.items()}
    best = max((b for b in BASELINES if b in predictions), key=lambda b: ginis[b])
    out: dict[str, Any] = {
        "oracle": {"normalized_gini": oracle_gini, "spearman_vs_true": 1.0},
        "best_baseline_by_gini": best,
        "rising_in_true_top20": int(rising_top.sum()),
        "models": {},
    }
    for name, p in predictions.items():
        order = np.argsort(-p, kind="stable")
        top_model = np.zeros(len(ids), dtype=bool)
        top_model[order[:k]] = True
        per_tier = {}
        if name not in RANK_ONLY:
            for level in sorted(set(tier)):
                rows = tier == level
                true_sum = float(true_spend[rows].sum())
                per_tier[level] = None if true_sum <= 0 else float(p[rows].sum()) / true_sum
        gap = oracle_gini - ginis[best]
        out["models"][name] = {
            "spearman_vs_true": evaluate.spearman(true_spend, p),
            "rising_recall_true_top20": float((top_model & rising_top).sum() / max(rising_top.sum(), 1)),
            "rising_in_model_top20": int((top_model & rising_top).sum()),
            "predicted_over_true_by_tier": per_tier,
            "oracle_gap_closed": None if gap <= 0 else (ginis[name] - ginis[best]) / gap,
            # the money forecast against the planted expectation (the realised spend adds Poisson noise)
            "decile_mape_vs_true": None
            if name in RANK_ONLY
            else evaluate.decile_mape(evaluate.decile_table(true_spend, p)),
            "total_error_vs_true": None if name in RANK_ONLY else evaluate.total_error(true_spend, p),
        }
    return out


def _read_report(root: Path, exp: str, name: str) -> Any:
    """``reports/<exp>/<name>``, or None when the select stage, which writes it, did not run."""
    path = root / "reports" / exp / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _evaluate_dataset(
    name: str, root: Path, planted: bool = True, timeline: dict[str, str] | None = None
) -> dict[str, Any]:
    """Every model's holdout metrics of one trained project root (``planted``: add the synthetic truth's).

    ``timeline`` (``calibration_end``, ``holdout_end``) is for a run stopped after the model stages (``segml
    train --until potential``, no ``holdout.json``); the select stage's records are then left out."""
    exp = EXPERIMENT[name]
    comparison = _read_report(root, exp, "comparison.json") or []
    holdout = _read_report(root, exp, "holdout.json")
    timeline = holdout["timeline"] if holdout is not None else timeline
    frames = sorted((root / "data" / "processed" / exp / "holdout_predictions").glob("*.parquet"))
    predictions: dict[str, np.ndarray] = {}
    ids = None
    for path in frames:
        frame = pd.read_parquet(path)
        ids = frame["customer_id"].to_numpy() if ids is None else ids
        if not np.array_equal(frame["customer_id"].to_numpy(), ids):
            raise SystemExit(f"{path}: customers differ from the other prediction files")
        for column in frame.columns.drop("customer_id"):
            predictions[column] = frame[column].to_numpy(dtype=float)
    actual = _holdout_actual(
        root,
        exp,
        ids,
        dt.date.fromisoformat(timeline["calibration_end"]),
        dt.date.fromisoformat(timeline["holdout_end"]),
    )
    metrics = {n: _metrics(actual, p, n not in RANK_ONLY) for n, p in predictions.items()}
    best = max((b for b in BASELINES if b in predictions), key=lambda b: metrics[b]["normalized_gini"])
    for n, p in predictions.items():
        diff, low, high = evaluate.paired_bootstrap_gini_diff(
            actual, p, predictions[best], n_boot=N_BOOT, seed=SEED
        )
        metrics[n].update({"gini_diff_vs": best, "gini_diff": diff, "gini_diff_ci": [low, high]})
    shipped = [row["model"] for row in comparison if "potential" in row["model"]]
    result: dict[str, Any] = {
        "timeline": timeline,
        "customers": len(ids),
        "holdout_spend_total": float(actual.sum()),
        "best_baseline": best,
        "shipped_model": shipped[0] if len(shipped) == 1 else shipped,
        "metrics": metrics,
        "comparison_json_gini": {row["model"]: row.get("normalized_gini") for row in comparison},
    }
    selection = _read_report(root, exp, "selection.json") or {}
    # the in-calibration money check (segml.selection.money_check): said in selection.json, never used to choose
    result["money_check"] = selection.get("inner_validation", {}).get("money_check")
    result["money_warning"] = selection.get("money_warning")
    potential_report = root / "reports" / exp / "models" / "potential.json"
    if potential_report.is_file():
        details = json.loads(potential_report.read_text(encoding="utf-8"))
        params = details.get("details", details).get("params", {})
        result["potential_params"] = {
            k: params.get(k) for k in ("objective", "window_feature", "monotone", "rounds", "spread")
        }
        blend = params.get("blend")
        result["potential_params"]["blend_weights"] = None if blend is None else blend.get("weights")
        # the P10 / P90 against realised holdout spend, as `segml train` reports it (segml.models.intervals)
        result["interval"] = details.get("details", details).get("interval")
        lapse = params.get("lapse") or {}
        result["lapse"] = {k: lapse.get(k) for k in ("adopted", "factors", "check")}
    backtest = _read_report(root, exp, "backtest.json")
    if backtest:
        result["backtest"] = _backtest_rows(backtest)
    if planted and name.startswith("synthetic"):
        truth = pd.read_parquet(root / "data" / "raw" / "synthetic" / "truth.parquet")
        result["planted"] = _planted(truth, ids, actual, predictions)
    return result


def _backtest_cutoffs(name: str) -> list[str]:
    """``cutoffs.backtest`` of the data set's experiment YAML, as ISO dates."""
    from segml.config import load_experiment

    cfg = load_experiment(REPO / "experiments" / f"{EXPERIMENT[name]}.yaml", root=REPO)
    return [c.isoformat() for c in cfg.cutoffs.backtest]


def _backtest_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The shipped potential model's rows of ``backtest.json``: per cutoff and origin (forward, rolling), its
    Gini, the gain against the best baseline at that cutoff and window, and the paired CI of that gain."""
    keep = ("cutoff", "origin", "window_days", "window_end", "overlaps_holdout", "normalized_gini")
    keep += ("gini_diff", "gini_diff_ci", "gini_diff_vs")
    return [{k: row.get(k) for k in keep} for row in rows if "potential" in str(row.get("model"))]


def _backtest_target(result: dict[str, Any], cutoffs: list[str]) -> dict[str, Any]:
    """CI of the gain at every ``cutoffs.backtest`` cutoff, forward windows (the issue's target); rolling-origin
    windows are reported in ``backtest`` beside it. Not measured (null) without a backtest."""
    threshold = "lower > 0 at every cutoffs.backtest"
    forward = {r["cutoff"]: r for r in result.get("backtest", []) if r["origin"] == "forward"}
    if not forward:
        return _target(None, threshold, None)
    value = {c: (forward[c]["gini_diff_ci"] if c in forward else None) for c in cutoffs}
    met = all(ci is not None and ci[0] > 0 for ci in value.values())
    return _target(value, threshold, met)


def _target(value: Any, threshold: str, met: bool | None) -> dict[str, Any]:
    return {"value": value, "threshold": threshold, "met": met}


def _targets(results: dict[str, Any], timings: dict[str, dict[str, float]]) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    if "cdnow" in results:
        m = results["cdnow"]["metrics"]["potential"]
        targets["cdnow"] = {
            "normalized_gini": _target(m["normalized_gini"], ">= 0.730", m["normalized_gini"] >= 0.730),
            "gini_gain_ci_holdout": _target(m["gini_diff_ci"], "lower > 0", m["gini_diff_ci"][0] > 0),
            "gini_gain_ci_every_backtest_cutoff": _backtest_target(
                results["cdnow"], _backtest_cutoffs("cdnow")
            ),
            "top20_capture": _target(m["top20_capture"], ">= 0.700", m["top20_capture"] >= 0.700),
            "decile_mape": _target(m["decile_mape"], "<= 0.12", m["decile_mape"] <= 0.12),
            "abs_total_error": _target(abs(m["total_error"]), "<= 0.10", abs(m["total_error"]) <= 0.10),
        }
        if "train" in timings.get("cdnow", {}):
            seconds = timings["cdnow"]["train"]
            targets["cdnow"]["train_seconds_no_backtest"] = _target(seconds, "<= 120", seconds <= 120)
    if "tafeng" in results:
        all_m = results["tafeng"]["metrics"]
        m = all_m["potential"]
        money = {b: all_m[b]["decile_mape"] for b in MONEY_BASELINES if b in all_m}
        targets["tafeng"] = {
            "gini_gain_ci_upper": _target(m["gini_diff_ci"], "upper > 0", m["gini_diff_ci"][1] > 0),
            "gini_gain_ci_lower_stretch": _target(
                m["gini_diff_ci"], "lower > 0 (stretch)", m["gini_diff_ci"][0] > 0
            ),
            "decile_mape_below_money_baselines": _target(
                {"potential": m["decile_mape"], **money},
                "< every money baseline's",
                all(m["decile_mape"] < v for v in money.values()),
            ),
            "decile_mape": _target(m["decile_mape"], "<= 0.15", m["decile_mape"] <= 0.15),
            "abs_total_error": _target(abs(m["total_error"]), "<= 0.15", abs(m["total_error"]) <= 0.15),
        }
        if "train" in timings.get("tafeng", {}):
            seconds = timings["tafeng"]["train"]
            targets["tafeng"]["train_seconds_no_backtest"] = _target(seconds, "<= 600", seconds <= 600)
    for name in ("synthetic_flat", "synthetic_seasonal"):
        if name not in results:
            continue
        planted = results[name]["planted"]
        models = planted["models"]
        p = models["potential"]
        baselines = [b for b in BASELINES if b in models]
        best_sp = max(models[b]["spearman_vs_true"] for b in baselines)
        ratios = {k: v for k, v in p["predicted_over_true_by_tier"].items() if v is not None}
        others = {b: models[b]["rising_recall_true_top20"] for b in ("rfm", "past_spend") if b in models}
        targets[name] = {
            "spearman_vs_true": _target(
                {"potential": p["spearman_vs_true"], "best_baseline": best_sp},
                ">= best baseline + 0.03",
                p["spearman_vs_true"] >= best_sp + 0.03,
            ),
            "rising_recall_true_top20": _target(
                {"potential": p["rising_recall_true_top20"], **others},
                "> RFM's and past spend's",
                all(p["rising_recall_true_top20"] > v for v in others.values()),
            ),
            "per_tier_predicted_over_true": _target(
                ratios, "every tier in [0.7, 1.4]", all(0.7 <= v <= 1.4 for v in ratios.values())
            ),
            "oracle_gap_closed": _target(
                p["oracle_gap_closed"],
                ">= 0.70",
                None if p["oracle_gap_closed"] is None else p["oracle_gap_closed"] >= 0.70,
            ),
        }
    return targets


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{100 * value:.1f} %" if pct else f"{value:.3f}"


def _shown(value: Any) -> str:
    """A target's value in the table: numbers to 3 places, lists as ``[a, b]``, dicts as ``key value, …``."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_shown(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return _fmt(value) if isinstance(value, float) else str(value)


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Run {report['run_date']} on {report['cpu_count']} cores (shared machine), python {report['python']}; "
        f"total {report['seconds_total']:.0f} s. Gini gain: paired bootstrap ({N_BOOT} replicates) against the "
        "best baseline by holdout Gini.",
        "",
        "| data set | model | Gini | gain vs best baseline [95 % CI] | Spearman | top-10 % | top-20 % | decile MAPE | total error |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, result in report["datasets"].items():
        for model, m in result["metrics"].items():
            low, high = m["gini_diff_ci"]
            lines.append(
                f"| {name} | {model} | {_fmt(m['normalized_gini'])} | {m['gini_diff']:+.4f} [{low:+.4f}, {high:+.4f}] "
                f"vs {m['gini_diff_vs']} | {_fmt(m['spearman'])} | {_fmt(m['top10_capture'])} | "
                f"{_fmt(m['top20_capture'])} | {_fmt(m['decile_mape'], True)} | {_fmt(m['total_error'], True)} |"
            )
    lines += [
        "",
        "Forecast interval of the shipped model (P10, P90; each bound is nominally exceeded by 10 %): realised "
        "holdout spend above the P90 and below the P10, the same measured cross-fitted on the validation fold "
        "inside calibration, the share of zero P10s and the mean P90 ÷ point forecast.",
        "",
        "| data set | above P90 | below P10 | validation fold: above / below | P10 = 0 | P90 ÷ point |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for name, result in report["datasets"].items():
        iv = result.get("interval")
        if not iv or not iv.get("fitted"):
            lines.append(f"| {name} | not fitted | | | | |")
            continue
        got, fold = iv["realised"], iv["validation_check"] or {}
        lines.append(
            f"| {name} | {_fmt(got['above'], True)} | {_fmt(got['below'], True)} | "
            f"{_fmt(fold.get('above'), True)} / {_fmt(fold.get('below'), True)} "
            f"({iv['validation_window_days']}-day window) | {_fmt(iv['p10_zero_share'], True)} | "
            f"{_fmt(iv['mean_p90_over_point'])} |"
        )
    lines += [
        "",
        "Money check inside calibration (inner validation; `selection.json` → `money_warning`): the shipped "
        "model's decile MAPE and total error there, the best money baseline's, and whether the warning is "
        "given (worse by more than the 10 % tie slack).",
        "",
        "| data set | decile MAPE: model / best baseline | total error: model / best baseline | warning |",
        "|---|---|---|---|",
    ]
    for name, result in report["datasets"].items():
        check = result.get("money_check") or {}
        model, by_mape, by_total = (
            check.get(k) or {} for k in ("potential", "best_decile_mape", "best_total_error")
        )
        lines.append(
            f"| {name} | {_fmt(model.get('decile_mape'), True)} / {_fmt(by_mape.get('decile_mape'), True)} "
            f"({by_mape.get('scorer', '–')}) | {_fmt(model.get('total_error'), True)} / "
            f"{_fmt(by_total.get('total_error'), True)} ({by_total.get('scorer', '–')}) | "
            f"{'yes' if result.get('money_warning') else 'no'} |"
        )
    backtested = [(n, r["backtest"]) for n, r in report["datasets"].items() if r.get("backtest")]
    if backtested:
        lines += [
            "",
            "Backtest of the shipped model (`segml train --backtest`: refitted at each cutoff of "
            "`cutoffs.backtest`; forward = the holdout's length after the cutoff, rolling = ending at the "
            "calibration end): Gini gain against the best baseline at that cutoff and window, paired-bootstrap "
            "95 % CI.",
            "",
            "| data set | cutoff | origin | window (days) | overlaps holdout | Gini | gain [95 % CI] |",
            "|---|---|---|---:|---|---:|---|",
        ]
        for name, rows in backtested:
            for r in rows:
                low, high = r["gini_diff_ci"]
                lines.append(
                    f"| {name} | {r['cutoff']} | {r['origin']} | {r['window_days']} | "
                    f"{'yes' if r['overlaps_holdout'] else 'no'} | {_fmt(r['normalized_gini'])} | "
                    f"{r['gini_diff']:+.4f} [{low:+.4f}, {high:+.4f}] vs {r['gini_diff_vs']} |"
                )
    lines += ["", "| data set | target | value | threshold | met |", "|---|---|---|---|---|"]
    for name, targets in report["targets"].items():
        for key, t in targets.items():
            shown = _shown(t["value"])
            met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
            lines.append(f"| {name} | {key} | {shown} | {t['threshold']} | {met} |")
    return "\n".join(lines)


def previous_results(out: Path) -> dict[str, Any]:
    """The results file an earlier run wrote (empty when there is none)."""
    return json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}


def run_report(
    script: str, started: float, previous: dict[str, Any], results: dict[str, Any]
) -> dict[str, Any]:
    """The header every results file of these benchmarks starts with (date, machine, command, source) and
    ``datasets``: the ``previous`` file's data sets updated with ``results`` (a run of a few keeps the others)."""
    return {
        "run_date": dt.date.today().isoformat(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "seconds_total": time.perf_counter() - started,
        "command": f"python benchmarks/{script} " + " ".join(sys.argv[1:]),
        "source": str(SOURCE),
        "datasets": {**previous.get("datasets", {}), **results},
    }


def _write_readme(table: str) -> None:
    update_readme_block(MARK_BEGIN, MARK_END, table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "data" / "quality")
    parser.add_argument("--tafeng", type=Path, default=(REPO / ".." / "shared" / "data" / "tafeng").resolve())
    parser.add_argument("--reuse", action="store_true", help="keep existing ingest/train outputs")
    parser.add_argument(
        "--no-backtest",
        dest="backtest",
        action="store_false",
        help=f"skip the backtest stage of {', '.join(BACKTESTED)} (its per-cutoff target is then not measured)",
    )
    parser.add_argument("--src", type=Path, default=REPO / "src", help="source tree the CLI runs from")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README table")
    args = parser.parse_args()
    global SOURCE
    SOURCE = args.src.resolve()

    started = time.perf_counter()
    results: dict[str, Any] = {}
    timings: dict[str, dict[str, float]] = {}
    for name in args.datasets:
        root = (args.workdir / name).resolve()
        exp = EXPERIMENT[name]
        overrides = _prepare(name, root, args.tafeng)
        timings[name] = {}
        experiment = f"experiments/{exp}.yaml"
        if not (args.reuse and (root / "data" / "interim" / exp / "transactions.parquet").is_file()):
            timings[name]["ingest"] = _segml(root, "ingest", experiment, *overrides)
        if not (args.reuse and (root / "reports" / exp / "comparison.json").is_file()):
            timings[name]["train"] = _segml(root, "train", experiment, "--no-backtest", *overrides)
        done = args.reuse and (root / "reports" / exp / "backtest.json").is_file()
        if name in BACKTESTED and args.backtest and not done:
            timings[name]["backtest"] = _segml(
                root,
                "train",
                experiment,
                "--from-stage",
                "evaluate",
                "--until",
                "evaluate",
                "--backtest",
                *overrides,
            )
        print(f"{name}: {timings[name]}", flush=True)
        results[name] = _evaluate_dataset(name, root)
        results[name]["seconds"] = timings[name]

    previous = previous_results(args.out)
    report = run_report("quality.py", started, previous, results)
    datasets = report["datasets"]
    report = {
        **report,
        "targets": _targets(datasets, {n: d.get("seconds", {}) for n, d in datasets.items()}),
    }
    if "variants_in_calibration" in previous:  # the in-calibration record of the variants tried, kept as is
        report["variants_in_calibration"] = previous["variants_in_calibration"]
    write_json(args.out, json.loads(json.dumps(report, default=float)))
    table = _markdown(report)
    if not args.no_readme:
        _write_readme(table)
    print(table)


if __name__ == "__main__":
    main()
