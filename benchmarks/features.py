"""Benchmark: segml's feature build against lifetimes and a minimal DuckDB RFM query.

Data: ``segml.datasets.synthetic`` customers (written in chunks of 200,000 customers with their own seeds, ids
prefixed by the chunk), converted to the clean-transactions schema and sorted by time, cached under
``benchmarks/data/``. Each size (1M, 3M, 10M rows) is the first customers (in id order) whose rows add up to
that size, so the sizes are nested customer subsets.

Each contender runs in its own fresh subprocess; peak RSS is that child's own ``VmHWM``
(/proc/self/status at its end: the whole process, i.e. interpreter, imports, data and engine memory):

* ``segml``: ``segml.features.build_features`` from the parquet file (DuckDB threads=2, memory_limit=4GB),
  including the fetch to pandas.
* ``lifetimes``: ``lifetimes.utils.summary_data_from_transaction_data`` on (customer_id, date, amount); the
  parquet load is timed separately and not included in the wall time.
* ``duckdb_rfm``: a minimal hand-written DuckDB RFM ``GROUP BY`` (same threads/memory), fetched to pandas.

Writes ``benchmarks/results/features.json`` and the table between the markers in ``benchmarks/README.md``.

Usage::

    .venv/bin/python benchmarks/features.py            # sizes 1M, 3M, 10M
    .venv/bin/python benchmarks/features.py --quick    # 1M only
    .venv/bin/python benchmarks/features.py --sizes 1000000 3000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import update_readme_block  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"
RESULTS = HERE / "results" / "features.json"
README = HERE / "README.md"
BEGIN_MARK = "<!-- features-benchmark:begin -->"
END_MARK = "<!-- features-benchmark:end -->"

N_CUSTOMERS = 1_000_000
CHUNK_CUSTOMERS = 200_000
SEED = 20260101
AS_OF = dt.date(2026, 6, 30)  # the generator's last day: every row is used
THREADS = 2
MEMORY_LIMIT = "4GB"
DEFAULT_SIZES = (1_000_000, 3_000_000, 10_000_000)
CONTENDERS = ("segml", "duckdb_rfm", "lifetimes")

RFM_SQL = """
SELECT customer_id,
       MIN(CAST(timestamp AS DATE)) AS first_day,
       MAX(CAST(timestamp AS DATE)) AS last_day,
       COUNT(DISTINCT CAST(timestamp AS DATE)) AS purchase_days,
       SUM(amount) AS monetary
FROM read_parquet('{path}')
WHERE CAST(timestamp AS DATE) <= DATE '{as_of}'
GROUP BY customer_id
"""


# --------------------------------------------------------------------------------------------------------------
# Data


def duckdb_connection():
    """A DuckDB connection with the benchmark's fixed resources and no progress bar."""
    import duckdb

    con = duckdb.connect(config={"threads": THREADS, "memory_limit": MEMORY_LIMIT})
    con.execute("SET enable_progress_bar = false")
    return con


def full_data_path() -> Path:
    return DATA_DIR / f"clean_transactions_{N_CUSTOMERS}c_seed{SEED}.parquet"


def size_path(rows: int) -> Path:
    return DATA_DIR / f"clean_transactions_{rows}.parquet"


