"""Benchmark: scoring overhead of a grading artifact, and features + scoring throughput.

Model: an exported artifact (default: the newest ``artifacts/cdnow/<version>``; ``--artifact`` picks another).
Data: the synthetic clean transactions of ``benchmarks/features.py`` (generated and cached there): the full
file (1,000,000 customers) for the overhead measures, the 10M-row subset for throughput.

Measures (in this process; raw and segml timed alternately, ``--repeats`` pairs after one warm-up each, best
time of each kept):

* ``overhead_no_reasons``: ``GradingArtifact.score(features, reasons=False)`` — what ``segml grade
  --no-reasons`` does once the features are ready (model input matrix, seasonal adjustment, booster predict,
  horizon weight, frozen-reference ranks, grades, matrix cells, output frame) — divided by the raw
  ``booster.predict(matrix)`` on the ready model matrix (the strictest reference: it skips building the
  input). Target ≤ 1.2.
* ``no_reasons_vs_frame``: the same, divided by ``booster.predict(features[booster columns])`` — the same
  input ``segml grade`` starts from, handed to LightGBM as a user without segml would (LightGBM converts the
  frame itself).
* ``overhead_reasons``: ``score(features, reasons=True)`` divided by the raw
  ``booster.predict(matrix, pred_contrib=True)``. Target ≤ 1.2.
* ``throughput``: ``build_features`` on the 10M-row parquet + ``score`` (with and without reasons), and the
  whole ``segml.artifact.grade`` from the transactions file (ingest + features + scoring), transactions/s.

``--skip-overhead`` / ``--skip-throughput`` keep that part's previous results in the JSON.

Writes ``benchmarks/results/scoring.json`` and the table between the markers in ``benchmarks/README.md``.

Usage::

    .venv/bin/python benchmarks/scoring.py                       # 1M customers + 10M rows
    .venv/bin/python benchmarks/scoring.py --throughput-rows 1000000 --repeats 1   # quicker
    .venv/bin/python benchmarks/scoring.py --skip-throughput
    .venv/bin/python benchmarks/scoring.py --dry-run --repeats 1 --throughput-rows 1000000   # smoke check
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import update_readme_block  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "scoring.json"
README = HERE / "README.md"
BEGIN_MARK = "<!-- scoring-benchmark:begin -->"
END_MARK = "<!-- scoring-benchmark:end -->"
TARGET = 1.2

sys.path.insert(0, str(HERE))
import features as feature_bench  # noqa: E402  (benchmarks/features.py: the shared data generator)


def newest_artifact(name: str = "cdnow") -> Path:
    from segml.artifact.export import existing_versions

    folder = ROOT / "artifacts" / name
    versions = existing_versions(folder)
    if not versions:
        raise SystemExit(
            f"no artifact under {folder}: run `segml ingest experiments/{name}.yaml`, `segml train ...` and "
            f"`segml export experiments/{name}.yaml` first, or pass --artifact"
        )
    return folder / versions[-1]


def paired(raw, ours, repeats: int) -> dict:
    """Time ``raw`` and ``ours`` alternately (one warm-up each, then ``repeats`` pairs) so that load from other
    processes on the shared machine hits both alike; keep the best time of each and the per-pair ratios."""
    raw()
    result = ours()
    raw_times, our_times = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        raw()
        raw_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        result = ours()
        our_times.append(time.perf_counter() - started)
    ratios = sorted(o / r for o, r in zip(our_times, raw_times, strict=True))
    return {
        "raw_seconds": min(raw_times),
        "segml_seconds": min(our_times),
        "ratio": min(our_times) / min(raw_times),
        "pair_ratios": ratios,
        "median_pair_ratio": statistics.median(ratios),
        "result": result,
    }


def features_for(path: Path, cache: Path):
    """Features at the generator's last day (cached as parquet next to the data)."""
    import pandas as pd

    from segml.config import FeatureConfig
    from segml.features import build_features

    if cache.is_file():
        return pd.read_parquet(cache), None
    spec = FeatureConfig(threads=feature_bench.THREADS, memory_limit=feature_bench.MEMORY_LIMIT)
    started = time.perf_counter()
    frame = build_features(path, feature_bench.AS_OF, spec)
    seconds = time.perf_counter() - started
    frame.to_parquet(cache, index=False)
    return frame, seconds


