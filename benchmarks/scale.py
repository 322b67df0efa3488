"""Benchmark: DuckDB features (and ingest) on one machine at 1M, 30M and 100M transactions.

Data: written by DuckDB SQL straight to Parquet from ``range(rows)`` (streamed, never built in pandas), ten
rows per customer on average (100M rows = 10M customers). Every value is a ``hash(row, seed + k)`` of the row
number, so a rerun with the same DuckDB version writes the same file. Columns are the clean-transactions schema
(one line per order, timestamps uniform over 2024-01-01 .. 2026-06-30, skewed amounts, 2 % returns), so the same
file feeds ``build_features`` directly and ``segml.ingest`` as a raw Parquet source. Files are cached under
``benchmarks/data/scale/`` (git-ignored) and deleted at the end unless ``--keep-data``.

Each run is a fresh child process (``--worker``) with DuckDB ``threads=2``, ``memory_limit=4GB`` and its spill
files in ``benchmarks/data/scale/spill/`` (``TMPDIR`` for the features engine's private spill folder, the
working directory's ``.tmp`` for ingest's connection). Steps:

* ``features``: ``segml.features.write_features(parquet, 2026-06-30, FeatureConfig(threads=2,
  memory_limit="4GB"), out)``, what ``segml features`` runs on DuckDB: the feature query's result streamed from
  DuckDB in Arrow batches straight into the parquet file (row groups of 1,048,576 rows), never a whole pandas
  frame. ``seconds`` covers query and write together; a run has no ``build_seconds`` / ``write_seconds`` /
  ``frame_mb`` any more (they measured the whole-frame path), but ``output_row_groups`` instead.
* ``ingest``: ``segml.ingest.run_ingest`` on an experiment whose one Parquet source is the generated file
  (clean transactions, quarantine and DQ report written under the data folder).

Peak RSS of the whole process tree: the parent polls the child and its descendants with psutil (sum of RSS,
every 0.2 s) and the child reports its own ``VmHWM`` (kernel high-water mark); ``peak_rss_mb`` is the larger.
``spill_peak_mb`` is the largest size of the spill folder seen while polling.

Writes ``benchmarks/results/scale.json`` and the table between the markers in ``benchmarks/README.md``.
Not part of CI (``make bench-scale``; about 15-25 minutes on 2 cores, ~5 GB of disk while it runs).

Usage::

    .venv/bin/python benchmarks/scale.py                          # features 1M/30M/100M, ingest 1M/100M
    .venv/bin/python benchmarks/scale.py --sizes 1000000 --ingest-sizes 1000000 --no-readme --out /tmp/s.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import psutil
from _common import update_readme_block  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data" / "scale"
RESULTS = HERE / "results" / "scale.json"
README = HERE / "README.md"
BEGIN_MARK = "<!-- scale-benchmark:begin -->"
END_MARK = "<!-- scale-benchmark:end -->"

SEED = 20261201
ROWS_PER_CUSTOMER = 10
FIRST_DAY = dt.date(2024, 1, 1)
AS_OF = dt.date(2026, 6, 30)
THREADS = 2
MEMORY_LIMIT = "4GB"
DEFAULT_SIZES = (1_000_000, 30_000_000, 100_000_000)
DEFAULT_INGEST_SIZES = (1_000_000, 100_000_000)
BASE_ROWS = 1_000_000
RSS_THRESHOLD_MB = 8192.0
RATIO_THRESHOLD = 1.5
POLL_SECONDS = 0.2

_GENERATE_SQL = """
COPY (
    SELECT
        'C' || lpad(CAST(hash(i, {seed}) % {customers} AS VARCHAR), 8, '0') AS customer_id,
        'O' || lpad(CAST(i AS VARCHAR), 9, '0') AS order_id,
        TIMESTAMP '{first_day}' + to_seconds(CAST(hash(i, {seed} + 1) % {span_seconds} AS BIGINT)) AS timestamp,
        CASE WHEN hash(i, {seed} + 3) % 50 = 0 THEN -1.0 ELSE 1.0 END
            * round(2.0 + exp((hash(i, {seed} + 2) % 1000000) / 1000000.0 * 6.0), 2) AS amount,
        CAST(1 + hash(i, {seed} + 4) % 5 AS DOUBLE) AS quantity,
        'P' || CAST(hash(i, {seed} + 5) % 50000 AS VARCHAR) AS product_id,
        ['web', 'store', 'phone'][1 + CAST(hash(i, {seed} + 6) % 3 AS INTEGER)] AS channel,
        'scale' AS source,
        i + 1 AS source_row,
        hash(i, {seed} + 3) % 50 = 0 AS is_return,
        FALSE AS is_outlier
    FROM range({rows}) t(i)
) TO '{target}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000)
"""

_EXPERIMENT_YAML = """\
description: scale benchmark ({rows:,} generated rows)
data:
  transactions:
    - path: {path}
      format: parquet
      name: scale
      columns:
        customer_id: customer_id
        order_id: order_id
        timestamp: timestamp
        amount: amount
        quantity: quantity
        product_id: product_id
        channel: channel
  cleaning:
    max_date: {as_of}