def generate_full_data() -> Path:
    """Write the synthetic clean transactions for all customers (cached)."""

    from segml.datasets.synthetic import SynthSpec, write_synthetic

    target = full_data_path()
    if target.is_file():
        return target
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    con = duckdb_connection()
    with tempfile.TemporaryDirectory(dir=DATA_DIR) as tmp:
        parts = []
        for chunk in range(N_CUSTOMERS // CHUNK_CUSTOMERS):
            started = time.perf_counter()
            out = Path(tmp) / f"chunk{chunk}"
            write_synthetic(SynthSpec(n_customers=CHUNK_CUSTOMERS, seed=SEED + chunk), out)
            parts.append(
                f"SELECT 'K{chunk}' || customer_id AS customer_id, 'K{chunk}' || order_id AS order_id, "
                f"order_ts AS timestamp, CAST(amount AS DOUBLE) AS amount, CAST(quantity AS DOUBLE) AS quantity, "
                f"product_id, channel FROM read_parquet('{out / 'transactions.parquet'}')"
            )
            print(f"  generated chunk {chunk} in {time.perf_counter() - started:.1f}s", flush=True)
        union = "\nUNION ALL\n".join(parts)
        tmp_target = Path(tmp) / "full.parquet"
        con.execute(
            f"""COPY (
                SELECT customer_id, order_id, timestamp, amount, quantity, product_id, channel,
                       'synthetic' AS source,
                       CAST(ROW_NUMBER() OVER (ORDER BY timestamp, customer_id, order_id, product_id) AS BIGINT)
                           AS source_row,
                       amount < 0 AS is_return, FALSE AS is_outlier
                FROM ({union}) ORDER BY timestamp, customer_id, order_id, product_id
            ) TO '{tmp_target}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000)"""
        )
        os.replace(tmp_target, target)
    con.close()
    return target


def write_size(rows: int) -> tuple[Path, int, int]:
    """The first customers (id order) whose rows reach ``rows``; returns (path, rows, customers)."""

    target = size_path(rows)
    con = duckdb_connection()
    source = full_data_path()
    if not target.is_file():
        tmp = target.with_suffix(".tmp")
        con.execute(
            f"""COPY (
                WITH per_customer AS (
                    SELECT customer_id, COUNT(*) AS n FROM read_parquet('{source}') GROUP BY customer_id
                ), running AS (
                    SELECT customer_id, SUM(n) OVER (ORDER BY customer_id) - n AS rows_before FROM per_customer
                )
                SELECT t.* FROM read_parquet('{source}') t
                JOIN running r ON r.customer_id = t.customer_id AND r.rows_before < {rows}
                ORDER BY t.source_row
            ) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000)"""
        )
        os.replace(tmp, target)
    n_rows, n_customers = con.execute(
        f"SELECT COUNT(*), COUNT(DISTINCT customer_id) FROM read_parquet('{target}')"
    ).fetchall()[0]
    con.close()
    return target, int(n_rows), int(n_customers)


# --------------------------------------------------------------------------------------------------------------
# Contenders (run inside a child process)


def run_contender(name: str, path: str) -> dict:
    """Run one contender in this process and return its timings."""
    if name == "segml":
        from segml.config import FeatureConfig
        from segml.features import build_features

        spec = FeatureConfig(threads=THREADS, memory_limit=MEMORY_LIMIT)
        started = time.perf_counter()
        frame = build_features(path, AS_OF, spec)
        return {"seconds": time.perf_counter() - started, "customers": len(frame), "columns": frame.shape[1]}
    if name == "duckdb_rfm":
        con = duckdb_connection()
        started = time.perf_counter()
        frame = con.sql(RFM_SQL.format(path=path, as_of=AS_OF.isoformat())).to_arrow_table().to_pandas()
        return {"seconds": time.perf_counter() - started, "customers": len(frame), "columns": frame.shape[1]}
    if name == "lifetimes":
        import pandas as pd
        from lifetimes.utils import summary_data_from_transaction_data

        started = time.perf_counter()
        rows = pd.read_parquet(path, columns=["customer_id", "timestamp", "amount"])
        rows = rows.rename(columns={"timestamp": "date"})
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        summary = summary_data_from_transaction_data(
            rows,
            "customer_id",
            "date",
            monetary_value_col="amount",
            observation_period_end=pd.Timestamp(AS_OF),
            freq="D",
        )
        return {
            "seconds": time.perf_counter() - started,
            "load_seconds": load_seconds,
            "customers": len(summary),
            "columns": summary.shape[1],
        }
    raise SystemExit(f"unknown contender {name}")


def measure(name: str, path: Path, timeout: float) -> dict:
    """Run a contender in a fresh subprocess; wall time and peak RSS as reported by the child."""
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), PYTHONHASHSEED="0")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--data", str(path)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"error": f"timed out after {timeout:.0f}s"}
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        return {"error": f"exit code {proc.returncode}"}
    result = json.loads(output.strip().splitlines()[-1])
    result["process_seconds"] = elapsed
    return result


def peak_rss_mb() -> float:
    """Peak RSS of this process image: ``VmHWM`` of /proc/self/status (reset by exec), else ``ru_maxrss``.

    ``ru_maxrss`` survives fork + exec on Linux, so a worker started by a parent that grew large (for example
    while generating the data) would report the parent's peak; ``VmHWM`` belongs to the new image only.
    """
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_main(name: str, path: str) -> None:
    result = run_contender(name, path)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------------------------
# Report


