"""Benchmark inside calibration: the quality benchmark's runs and metrics with the holdout moved before it.

Every modelling decision is to be made inside the calibration period. This script runs, for each data set of
``benchmarks/quality.py``, the same command-line path (``segml ingest`` then ``segml train --no-backtest``, in a
subprocess with ``SEGML_ROOT`` set) with the timeline moved inside calibration:

* pseudo-calibration end ``t_v = max(start + span / 2, calibration_end − holdout_length)`` (:func:`inner_cutoff`;
  ``start`` = first clean transaction day, ``span = calibration_end − start``, ``holdout_length = holdout_end −
  calibration_end``: the rule of :func:`segml.selection.inner_validation_cutoff` with the holdout as horizon);
* ``--set cutoffs.calibration_end=t_v``, ``cutoffs.holdout_end=<real calibration_end>``, ``cutoffs.backtest=[]``
  and ``cutoffs.horizon_days=<inner holdout days>``. Horizon: ``segml train`` forecasts every money model over
  the holdout window itself (``Timeline.holdout_days``: the potential model's and the baselines' horizon, and
  the labels' window), so a holdout shorter than ``horizon_days`` is not an error and the forecasts already
  match the inner window; ``cutoffs.horizon_days`` is then only recorded in ``holdout.json``, and it is set to
  the inner window so that the record says what was forecast;
* ingest with ``--set data.cleaning.max_date=<real calibration_end>``: every row after the real calibration end
  is quarantined (reason ``future_timestamp``) before anything is built, so no model — the holdout model, the
  production refit at the data end, the grades — and no metric reads it. (The outlier flags are then computed
  on the calibration rows only; they flag, never drop, rows.)

The select stage refits the potential model at its own inner cutoff before ``t_v``; when that leaves less than
:data:`MIN_SELECT_DAYS` of history (Ta Feng: 30 days to ``t_v``, 15 to the nested cutoff) the run is ``segml
train --no-backtest --until potential``: the same model stages and holdout predictions, without the scorer /
weights choice, the grades and the registration (so no ``money_check`` there).

Metrics are those of ``quality.py`` (``_evaluate_dataset``: normalized Gini, Spearman, top-10/20 % capture,
decile MAPE, total error, paired-bootstrap CI of the Gini difference to the best baseline) against the realised
spend in ``(t_v, calibration_end]``; the synthetic planted truth is left out (it is the expectation after the
real calibration end).

``--seeds N [N ...]``: the synthetic data sets are generated afresh at these seeds (``segml synth --customers
5000 --seed N --no-planted``, as ``quality.py`` does at seed 3) and scored on their **real** holdout, against the
realised spend and the planted truth (``truth.parquet``, ``true_expected_spend``; ``planted`` →
``models`` → ``decile_mape_vs_true``). A fresh seed is data nothing was tuned to, so its holdout may be read.

Writes ``benchmarks/results/quality_inner.json`` (merged with its previous content by data-set key; never
``quality.json``) and its own block in ``benchmarks/README.md``. Outputs go under ``benchmarks/data/
quality_inner`` (git-ignored), never the holdout benchmark's ``benchmarks/data/quality``.

Usage::

    .venv/bin/python benchmarks/inner.py                               # inner splits of all four data sets
    .venv/bin/python benchmarks/inner.py --datasets cdnow --tafeng /path/to/tafeng
    .venv/bin/python benchmarks/inner.py --datasets synthetic_flat --seeds 21 22 23   # fresh seeds, holdout
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from _common import update_readme_block  # noqa: E402

from segml.selection import inner_validation_cutoff  # noqa: E402  (quality put src on the path)
from segml.storage import write_json  # noqa: E402

RESULTS = quality.REPO / "benchmarks" / "results" / "quality_inner.json"
MARK_BEGIN, MARK_END = "<!-- quality-inner:begin -->", "<!-- quality-inner:end -->"
SCORED = ("rfm", "past_spend", "btyd", "potential")
#: shortest training period the potential model selects on (``PotentialValueModel.fit``: four lattice steps of
#: at least 7 days)
MIN_SELECT_DAYS = 28


def inner_cutoff(start: dt.date, calibration_end: dt.date, holdout_end: dt.date) -> dt.date:
    """The pseudo-calibration end ``t_v = max(start + span // 2, calibration_end − (holdout_end −
    calibration_end))``, ``span = calibration_end − start``: half the calibration period when it is shorter
    than two holdouts, otherwise one holdout before its end."""
    if not start < calibration_end < holdout_end:
        raise ValueError(
            f"expected start < calibration_end < holdout_end, got {start}, {calibration_end}, {holdout_end}"
        )
    return inner_validation_cutoff(start, calibration_end, (holdout_end - calibration_end).days)


def _cutoffs(root: Path, exp: str) -> tuple[dt.date, dt.date]:
    """The experiment's real calibration and holdout end (its YAML in the project root)."""
    document = yaml.safe_load((root / "experiments" / f"{exp}.yaml").read_text(encoding="utf-8"))
    cutoffs = document["cutoffs"]
    if cutoffs.get("holdout_end") is None:
        raise SystemExit(f"{exp}: cutoffs.holdout_end is not set; the inner split needs the holdout length")
    return cutoffs["calibration_end"], cutoffs["holdout_end"]