cutoffs:
  calibration_end: 2025-06-30
  holdout_end: {as_of}
features:
  threads: {threads}
  memory_limit: {memory_limit}
"""


# --------------------------------------------------------------------------------------------------------------
# Data


def data_path(rows: int) -> Path:
    return DATA_DIR / f"transactions_{rows}_seed{SEED}.parquet"


def customers_for(rows: int) -> int:
    return max(1, rows // ROWS_PER_CUSTOMER)


def generate(rows: int) -> tuple[Path, float]:
    """Write (or reuse) the generated file for ``rows``; returns (path, seconds spent writing)."""
    import duckdb

    target = data_path(rows)
    if target.is_file():
        return target, 0.0
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    span = int(
        (dt.datetime.combine(AS_OF, dt.time()) - dt.datetime.combine(FIRST_DAY, dt.time())).total_seconds()
    )
    span += 86_400  # through the end of the cutoff day
    con = duckdb.connect(
        ":memory:",
        config={"threads": THREADS, "memory_limit": MEMORY_LIMIT, "temp_directory": str(spill_dir())},
    )
    con.execute("SET enable_progress_bar = false")
    started = time.perf_counter()
    con.execute(
        _GENERATE_SQL.format(
            seed=SEED,
            customers=customers_for(rows),
            first_day=FIRST_DAY.isoformat(),
            span_seconds=span,
            rows=rows,
            target=str(tmp).replace("'", "''"),
        )
    )
    con.close()
    os.replace(tmp, target)
    return target, time.perf_counter() - started


def spill_dir() -> Path:
    path = DATA_DIR / "spill"
    path.mkdir(parents=True, exist_ok=True)
    return path


def count_file(path: Path) -> tuple[int, int]:
    """(rows, distinct customers) of a generated file."""
    import duckdb

    con = duckdb.connect(":memory:", config={"threads": THREADS, "memory_limit": MEMORY_LIMIT})
    con.execute(f"SET temp_directory = '{spill_dir()}'")
    literal = str(path).replace("'", "''")
    rows, customers = con.execute(
        f"SELECT COUNT(*), COUNT(DISTINCT customer_id) FROM read_parquet('{literal}')"
    ).fetchall()[0]
    con.close()
    return int(rows), int(customers)


# --------------------------------------------------------------------------------------------------------------
# Worker (child process)


def own_peak_rss_mb() -> float:
    """``VmHWM`` of this process image (reset by exec, unlike ``ru_maxrss``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource  # pragma: no cover - not Linux

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(step: str, path: str, out_dir: str) -> dict:
    if step == "features":
        import pyarrow.parquet as pq

        from segml.config import FeatureConfig
        from segml.features import write_features

        spec = FeatureConfig(threads=THREADS, memory_limit=MEMORY_LIMIT)
        target = Path(out_dir) / "features.parquet"
        started = time.perf_counter()
        n_customers = write_features(path, AS_OF, spec, target)
        seconds = time.perf_counter() - started
        written = pq.ParquetFile(target).metadata
        result = {
            "seconds": seconds,
            "output_customers": n_customers,
            "output_columns": written.num_columns,
            "output_row_groups": written.num_row_groups,
            "output_mb": target.stat().st_size / 2**20,
        }
        target.unlink()
        return result
    if step == "ingest":
        from segml.config import load_experiment
        from segml.ingest import run_ingest

        rows = int(Path(path).stem.split("_")[1])
        experiment = Path(out_dir) / "scale.yaml"
        experiment.write_text(
            _EXPERIMENT_YAML.format(
                rows=rows, path=path, as_of=AS_OF, threads=THREADS, memory_limit=MEMORY_LIMIT
            ),
            encoding="utf-8",
        )
        cfg = load_experiment(experiment, root=Path(out_dir))
        started = time.perf_counter()
        result = run_ingest(cfg, today=AS_OF)
        seconds = time.perf_counter() - started
        report = result.report
        return {
            "seconds": seconds,
            "clean_mb": result.transactions_path.stat().st_size / 2**20,
            "rows_in": report.get("rows_in"),
            "rows_kept": report.get("rows_kept"),
            "rows_quarantined": report.get("rows_quarantined"),
        }
    raise SystemExit(f"unknown step {step}")


def worker_main(step: str, path: str, out_dir: str) -> None:
    import resource

    result = worker(step, path, out_dir)
    result["own_peak_rss_mb"] = own_peak_rss_mb()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------------------------
# Measurement (parent)


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for member in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def _dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def measure(step: str, path: Path, timeout: float, max_spill_gb: float = 40.0) -> dict:
    """One run of ``step`` in a fresh child; wall time, peak tree RSS and peak spill size.

    The child is stopped (and the run reported as not finished) after ``timeout`` seconds or when its spill
    folder grows beyond ``max_spill_gb`` or the disk has less than 5 GB free.
    """
    out_dir = DATA_DIR / f"out_{step}"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    spill = spill_dir()
    shutil.rmtree(spill, ignore_errors=True)
    spill.mkdir(parents=True)
    src = HERE.parent / "src"
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(THREADS),
        PYTHONHASHSEED="0",
        TMPDIR=str(spill),
        PYTHONPATH=os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p),
    )
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", step, "--data", str(path), "--out-dir"]
    started = time.perf_counter()
    child = subprocess.Popen([*cmd, str(out_dir)], stdout=subprocess.PIPE, env=env, cwd=spill, text=True)
    watched = psutil.Process(child.pid)
    peak_tree = 0
    peak_spill = 0
    try:
        while child.poll() is None:
            if time.perf_counter() - started > timeout:
                child.kill()
                child.communicate()
                shutil.rmtree(out_dir, ignore_errors=True)
                return {"error": f"timed out after {timeout:.0f}s", "peak_tree_rss_mb": peak_tree / 2**20}
            peak_tree = max(peak_tree, _tree_rss(watched))
            peak_spill = max(peak_spill, _dir_size(spill))
            if peak_spill > max_spill_gb * 2**30 or shutil.disk_usage(spill).free < 5 * 2**30:
                child.kill()
                child.communicate()
                shutil.rmtree(spill, ignore_errors=True)
                shutil.rmtree(out_dir, ignore_errors=True)
                return {
                    "error": f"stopped after {time.perf_counter() - started:.0f}s, not finished: spill folder "
                    f"at {peak_spill / 2**30:.1f} GB (limit {max_spill_gb:g} GB or 5 GB of free disk)",
                    "peak_tree_rss_mb": peak_tree / 2**20,
                }
            time.sleep(POLL_SECONDS)
    except psutil.NoSuchProcess:
        pass
    output, _ = child.communicate()
    elapsed = time.perf_counter() - started
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.rmtree(spill, ignore_errors=True)
    if child.returncode != 0:
        return {"error": f"exit code {child.returncode}", "peak_tree_rss_mb": peak_tree / 2**20}
    result = json.loads(output.strip().splitlines()[-1])
    result["process_seconds"] = elapsed
    result["polled_tree_rss_mb"] = peak_tree / 2**20
    result["peak_rss_mb"] = max(result["own_peak_rss_mb"], result["polled_tree_rss_mb"])
    result["spill_peak_mb"] = peak_spill / 2**20
    return result