def overhead(artifact_dir: Path, repeats: int) -> dict:
    from segml.artifact import load_artifact

    data = feature_bench.generate_full_data()
    features, _ = features_for(data, feature_bench.DATA_DIR / "features_full_1M_customers.parquet")
    artifact = load_artifact(artifact_dir)
    model = artifact.model
    name = "tweedie" if model.objective_ == "tweedie" else "active"
    booster = model.boosters_[name]
    rounds = int(model.n_estimators_[name])
    matrix = model._columns().matrix(features, model.horizon_days)
    result: dict = {
        "customers": len(features),
        "objective": model.objective_,
        "trees": dict(model.n_estimators_),
    }

    spend = model.boosters_.get("spend")
    spend_rounds = int(model.n_estimators_.get("spend", 0))

    def raw_predict():  # hurdle: the raw baseline predicts both boosters
        booster.predict(matrix, num_iteration=rounds)
        if model.objective_ != "tweedie":
            spend.predict(matrix, num_iteration=spend_rounds)

    def raw_contrib():
        booster.predict(matrix, num_iteration=rounds, pred_contrib=True)
        if model.objective_ != "tweedie":
            spend.predict(matrix, num_iteration=spend_rounds, pred_contrib=True)

    plain = paired(raw_predict, lambda: artifact.score(features, reasons=False), repeats)
    graded = plain.pop("result")
    result["no_reasons"] = {
        **plain,
        "target": TARGET,
        "grade_counts": graded["grade"].value_counts().sort_index().to_dict(),
    }
    print(
        f"  no reasons: raw {plain['raw_seconds']:.3f}s, grade {plain['segml_seconds']:.3f}s, ratio {plain['ratio']:.2f} "
        f"(median of pairs {plain['median_pair_ratio']:.2f})"
    )
    # Like-for-like reference: the same input as `grade` (the ready feature table), handed to LightGBM as a
    # frame of the booster's columns, as a user without segml would call it (LightGBM converts it itself).
    columns = booster.feature_name()

    def raw_predict_frame():
        frame = features.reindex(columns=columns)
        booster.predict(frame, num_iteration=rounds)
        if model.objective_ != "tweedie":
            spend.predict(frame, num_iteration=spend_rounds)

    from_frame = paired(raw_predict_frame, lambda: artifact.score(features, reasons=False), repeats)
    from_frame.pop("result")
    result["no_reasons_vs_frame"] = {**from_frame, "target": TARGET}
    print(
        f"  no reasons vs predict(feature frame): raw {from_frame['raw_seconds']:.3f}s, grade "
        f"{from_frame['segml_seconds']:.3f}s, ratio {from_frame['ratio']:.2f} "
        f"(median of pairs {from_frame['median_pair_ratio']:.2f})"
    )
    explained = paired(raw_contrib, lambda: artifact.score(features, reasons=True), repeats)
    explained.pop("result")
    result["reasons"] = {**explained, "target": TARGET}
    print(
        f"  reasons: raw contrib {explained['raw_seconds']:.3f}s, grade {explained['segml_seconds']:.3f}s, "
        f"ratio {explained['ratio']:.2f} (median of pairs {explained['median_pair_ratio']:.2f})"
    )
    return result