def _run_inner(name: str, root: Path, tafeng: Path, reuse: bool) -> dict[str, Any]:
    exp = quality.EXPERIMENT[name]
    experiment = f"experiments/{exp}.yaml"
    overrides = quality._prepare(name, root, tafeng)
    calibration_end, holdout_end = _cutoffs(root, exp)
    overrides += ["--set", f"data.cleaning.max_date={calibration_end.isoformat()}"]
    seconds: dict[str, float] = {}
    dq_report = root / "data" / "interim" / exp / "dq_report.json"
    if not (reuse and dq_report.is_file()):
        seconds["ingest"] = quality._segml(root, "ingest", experiment, *overrides)
    dq = json.loads(dq_report.read_text(encoding="utf-8"))
    if dt.date.fromisoformat(dq["date_max"]) > calibration_end:
        raise SystemExit(
            f"{name}: clean data reach {dq['date_max']}, after the calibration end {calibration_end}"
        )
    t_v = inner_cutoff(dt.date.fromisoformat(dq["date_min"]), calibration_end, holdout_end)
    timeline = [
        f"cutoffs.calibration_end={t_v.isoformat()}",
        f"cutoffs.holdout_end={calibration_end.isoformat()}",
        "cutoffs.backtest=[]",
        f"cutoffs.horizon_days={(calibration_end - t_v).days}",
    ]
    overrides += [arg for item in timeline for arg in ("--set", item)]
    # the select stage refits the potential model at its own inner cutoff inside (start, t_v] (the scorer and
    # weights choice); on a history too short for that (Ta Feng: 30 days to t_v, 15 to that cutoff) the run
    # stops after the model stages, whose holdout predictions are all the metrics need
    start = dt.date.fromisoformat(dq["date_min"])
    nested = inner_validation_cutoff(start, t_v, (calibration_end - t_v).days)
    until = [] if (nested - start).days >= MIN_SELECT_DAYS else ["--until", "potential"]
    done = root / "data" / "processed" / exp / "holdout_predictions" / "potential.parquet"
    if not (reuse and done.is_file()):
        seconds["train"] = quality._segml(root, "train", experiment, "--no-backtest", *until, *overrides)
    inner_timeline = {"calibration_end": t_v.isoformat(), "holdout_end": calibration_end.isoformat()}
    result = quality._evaluate_dataset(name, root, planted=False, timeline=inner_timeline)
    if result["timeline"]["holdout_end"] != calibration_end.isoformat():
        raise SystemExit(f"{name}: the inner holdout does not end at the real calibration end")
    return {
        "split": "inner",
        "stages": "until potential (history too short for the select stage)" if until else "all",
        "real_cutoffs": {
            "calibration_end": calibration_end.isoformat(),
            "holdout_end": holdout_end.isoformat(),
        },
        **result,
        "seconds": seconds,
    }