def run_size(step: str, rows: int, repeats: int, timeout: float, info: dict, max_spill_gb: float) -> dict:
    path = info["path"]
    runs = []
    for index in range(repeats):
        print(f"{rows:>12,} rows  {step:<9} run {index + 1}/{repeats}", end=" ", flush=True)
        runs.append(measure(step, path, timeout, max_spill_gb))
        shown = runs[-1]
        if "error" in shown:
            print(shown["error"], flush=True)
            break
        print(f"{shown['seconds']:.1f}s  peak {shown['peak_rss_mb']:.0f} MB", flush=True)
    entry: dict = {
        "step": step,
        "rows": info["rows"],
        "customers": info["customers"],
        "file_mb": path.stat().st_size / 2**20,
        "repeats": len(runs),
        "runs": runs,
    }
    ok = [r for r in runs if "error" not in r]
    if len(ok) == len(runs) and ok:
        entry["seconds"] = statistics.median(r["seconds"] for r in ok)
        entry["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
        entry["spill_peak_mb"] = max(r["spill_peak_mb"] for r in ok)
        entry["seconds_per_million_rows"] = entry["seconds"] / (info["rows"] / 1e6)
        if all("cpu_seconds" in r for r in ok):
            entry["cpu_seconds"] = statistics.median(r["cpu_seconds"] for r in ok)
    else:
        entry["error"] = next(r["error"] for r in runs if "error" in r)
    return entry


# --------------------------------------------------------------------------------------------------------------
# Report


def flag(value: float | None, threshold: float) -> dict:
    return {
        "value": value,
        "threshold": threshold,
        "met": None if value is None else bool(value <= threshold),
    }


def targets(entries: list[dict]) -> dict:
    out: dict = {}
    for step in ("features", "ingest"):
        near = [e for e in entries if e["step"] == step and BASE_ROWS / 2 <= e["rows"] < 2 * BASE_ROWS]
        base = min(near, key=lambda e: abs(e["rows"] - BASE_ROWS), default=None)
        top = next((e for e in entries if e["step"] == step and e["rows"] >= 100_000_000), None)
        rss = top.get("peak_rss_mb") if top else None
        ratio = None
        if top and base and "seconds" in top and "seconds" in base:
            ratio = top["seconds_per_million_rows"] / base["seconds_per_million_rows"]
        out[f"{step}_100m_peak_rss_mb"] = flag(rss, RSS_THRESHOLD_MB)
        out[f"{step}_seconds_per_row_100m_over_1m"] = flag(ratio, RATIO_THRESHOLD)
    return out


def machine_info() -> dict:
    import duckdb
    import pandas

    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "duckdb": duckdb.__version__,
        "pandas": pandas.__version__,
        "note": "shared machine (other jobs were running); run with nice -n 10",
    }


