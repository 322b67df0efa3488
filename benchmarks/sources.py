"""Benchmark: what the event sources (invoices, interactions) cost and what they are worth.

Two parts, both written to ``benchmarks/results/sources.json`` and the table between the markers in
``benchmarks/README.md``:

* **speed** — features of the 10M-row clean transactions of ``benchmarks/features.py`` (same cached synthetic
  data) alone, against the same transactions with 2M invoices and 5M interactions of those customers. The
  event tables are drawn from the transactions (seeded): an invoice per sampled transaction day, interactions
  of every kind spread over each sampled customer's active span. Each contender runs in a fresh subprocess
  (DuckDB threads=2, memory_limit=4GB), three times alternated; the figure is the ratio of the median wall
  times in the same run (target ≤ 2×).
* **gain** — ``segml synth`` data with planted payment and interaction effects (``truth.json``
  ``planted_effects``), ingested through ``experiments/synthetic.yaml``. The potential model (the experiment's
  settings) is fit at the calibration end twice: on transactions and customers only, and with every event
  source the experiment maps. Both are scored against the planted truth (``true_expected_spend`` over the
  horizon after the truth cutoff, which is the calibration end) on the customers who had bought by then:
  normalised Gini with a paired-bootstrap 95 % interval of the difference, Spearman, and the mean percentile
  rank of customers with a planted lapse (lower = ranked lower, as they should be).

Usage::

    .venv/bin/python benchmarks/sources.py                 # both parts (speed at 10M rows)
    .venv/bin/python benchmarks/sources.py --part gain     # the planted-truth comparison only
    .venv/bin/python benchmarks/sources.py --part speed --rows 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import update_readme_block  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

import features as feature_bench  # noqa: E402  (benchmarks/features.py: the cached transactions)

RESULTS = HERE / "results" / "sources.json"
README = HERE / "README.md"
BEGIN_MARK = "<!-- sources-benchmark:begin -->"
END_MARK = "<!-- sources-benchmark:end -->"
SEED = 20261202
INVOICES = 2_000_000
INTERACTIONS = 5_000_000
KINDS = ("complaint", "ticket", "campaign_send", "campaign_response", "login", "visit", "survey")
GAIN_CUSTOMERS = 6000
GAIN_SEED = 7
N_BOOT = 1000


# --------------------------------------------------------------------------------------------------------------
# speed


def _event_paths(transactions: Path) -> tuple[Path, Path]:
    stem = transactions.stem
    return (
        feature_bench.DATA_DIR / f"{stem}_invoices_{INVOICES}.parquet",
        feature_bench.DATA_DIR / f"{stem}_interactions_{INTERACTIONS}.parquet",
    )


def write_events(transactions: Path) -> tuple[Path, Path]:
    """Clean invoices and interactions of the transactions' customers (cached beside them)."""
    invoices, interactions = _event_paths(transactions)
    con = feature_bench.duckdb_connection()
    con.execute(f"SELECT setseed({(SEED % 1000) / 1000})")
    if not invoices.is_file():
        tmp = invoices.with_suffix(".tmp")
        con.execute(
            f"""COPY (
                WITH days AS (
                    SELECT customer_id, CAST(timestamp AS DATE) AS day, SUM(amount) AS amount
                    FROM read_parquet('{transactions}') GROUP BY ALL
                ), picked AS (
                    SELECT *, hash(customer_id || day::VARCHAR || '{SEED}') AS h FROM days
                    ORDER BY h LIMIT {INVOICES}
                )
                SELECT 'I' || CAST(ROW_NUMBER() OVER (ORDER BY customer_id, day, h) AS VARCHAR) AS invoice_id,
                       customer_id, day AS issued, day + INTERVAL 30 DAY AS due,
                       CASE WHEN h % 20 = 0 THEN NULL
                            ELSE CAST(day + CAST(h % 61 AS INTEGER) * INTERVAL 1 DAY AS DATE) END AS paid,
                       CAST(greatest(amount, 0) AS DECIMAL(18, 2)) AS amount,
                       CAST(ROW_NUMBER() OVER (ORDER BY customer_id, day, h) AS BIGINT) AS source_row
                FROM picked ORDER BY customer_id, issued, invoice_id
            ) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000)"""
        )
        os.replace(tmp, invoices)
    if not interactions.is_file():
        tmp = interactions.with_suffix(".tmp")
        kinds = ", ".join(f"'{k}'" for k in KINDS)
        con.execute(
            f"""COPY (
                WITH span AS (
                    SELECT customer_id, MIN(timestamp) AS first_ts, MAX(timestamp) AS last_ts
                    FROM read_parquet('{transactions}') GROUP BY customer_id
                ), n AS (SELECT COUNT(*) AS customers FROM span),
                events AS (
                    SELECT s.customer_id, s.first_ts, s.last_ts, g.i,
                           hash(s.customer_id || CAST(g.i AS VARCHAR) || '{SEED}') AS h
                    FROM span s, n,
                         range(CAST(ceil({INTERACTIONS} / n.customers) AS BIGINT)) g(i)
                )
                SELECT customer_id,
                       first_ts + CAST((h % 10000) / 10000.0 * (epoch(last_ts) - epoch(first_ts) + 86400)
                                       AS BIGINT) * INTERVAL 1 SECOND AS timestamp,
                       list_extract([{kinds}], CAST(h % 7 AS INTEGER) + 1) AS kind,
                       CASE WHEN h % 2 = 0 THEN 'email' ELSE 'web' END AS channel,
                       NULL::VARCHAR AS outcome,
                       CASE WHEN h % 7 = 6 THEN CAST(h % 11 AS DOUBLE) END AS score,
                       CAST(ROW_NUMBER() OVER (ORDER BY customer_id, i) AS BIGINT) AS source_row
                FROM events ORDER BY h LIMIT {INTERACTIONS}
            ) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000)"""
        )
        os.replace(tmp, interactions)
    con.close()
    return invoices, interactions