def _run_seed(name: str, seed: int, root: Path, reuse: bool) -> dict[str, Any]:
    exp = quality.EXPERIMENT[name]
    experiment = f"experiments/{exp}.yaml"
    quality._prepare(name, root, Path("."), seed=seed)
    seconds: dict[str, float] = {}
    if not (reuse and (root / "data" / "interim" / exp / "transactions.parquet").is_file()):
        seconds["ingest"] = quality._segml(root, "ingest", experiment)
    if not (reuse and (root / "reports" / exp / "comparison.json").is_file()):
        seconds["train"] = quality._segml(root, "train", experiment, "--no-backtest")
    return {"split": "holdout", "seed": seed, **quality._evaluate_dataset(name, root), "seconds": seconds}


def _markdown(report: dict[str, Any]) -> str:
    fmt = quality._fmt
    lines = [
        f"Run {report['run_date']} (`{report['command']}`). Split `inner`: trained to `t_v`, scored on (t_v, "
        "real calibration end]; `holdout`: a fresh synthetic seed on its real holdout (decile MAPE / total "
        "error also against the planted `true_expected_spend`). Gain: paired bootstrap "
        f"({quality.N_BOOT} replicates) against the best baseline by Gini.",
        "",
        "| data set | split | recency calibration | model | Gini | gain vs best baseline [95 % CI] | decile MAPE "
        "| total error | decile MAPE vs truth | total vs truth |",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for key, result in report["datasets"].items():
        lapse = result.get("lapse") or {}
        adopted = {True: "adopted", False: "not adopted", None: "–"}[lapse.get("adopted")]
        planted = (result.get("planted") or {}).get("models", {})
        window = f"{result['timeline']['calibration_end']}..{result['timeline']['holdout_end']}"
        for model in SCORED:
            m = result["metrics"].get(model)
            if m is None:
                continue
            truth = planted.get(model, {})
            low, high = m["gini_diff_ci"]
            lines.append(
                f"| {key} | {result['split']} {window} | {adopted} | {model} | {fmt(m['normalized_gini'])} | "
                f"{m['gini_diff']:+.4f} [{low:+.4f}, {high:+.4f}] vs {m['gini_diff_vs']} | "
                f"{fmt(m['decile_mape'], True)} | {fmt(m['total_error'], True)} | "
                f"{fmt(truth.get('decile_mape_vs_true'), True)} | {fmt(truth.get('total_error_vs_true'), True)} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", choices=quality.DATASETS, default=list(quality.DATASETS))
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=None,
        help="fresh synthetic seeds, scored on their real holdout (instead of the synthetic inner splits)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=quality.REPO / "benchmarks" / "data" / "quality_inner"
    )
    parser.add_argument(
        "--tafeng", type=Path, default=(quality.REPO / ".." / "shared" / "data" / "tafeng").resolve()
    )
    parser.add_argument("--reuse", action="store_true", help="keep existing ingest/train outputs")
    parser.add_argument(
        "--src", type=Path, default=quality.REPO / "src", help="source tree the CLI runs from"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README block")
    args = parser.parse_args()
    if args.out.resolve() == quality.RESULTS.resolve():
        raise SystemExit(f"--out {args.out}: that is the holdout benchmark's file")
    quality.SOURCE = args.src.resolve()

    started = time.perf_counter()
    results: dict[str, Any] = {}
    for name in args.datasets:
        if args.seeds and name.startswith("synthetic"):
            for seed in args.seeds:
                key = f"{name}_seed{seed}"
                results[key] = _run_seed(name, seed, (args.workdir / key).resolve(), args.reuse)
                print(f"{key}: {results[key]['seconds']}", flush=True)
        else:
            results[name] = _run_inner(name, (args.workdir / name).resolve(), args.tafeng, args.reuse)
            print(f"{name}: {results[name]['seconds']}", flush=True)

    report = quality.run_report("inner.py", started, quality.previous_results(args.out), results)
    write_json(args.out, json.loads(json.dumps(report, default=float)))
    table = _markdown(report)
    if not args.no_readme:
        update_readme_block(
            MARK_BEGIN, MARK_END, table, heading="## Inside calibration (`benchmarks/inner.py`)"
        )
    print(table)


if __name__ == "__main__":
    main()