def markdown_table(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"Run {results['date']} on {machine['cores']} cores / {machine['memory_gb']} GB (shared machine), python "
        f"{machine['python']}, DuckDB {machine['duckdb']}; DuckDB threads={THREADS}, memory_limit={MEMORY_LIMIT}, "
        "spill to a local folder. Seconds: median of the runs; peak RSS: whole process tree, largest run.",
        "",
        "| step | rows | customers | runs | seconds | s per 1M rows | peak RSS MB | spill peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in results["runs"]:
        if "error" in e:
            lines.append(
                f"| {e['step']} | {e['rows']:,} | {e['customers']:,} | {e['repeats']} | {e['error']} | – | – | – |"
            )
            continue
        lines.append(
            f"| {e['step']} | {e['rows']:,} | {e['customers']:,} | {e['repeats']} | {e['seconds']:.1f} | "
            f"{e['seconds_per_million_rows']:.2f} | {e['peak_rss_mb']:.0f} | {e['spill_peak_mb']:.0f} |"
        )
    lines += ["", "| target | value | threshold | met |", "|---|---:|---:|---|"]
    notes = results.get("notes", [])
    for name, t in results["targets"].items():
        value = "not measured" if t["value"] is None else f"{t['value']:.2f}"
        met = "not measured" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {name} | {value} | ≤ {t['threshold']:g} | {met} |")
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines)