def machine_info() -> dict:
    import duckdb
    import pandas

    try:
        import lifetimes

        lifetimes_version = lifetimes.__version__
    except Exception:  # pragma: no cover
        lifetimes_version = None
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "duckdb": duckdb.__version__,
        "pandas": pandas.__version__,
        "lifetimes": lifetimes_version,
        "note": "shared machine (other processes were running); single run per contender and size",
    }


def markdown_table(results: dict) -> str:
    lines = [
        f"Run {results['date']} on {results['machine']['cores']} cores (shared machine), python "
        f"{results['machine']['python']}, DuckDB {results['machine']['duckdb']}; DuckDB threads={THREADS}, "
        f"memory_limit={MEMORY_LIMIT}. Wall seconds / peak RSS MB per contender.",
        "",
        "| rows | customers | segml s | segml MB | duckdb_rfm s | duckdb_rfm MB | lifetimes s (+load) "
        "| lifetimes MB | segml/lifetimes | segml/duckdb_rfm | segml rows/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(entry: dict, key: str, fmt: str) -> str:
        value = entry.get(key)
        return format(value, fmt) if isinstance(value, int | float) else entry.get("error", "–")

    for size in results["sizes"]:
        seg, rfm, lt = size["segml"], size["duckdb_rfm"], size["lifetimes"]
        lt_time = cell(lt, "seconds", ".2f")
        if "load_seconds" in lt:
            lt_time += f" (+{lt['load_seconds']:.2f})"
        ratio_lt = size.get("ratio_segml_lifetimes")
        ratio_rfm = size.get("ratio_segml_duckdb_rfm")
        lines.append(
            f"| {size['rows']:,} | {size['customers']:,} | {cell(seg, 'seconds', '.2f')} | "
            f"{cell(seg, 'peak_rss_mb', '.0f')} | {cell(rfm, 'seconds', '.2f')} | {cell(rfm, 'peak_rss_mb', '.0f')} | "
            f"{lt_time} | {cell(lt, 'peak_rss_mb', '.0f')} | "
            f"{'–' if ratio_lt is None else format(ratio_lt, '.3f')} | "
            f"{'–' if ratio_rfm is None else format(ratio_rfm, '.2f')} | "
            f"{'–' if size.get('segml_rows_per_second') is None else format(size['segml_rows_per_second'], ',.0f')} |"
        )
    return "\n".join(lines)


def update_readme(table: str) -> None:
    update_readme_block(BEGIN_MARK, END_MARK, table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="row counts (default 1M 3M 10M)")
    parser.add_argument("--quick", action="store_true", help="1M rows only")
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per contender run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.data)
        return

    sizes = [1_000_000] if args.quick else (args.sizes or list(DEFAULT_SIZES))
    print(f"data: {full_data_path()}", flush=True)
    generate_full_data()
    results: dict = {
        "date": dt.date.today().isoformat(),
        "as_of": AS_OF.isoformat(),
        "duckdb_threads": THREADS,
        "duckdb_memory_limit": MEMORY_LIMIT,
        "machine": machine_info(),
        "data": f"segml.datasets.synthetic, {N_CUSTOMERS:,} customers in chunks of {CHUNK_CUSTOMERS:,}, seed {SEED}",
        "sizes": [],
    }
    for rows in sorted(sizes):
        path, n_rows, n_customers = write_size(rows)
        entry: dict = {"rows": n_rows, "customers": n_customers, "file_mb": path.stat().st_size / 2**20}
        for name in args.contenders:
            print(f"{n_rows:>11,} rows  {name:<10}", end=" ", flush=True)
            entry[name] = measure(name, path, args.timeout)
            shown = entry[name].get("seconds")
            print(
                f"{shown:.2f}s" if shown is not None else entry[name].get("error"),
                f"peak {entry[name].get('peak_rss_mb', float('nan')):.0f} MB",
                flush=True,
            )
        for name in CONTENDERS:
            entry.setdefault(name, {"error": "not run"})
        seg = entry["segml"].get("seconds")
        if seg is not None:
            entry["segml_rows_per_second"] = n_rows / seg
            for other in ("lifetimes", "duckdb_rfm"):
                if entry[other].get("seconds"):
                    entry[f"ratio_segml_{other}"] = seg / entry[other]["seconds"]
        results["sizes"].append(entry)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    update_readme(markdown_table(results))
    print(f"wrote {RESULTS} and {README}")


if __name__ == "__main__":
    main()