def run_speed_contender(name: str, transactions: str, invoices: str, interactions: str) -> dict:
    from segml.config import FeatureConfig
    from segml.features import build_features

    spec = FeatureConfig(threads=feature_bench.THREADS, memory_limit=feature_bench.MEMORY_LIMIT)
    extra = {} if name == "transactions" else {"invoices": invoices, "interactions": interactions}
    started = time.perf_counter()
    frame = build_features(transactions, feature_bench.AS_OF, spec, **extra)
    return {"seconds": time.perf_counter() - started, "customers": len(frame), "columns": frame.shape[1]}


def measure_speed(name: str, paths: tuple[Path, Path, Path], timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(feature_bench.THREADS), PYTHONHASHSEED="0")
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, *map(str, paths)]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"error": f"timed out after {timeout:.0f}s"}
    if proc.returncode != 0:
        return {"error": f"exit code {proc.returncode}"}
    result = json.loads(output.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def speed(rows: int, timeout: float, repeats: int = 3) -> dict:
    """Median of ``repeats`` alternated runs of each contender."""
    feature_bench.generate_full_data()
    transactions, n_rows, n_customers = feature_bench.write_size(rows)
    invoices, interactions = write_events(transactions)
    import pyarrow.parquet as pq

    entry: dict = {
        "rows": n_rows,
        "customers": n_customers,
        "invoices": pq.read_metadata(invoices).num_rows,
        "interactions": pq.read_metadata(interactions).num_rows,
    }
    runs: dict[str, list[dict]] = {"transactions": [], "all_sources": []}
    for _ in range(repeats):  # alternated, so a load change hits both contenders alike
        for name in runs:
            print(f"speed {name:<13}", end=" ", flush=True)
            runs[name].append(measure_speed(name, (transactions, invoices, interactions), timeout))
            shown = runs[name][-1].get("seconds")
            print(f"{shown:.2f}s" if shown is not None else runs[name][-1].get("error"), flush=True)
    for name, measured in runs.items():
        ok = [r for r in measured if "seconds" in r]
        if not ok:
            entry[name] = measured[-1]
            continue
        median = sorted(ok, key=lambda r: r["seconds"])[len(ok) // 2]
        entry[name] = {**median, "runs_seconds": [r["seconds"] for r in ok]}
    base, full = entry["transactions"].get("seconds"), entry["all_sources"].get("seconds")
    if base and full:
        entry["ratio_all_sources_transactions"] = full / base
    return entry


def speed_worker(name: str, transactions: str, invoices: str, interactions: str) -> None:
    result = run_speed_contender(name, transactions, invoices, interactions)
    result["peak_rss_mb"] = feature_bench.peak_rss_mb()
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------------------------
# gain


def _percentile_rank(values, mask) -> float:
    import numpy as np
    import pandas as pd

    ranks = pd.Series(values).rank(pct=True, method="average").to_numpy()
    return float(np.mean(ranks[np.asarray(mask, dtype=bool)])) if np.any(mask) else float("nan")


def gain(customers: int, seed: int, keep: Path | None) -> dict:
    import pandas as pd

    from segml.config import load_experiment
    from segml.datasets.synthetic import SynthSpec, write_synthetic
    from segml.evaluate import normalized_gini, paired_bootstrap_gini_diff, spearman
    from segml.ingest import run_ingest
    from segml.pipeline.context import load_context
    from segml.pipeline.families import potential_model

    work = Path(tempfile.mkdtemp(prefix="segml-sources-")) if keep is None else keep
    try:
        (work / "experiments").mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "experiments" / "synthetic.yaml", work / "experiments" / "synthetic.yaml")
        (work / "pyproject.toml").write_text("[project]\nname = 'scratch'\n")
        truth_json = write_synthetic(
            SynthSpec(n_customers=customers, seed=seed, planted=True), work / "data/raw/synthetic"
        )
        cfg = load_experiment(work / "experiments" / "synthetic.yaml", root=work)
        run_ingest(cfg)
        ctx = load_context(cfg)
        sources = {k: v for k, v in ctx.event_tables.items() if v is not None}
        if not sources:
            raise SystemExit("experiments/synthetic.yaml maps no event source: nothing to compare")
        cal_end = ctx.timeline.calibration_end
        truth = pd.read_parquet(work / "data/raw/synthetic/truth.parquet")
        if dt.date.fromisoformat(truth_json["truth_cutoff"]) != cal_end:
            raise SystemExit(
                f"truth cutoff {truth_json['truth_cutoff']} is not the calibration end {cal_end}"
            )
        population = ctx.calibration_features
        aligned = population[["customer_id"]].merge(truth, on="customer_id", how="left")
        expected = aligned["true_expected_spend"].to_numpy(dtype=float)
        timings, predictions = {}, {}
        for label, extra in (("transactions_only", {}), ("with_sources", sources)):
            started = time.perf_counter()
            model = potential_model(ctx).fit(
                ctx.transactions_path, cal_end, cfg.features, ctx.customers_path, **extra
            )
            timings[label] = time.perf_counter() - started
            predictions[label] = model.predict(population)
            print(f"gain {label:<18} fit {timings[label]:.1f}s", flush=True)
        diff, low, high = paired_bootstrap_gini_diff(
            expected, predictions["with_sources"], predictions["transactions_only"], n_boot=N_BOOT, seed=0
        )
        realised = ctx.holdout_spend
        r_diff, r_low, r_high = paired_bootstrap_gini_diff(
            realised, predictions["with_sources"], predictions["transactions_only"], n_boot=N_BOOT, seed=0
        )
        result: dict = {
            "customers_generated": customers,
            "seed": seed,
            "population": len(population),
            "sources": sorted(sources),
            "calibration_end": cal_end.isoformat(),
            "planted_effects": truth_json.get("planted_effects"),
            "fit_seconds": timings,
            "truth_gini": {k: normalized_gini(expected, v) for k, v in predictions.items()},
            "truth_spearman": {k: spearman(expected, v) for k, v in predictions.items()},
            "truth_gini_diff": {"diff": diff, "low": low, "high": high},
            "holdout_gini": {k: normalized_gini(realised, v) for k, v in predictions.items()},
            "holdout_gini_diff": {"diff": r_diff, "low": r_low, "high": r_high},
        }
        # mean percentile rank of the planted groups (0.5 = no signal): customers in distress at the cutoff (more
        # complaints, late and missing payments, about to lapse) should rank lower, responders higher
        groups = {}
        for column in ("distressed_at_cutoff", "planted_lapse", "responded_by_cutoff"):
            if column in aligned.columns:
                mask = aligned[column].fillna(False).astype(bool).to_numpy()
                ranks = {k: _percentile_rank(v, mask) for k, v in predictions.items()}
                ranks["truth"] = _percentile_rank(expected, mask)
                groups[column] = {"customers": int(mask.sum()), "mean_rank": ranks}
        result["planted_groups"] = groups
        return result
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# report


def markdown_table(results: dict) -> str:
    lines = []
    s = results.get("speed")
    if s:
        base, full = s["transactions"], s["all_sources"]
        lines += [
            f"Features at one cutoff, {s['rows']:,} transactions of {s['customers']:,} customers, with "
            f"{s['invoices']:,} invoices and {s['interactions']:,} interactions "
            f"({results['date']}, DuckDB threads {feature_bench.THREADS}, memory_limit "
            f"{feature_bench.MEMORY_LIMIT}; median of {len(base.get('runs_seconds', [0]))} alternated runs):",
            "",
            "| input | wall s | peak RSS MB | columns | ratio |",
            "|---|---|---|---|---|",
        ]
        for name, row in (("transactions only", base), ("all sources", full)):
            if "seconds" not in row:
                lines.append(f"| {name} | {row.get('error')} | | | |")
                continue
            ratio = row["seconds"] / base["seconds"] if base.get("seconds") else float("nan")
            lines.append(
                f"| {name} | {row['seconds']:.2f} | {row['peak_rss_mb']:.0f} | {row['columns']} | {ratio:.2f}× |"
            )
        lines.append("")
    g = results.get("gain")
    if g:
        d = g["truth_gini_diff"]
        h = g["holdout_gini_diff"]
        lines += [
            f"Potential model with and without the event sources ({', '.join(g['sources'])}) on `segml synth "
            f"--customers {g['customers_generated']} --seed {g['seed']}` ({g['population']:,} customers who "
            f"had bought by {g['calibration_end']}):",
            "",
            "| model | Gini vs truth | Spearman vs truth | holdout Gini | mean rank: in distress | mean rank: "
            "responded |",
            "|---|---|---|---|---|---|",
        ]
        groups = g.get("planted_groups", {})

        def rank(group: str, name: str) -> str:
            value = groups.get(group, {}).get("mean_rank", {}).get(name)
            return "" if value is None else f"{value:.3f}"

        for name in ("transactions_only", "with_sources", "truth"):
            if name == "truth":
                lines.append(
                    f"| planted truth | 1 | 1 | | {rank('distressed_at_cutoff', name)} | "
                    f"{rank('responded_by_cutoff', name)} |"
                )
                continue
            lines.append(
                f"| {name.replace('_', ' ')} | {g['truth_gini'][name]:.4f} | {g['truth_spearman'][name]:.4f} | "
                f"{g['holdout_gini'][name]:.4f} | {rank('distressed_at_cutoff', name)} | "
                f"{rank('responded_by_cutoff', name)} |"
            )
        distressed = groups.get("distressed_at_cutoff", {}).get("customers", 0)
        responded = groups.get("responded_by_cutoff", {}).get("customers", 0)
        lines += [
            "",
            f"Gini gain vs truth {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]; on the realised holdout "
            f"{h['diff']:+.4f} [{h['low']:+.4f}, {h['high']:+.4f}] (paired bootstrap, {N_BOOT} replicates). Mean "
            f"percentile rank (0.5 = no signal) of the {distressed:,} customers in planted distress at the cutoff "
            f"(complaints and late payments before a lapse) and of the {responded:,} campaign responders.",
        ]
    return "\n".join(lines)


def update_readme(table: str) -> None:
    update_readme_block(BEGIN_MARK, END_MARK, table, "## Event sources (`benchmarks/sources.py`)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=("speed", "gain", "both"), default="both")
    parser.add_argument("--rows", type=int, default=10_000_000, help="transactions of the speed part")
    parser.add_argument("--customers", type=int, default=GAIN_CUSTOMERS, help="synthetic customers (gain)")
    parser.add_argument("--seed", type=int, default=GAIN_SEED)
    parser.add_argument("--keep", type=Path, help="keep the gain part's project in this folder")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per contender in the speed part (median)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        speed_worker(args.worker, *args.paths)
        return
    previous = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else {}
    results = {**previous, "date": dt.date.today().isoformat(), "machine": feature_bench.machine_info()}
    if args.part in ("speed", "both"):
        results["speed"] = speed(args.rows, args.timeout, args.repeats)
    if args.part in ("gain", "both"):
        results["gain"] = gain(args.customers, args.seed, args.keep)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    update_readme(markdown_table(results))
    print(markdown_table(results))
    print(f"wrote {RESULTS} and {README}")


if __name__ == "__main__":
    main()