def throughput(artifact_dir: Path, rows: int) -> dict:
    import pandas as pd

    from segml.artifact import grade, load_artifact
    from segml.config import FeatureConfig
    from segml.features import build_features

    feature_bench.generate_full_data()
    path, n_rows, n_customers = feature_bench.write_size(rows)
    artifact = load_artifact(artifact_dir)
    spec = FeatureConfig(threads=feature_bench.THREADS, memory_limit=feature_bench.MEMORY_LIMIT)
    started = time.perf_counter()
    features = build_features(path, feature_bench.AS_OF, spec)
    feature_seconds = time.perf_counter() - started
    started = time.perf_counter()
    artifact.score(features, reasons=False)
    plain = time.perf_counter() - started
    started = time.perf_counter()
    artifact.score(features, reasons=True)
    with_reasons = time.perf_counter() - started
    del features
    # whole `segml grade` path from the transactions file: ingest (map, validate, clean) + features + grades
    mapping = {
        "transactions": [
            {
                "format": "parquet",
                "name": "bench",
                "columns": {
                    "customer_id": "customer_id",
                    "order_id": "order_id",
                    "timestamp": "timestamp",
                    "amount": "amount",
                    "quantity": "quantity",
                    "product_id": "product_id",
                },
            }
        ],
        "cleaning": {"max_date": feature_bench.AS_OF.isoformat()},
    }
    started = time.perf_counter()
    graded = grade(artifact, path, as_of=feature_bench.AS_OF, mapping=mapping, reasons=True)
    end_to_end = time.perf_counter() - started
    result = {
        "rows": n_rows,
        "customers": n_customers,
        "features_seconds": feature_seconds,
        "score_no_reasons_seconds": plain,
        "score_reasons_seconds": with_reasons,
        "features_plus_scoring_rows_per_second": n_rows / (feature_seconds + with_reasons),
        "features_plus_scoring_no_reasons_rows_per_second": n_rows / (feature_seconds + plain),
        "grade_end_to_end_seconds": end_to_end,
        "grade_end_to_end_rows_per_second": n_rows / end_to_end,
        "graded_customers": len(graded),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(
        f"  {n_rows:,} rows: features {feature_seconds:.1f}s, score {plain:.1f}s / {with_reasons:.1f}s (reasons), "
        f"end to end {end_to_end:.1f}s"
    )
    del pd
    return result


def markdown_table(results: dict) -> str:
    o = results.get("overhead")
    lines = [
        f"Run {results['date']} on {results['machine']['cores']} cores (shared machine), python "
        f"{results['machine']['python']}, LightGBM {results['machine']['lightgbm']}; artifact "
        f"`{results['artifact']}`; best of {results['repeats']} alternating runs after a warm-up.",
        "",
    ]
    if o:
        lines += [
            f"Scoring overhead on {o['customers']:,} customers with ready features ({o['objective']}, trees "
            f"{o['trees']}):",
            "",
            "| path | raw LightGBM s | segml s | ratio (best / best) | median of pair ratios | target |",
            "|---|---:|---:|---:|---:|---:|",
            f"| `grade --no-reasons` vs `booster.predict(ready model matrix)` | {o['no_reasons']['raw_seconds']:.3f} | "
            f"{o['no_reasons']['segml_seconds']:.3f} | {o['no_reasons']['ratio']:.2f} | "
            f"{o['no_reasons']['median_pair_ratio']:.2f} | ≤ {TARGET} |",
        ]
        if "no_reasons_vs_frame" in o:
            f = o["no_reasons_vs_frame"]
            lines.append(
                f"| `grade --no-reasons` vs `booster.predict(features[booster columns])` | "
                f"{f['raw_seconds']:.3f} | {f['segml_seconds']:.3f} | {f['ratio']:.2f} | "
                f"{f['median_pair_ratio']:.2f} | ≤ {TARGET} |"
            )
        lines += [
            f"| `grade` (reasons) vs `predict(pred_contrib=True)` | {o['reasons']['raw_seconds']:.3f} | "
            f"{o['reasons']['segml_seconds']:.3f} | {o['reasons']['ratio']:.2f} | "
            f"{o['reasons']['median_pair_ratio']:.2f} | ≤ {TARGET} |",
            "",
        ]
    t = results.get("throughput")
    if t:
        lines += [
            "| transactions | customers | features s | score s (no reasons / reasons) | features + scoring rows/s "
            "| `grade` end to end s (ingest + features + scoring) | end to end rows/s | peak RSS MB |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {t['rows']:,} | {t['customers']:,} | {t['features_seconds']:.1f} | "
            f"{t['score_no_reasons_seconds']:.1f} / {t['score_reasons_seconds']:.1f} | "
            f"{t['features_plus_scoring_rows_per_second']:,.0f} | {t['grade_end_to_end_seconds']:.1f} | "
            f"{t['grade_end_to_end_rows_per_second']:,.0f} | {t['peak_rss_mb']:.0f} |",
        ]
    return "\n".join(lines)


def update_readme(table: str) -> None:
    update_readme_block(BEGIN_MARK, END_MARK, table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--artifact", type=Path, help="artifact folder (default: newest artifacts/cdnow/*)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measure (best is kept)")
    parser.add_argument("--throughput-rows", type=int, default=10_000_000, help="transactions for throughput")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="print the table, write no results")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    import lightgbm

    artifact_dir = (args.artifact or newest_artifact()).resolve()
    results: dict = {
        "date": dt.date.today().isoformat(),
        "artifact": str(
            artifact_dir.relative_to(ROOT) if artifact_dir.is_relative_to(ROOT) else artifact_dir
        ),
        "repeats": args.repeats,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "lightgbm": lightgbm.__version__,
            "note": "shared machine; LightGBM and DuckDB use their default thread counts",
        },
    }
    previous = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else {}
    for part, skipped in (("overhead", args.skip_overhead), ("throughput", args.skip_throughput)):
        if skipped and part in previous:  # keep the last measurement of a part not re-run
            results[part] = previous[part]
    if not args.skip_overhead:
        print("overhead (1M customers)", flush=True)
        results["overhead"] = overhead(artifact_dir, args.repeats)
    if not args.skip_throughput:
        print(f"throughput ({args.throughput_rows:,} rows)", flush=True)
        results["throughput"] = throughput(artifact_dir, args.throughput_rows)
    table = markdown_table(results)
    if args.dry_run:
        print(table)
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    update_readme(table)
    print(f"wrote {RESULTS} and {README}")


if __name__ == "__main__":
    main()