def update_readme(table: str) -> None:
    update_readme_block(BEGIN_MARK, END_MARK, table)


def write_results(out: Path, entries: list[dict], total_seconds: float, *, complete: bool) -> dict:
    """Write the JSON (after every size, so an interrupted run keeps what it measured)."""
    from segml.storage import write_json

    results = {
        "date": dt.date.today().isoformat(),
        "as_of": AS_OF.isoformat(),
        "duckdb_threads": THREADS,
        "duckdb_memory_limit": MEMORY_LIMIT,
        "data": f"DuckDB range() + hash(row, seed), seed {SEED}, {ROWS_PER_CUSTOMER} rows per customer on average",
        "machine": machine_info(),
        "complete": complete,
        "total_seconds": total_seconds,
        "runs": sorted(entries, key=lambda e: (e["step"], e["rows"])),
        "targets": targets(entries),
    }
    write_json(out, results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", help="feature sizes (default 1M 30M 100M)")
    parser.add_argument("--ingest-sizes", type=int, nargs="*", help="ingest sizes (default 1M 100M)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size below 10M rows (median)")
    parser.add_argument("--big-repeats", type=int, default=1, help="runs per size of 10M rows and more")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument(
        "--max-spill-gb", type=float, default=40.0, help="stop a run whose spill grows beyond"
    )
    parser.add_argument("--keep-data", action="store_true", help="keep the generated files")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.data, args.out_dir)
        return

    sys.path.insert(0, str(HERE.parent / "src"))
    sizes = list(DEFAULT_SIZES) if args.sizes is None else args.sizes
    ingest_sizes = list(DEFAULT_INGEST_SIZES) if args.ingest_sizes is None else args.ingest_sizes
    total_started = time.perf_counter()
    data: dict[int, dict] = {}
    entries = []
    plan = sorted({(rows, "features") for rows in sizes} | {(rows, "ingest") for rows in ingest_sizes})
    for rows in sorted({r for r, _ in plan}):
        path, gen_seconds = generate(rows)
        n_rows, n_customers = count_file(path)
        data[rows] = {"path": path, "rows": n_rows, "customers": n_customers, "generate_seconds": gen_seconds}
        print(f"data {path.name}: {n_rows:,} rows, {n_customers:,} customers (written in {gen_seconds:.1f}s)")
        for _, step in [p for p in plan if p[0] == rows]:
            repeats = args.repeats if rows < 10_000_000 else args.big_repeats
            entries.append(run_size(step, rows, repeats, args.timeout, data[rows], args.max_spill_gb))
            entries[-1]["generate_seconds"] = gen_seconds
            write_results(args.out, entries, time.perf_counter() - total_started, complete=False)
        if not args.keep_data:
            path.unlink()
    shutil.rmtree(spill_dir(), ignore_errors=True)
    results = write_results(args.out, entries, time.perf_counter() - total_started, complete=True)
    if not args.no_readme:
        update_readme(markdown_table(results))
    print(markdown_table(results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
