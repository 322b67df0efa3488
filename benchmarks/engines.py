"""Benchmark: features, grading and ingest on DuckDB, Spark ``local[2]`` and a Spark standalone cluster on loopback.

Data: the clean synthetic transactions of ``benchmarks/features.py`` (same cache under ``benchmarks/data/``),
at 1M and 10M rows (nested customer subsets).

Contenders, each run in a fresh subprocess, three times alternated (the order rotates each round), median of
the wall times:

* **features** at ``features.AS_OF``: ``segml.features.build_features`` fetched to pandas on the driver, on
  DuckDB (threads=2, memory_limit=4GB) and with ``engine="spark"`` on ``local[2]`` and on the standalone
  cluster. For Spark the session is started first and timed apart: ``session_seconds`` (``spark_session``) and
  ``query_seconds`` (``build_features`` on the running session); ``seconds`` is their sum.
* **grading**: ``segml grade`` (the CLI, ``--no-reasons`` off: reasons included) with an artifact exported
  from a training run of the smoke experiment (800 synthetic customers, scratch project under
  ``benchmarks/data/engines_smoke``). The input is the benchmark's transactions rewritten as raw Parquet in the
  smoke mapping's columns (``order_ts`` for the timestamp). ``--engine duckdb`` writes one Parquet file;
  ``--engine spark --master local[2]`` and ``--master spark://127.0.0.1:P`` write a Parquet folder. The grade
  counts, and the grade of every customer, are compared across engines after the runs.
* **ingest**: ``segml ingest`` (the CLI) on the same raw Parquet input as grading, in a scratch project root per
  engine under the run's temporary folder (the smoke experiment without its customers file, the transactions
  path pointing at the raw input), with ``--set engine=duckdb`` (``features.threads`` and
  ``features.memory_limit`` as above) or ``--set engine=spark`` and ``spark.master`` / ``spark.conf`` (the
  same conf as the other Spark contenders). After the runs the engines' outputs are compared:
  ``rows_in``, ``rows_kept`` and ``by_reason`` of ``dq_report.json`` and the clean ``transactions.parquet``
  read as pandas frames; ``outputs_identical`` records the result.

The cluster is one master and one worker started with ``spark-class`` (``SPARK_LOCAL_IP=127.0.0.1``, as in
``tests/test_spark_engine.py``), waited for until the worker registers, and stopped by PID at the end.

Memory: ``peak_rss_mb`` is the child Python's own ``VmHWM`` (features contenders only); ``peak_tree_rss_mb``
is the peak of the summed RSS of the child and its descendants (the driver JVM included) sampled every
0.2 s; ``cluster_peak_rss_mb`` is the same for the standalone worker's process tree (its executor JVM) during
the run. The master and worker daemons are not counted in the contender's tree.

Writes ``benchmarks/results/engines.json`` and the table between the markers in ``benchmarks/README.md``. The
file is merged, not overwritten: a run of some ``--tasks`` or ``--sizes`` keeps the other tasks and sizes of the
committed file (each with its own command and date).

Usage::

    .venv/bin/python benchmarks/engines.py             # 1M and 10M rows
    .venv/bin/python benchmarks/engines.py --quick     # 1M rows only
    .venv/bin/python benchmarks/engines.py --sizes 1000000 --repeats 3 --timeout 1800
    .venv/bin/python benchmarks/engines.py --tasks ingest --sizes 1000000 --repeats 3
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
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import update_readme_block  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SRC = ROOT / "src"

import features as feature_bench  # noqa: E402  (benchmarks/features.py: the cached transactions)

RESULTS = HERE / "results" / "engines.json"
BEGIN_MARK = "<!-- engines-benchmark:begin -->"
END_MARK = "<!-- engines-benchmark:end -->"
HEADING = "## DuckDB and Spark (benchmarks/engines.py)"
DEFAULT_SIZES = (1_000_000, 10_000_000)
ENGINES = ("duckdb", "spark_local", "spark_standalone")
TASKS = ("features", "grading", "ingest")
SMOKE_DIR = feature_bench.DATA_DIR / "engines_smoke"
LOCAL_MASTER = "local[2]"
#: the driver's resources on both Spark contenders; the executor's on the cluster
SPARK_CONF = {"spark.driver.memory": "3g", "spark.sql.shuffle.partitions": "4"}
WORKER_CORES = 2
WORKER_MEMORY = "3g"
CLUSTER_CONF = {
    "spark.executor.memory": "2g",
    "spark.cores.max": str(WORKER_CORES),
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}


# --------------------------------------------------------------------------------------------------------------
# Inputs


def raw_grading_input(clean: Path, rows: int) -> Path:
    """The clean transactions in the smoke mapping's raw columns (cached beside them)."""
    target = feature_bench.DATA_DIR / f"engines_raw_{rows}.parquet"
    if not target.is_file():
        tmp = target.with_suffix(".tmp")
        con = feature_bench.duckdb_connection()
        con.execute(
            f"""COPY (
                SELECT customer_id, order_id, timestamp AS order_ts, amount, quantity, product_id, channel
                FROM read_parquet('{clean}') ORDER BY source_row
            ) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000)"""
        )
        con.close()
        os.replace(tmp, target)
    return target


def smoke_artifact() -> Path:
    """An artifact exported from the smoke experiment (800 synthetic customers), trained once and cached."""
    marker = SMOKE_DIR / "artifact.txt"
    if marker.is_file():
        path = Path(marker.read_text(encoding="utf-8").strip())
        if path.is_dir():
            return path
    from segml.artifact import export_artifact
    from segml.config import load_experiment
    from segml.datasets.synthetic import SynthSpec, write_synthetic
    from segml.ingest import run_ingest
    from segml.pipeline import run_pipeline, stages_between

    shutil.rmtree(SMOKE_DIR, ignore_errors=True)
    (SMOKE_DIR / "experiments").mkdir(parents=True)
    shutil.copy(ROOT / "experiments" / "smoke.yaml", SMOKE_DIR / "experiments" / "smoke.yaml")
    (SMOKE_DIR / "pyproject.toml").write_text("[project]\nname = 'scratch'\n", encoding="utf-8")
    write_synthetic(SynthSpec(n_customers=800, seed=11), SMOKE_DIR / "data" / "raw" / "smoke")
    cfg = load_experiment(SMOKE_DIR / "experiments" / "smoke.yaml", [], root=SMOKE_DIR)
    run_ingest(cfg)
    run_pipeline(cfg, stages=stages_between(until="monitor"), backtest=False, progress=False, track=False)
    path = Path(export_artifact(cfg))
    marker.write_text(str(path) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------------------
# The standalone cluster


def spark_env() -> dict[str, str]:
    """Environment of every Spark process: loopback, this interpreter, segml from this checkout."""
    import pyspark

    return {
        **os.environ,
        "SPARK_HOME": str(Path(pyspark.__file__).parent),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p),
        "OMP_NUM_THREADS": str(feature_bench.THREADS),
        "PYTHONHASHSEED": "0",
    }


# --------------------------------------------------------------------------------------------------------------
# Contenders


def features_worker(engine: str, path: str, master: str) -> dict:
    """Run one features contender in this process; returns its timings."""
    from segml.config import FeatureConfig, SparkSettings
    from segml.features import build_features, spark_session

    spec = FeatureConfig(threads=feature_bench.THREADS, memory_limit=feature_bench.MEMORY_LIMIT)
    if engine == "duckdb":
        started = time.perf_counter()
        frame = build_features(path, feature_bench.AS_OF, spec)
        return {"seconds": time.perf_counter() - started, "customers": len(frame), "columns": frame.shape[1]}
    conf = dict(SPARK_CONF)
    if master.startswith("spark://"):
        conf.update(CLUSTER_CONF)
    settings = SparkSettings(master=master, app_name="segml-bench", conf=conf)
    started = time.perf_counter()
    session = spark_session(settings)
    session_seconds = time.perf_counter() - started
    try:
        started = time.perf_counter()
        frame = build_features(path, feature_bench.AS_OF, spec, engine="spark", spark=settings)
        query_seconds = time.perf_counter() - started
    finally:
        session.stop()
    return {
        "seconds": session_seconds + query_seconds,
        "session_seconds": session_seconds,
        "query_seconds": query_seconds,
        "customers": len(frame),
        "columns": frame.shape[1],
    }


def peak_rss_mb() -> float:
    return feature_bench.peak_rss_mb()


def _tree_rss(pid: int) -> float:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20


def run_child(command: list[str], timeout: float, cluster_pid: int | None, cwd: Path | None = None) -> dict:
    """Run ``command`` with ``nice -n 10`` (in ``cwd``); wall time, sampled peak tree RSS, last stdout line."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            ["nice", "-n", "10", *command], stdout=out, stderr=err, env=spark_env(), text=True, cwd=cwd
        )
        peak = cluster_peak = 0.0
        while proc.poll() is None:
            peak = max(peak, _tree_rss(proc.pid))
            if cluster_pid is not None:
                cluster_peak = max(cluster_peak, _tree_rss(cluster_pid) - _daemon_rss(cluster_pid))
            if time.perf_counter() - started > timeout:
                import psutil

                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
                proc.kill()
                proc.wait()
                return {"error": f"timed out after {timeout:.0f}s"}
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    result: dict = {"process_seconds": elapsed, "peak_tree_rss_mb": peak}
    if cluster_pid is not None:
        result["cluster_peak_rss_mb"] = cluster_peak
    if proc.returncode != 0:
        lines = [line for line in (stderr + stdout).splitlines() if line.strip()]
        result["error"] = f"exit code {proc.returncode}: {lines[-1] if lines else ''}"[:500]
    result["stdout"] = stdout
    return result


def _daemon_rss(pid: int) -> float:
    """RSS of the worker daemon alone (its executors are its children)."""
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return 0.0


def measure_features(engine: str, path: Path, master: str, timeout: float, cluster_pid: int | None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", engine, "--data", str(path)]
    command += ["--master", master]
    result = run_child(command, timeout, cluster_pid)
    stdout = result.pop("stdout")
    if "error" not in result:
        result.update(json.loads(stdout.strip().splitlines()[-1]))
    return result


def measure_grading(
    engine: str, artifact: Path, raw: Path, out: Path, master: str, timeout: float, cluster_pid: int | None
) -> dict:
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    command = [sys.executable, "-m", "segml.cli", "grade", str(artifact), "--transactions", str(raw)]
    command += ["--out", str(out), "--as-of", feature_bench.AS_OF.isoformat()]
    if engine != "duckdb":
        command += ["--engine", "spark", "--master", master]
        conf = dict(SPARK_CONF)
        if master.startswith("spark://"):
            conf.update(CLUSTER_CONF)
        for key, value in conf.items():
            command += ["--spark-conf", f"{key}={value}"]
    started = time.perf_counter()
    result = run_child(command, timeout, cluster_pid)
    result["seconds"] = time.perf_counter() - started
    result.pop("stdout")
    if "error" in result:
        result.pop("seconds")
    return result


def ingest_root(engine: str, raw: Path, work: Path) -> Path:
    """A scratch project root for one ingest contender: the smoke experiment reading ``raw``, no customers."""
    import yaml

    root = work / f"ingest_{engine}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "experiments").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'scratch'\n", encoding="utf-8")
    experiment = yaml.safe_load((ROOT / "experiments" / "smoke.yaml").read_text(encoding="utf-8"))
    experiment["data"].pop("customers", None)
    experiment["data"]["transactions"][0]["path"] = str(raw)
    (root / "experiments" / "smoke.yaml").write_text(yaml.safe_dump(experiment), encoding="utf-8")
    return root


def measure_ingest(
    engine: str, raw: Path, work: Path, master: str, timeout: float, cluster_pid: int | None
) -> tuple[dict, Path]:
    """One ``segml ingest`` run; returns its timings and the folder of its outputs."""
    root = ingest_root(engine, raw, work)
    command = [sys.executable, "-m", "segml.cli", "ingest", "experiments/smoke.yaml"]
    if engine == "duckdb":
        command += ["--set", "engine=duckdb", "--set", f"features.threads={feature_bench.THREADS}"]
        command += ["--set", f"features.memory_limit={feature_bench.MEMORY_LIMIT}"]
    else:
        conf = dict(SPARK_CONF)
        if master.startswith("spark://"):
            conf.update(CLUSTER_CONF)
        # one flow mapping: a dotted --set key would split the conf keys' own dots
        command += ["--set", "engine=spark", "--set", f"spark.master={master}"]
        command += ["--set", f"spark.conf={json.dumps(conf)}"]
    started = time.perf_counter()
    result = run_child(command, timeout, cluster_pid, cwd=root)
    result["seconds"] = time.perf_counter() - started
    result.pop("stdout")
    if "error" in result:
        result.pop("seconds")
    return result, root / "data" / "interim" / "smoke"


def read_ingest(interim: Path) -> dict:
    """What the ingest comparison looks at: the DQ report's counts and the clean transactions."""
    import pandas as pd

    report = json.loads((interim / "dq_report.json").read_text(encoding="utf-8"))
    return {
        "report": {key: report.get(key) for key in ("rows_in", "rows_kept", "by_reason")},
        "transactions": pd.read_parquet(interim / "transactions.parquet"),
    }


def same_ingest(left: dict, right: dict) -> bool:
    import pandas as pd

    if left["report"] != right["report"]:
        return False
    try:
        pd.testing.assert_frame_equal(left["transactions"], right["transactions"])
    except AssertionError:
        return False
    return True


def read_grades(out: Path):
    import pandas as pd

    frame = pd.read_parquet(out, columns=["customer_id", "grade"])
    frame["grade"] = frame["grade"].astype(str)
    return frame.sort_values("customer_id").reset_index(drop=True)


# --------------------------------------------------------------------------------------------------------------
# Runs


def summarise(runs: list[dict]) -> dict:
    ok = [run for run in runs if "error" not in run]
    entry: dict = {"runs": runs}
    if len(ok) < len(runs):
        entry["error"] = "; ".join(sorted({run["error"] for run in runs if "error" in run}))
    if ok:
        entry["seconds"] = statistics.median(run["seconds"] for run in ok)
        entry["n_ok"] = len(ok)
        for key in (
            "session_seconds",
            "query_seconds",
            "peak_rss_mb",
            "peak_tree_rss_mb",
            "cluster_peak_rss_mb",
        ):
            values = [run[key] for run in ok if key in run]
            if values:
                entry[key] = statistics.median(values) if key.endswith("seconds") else max(values)
        for key in ("customers", "columns"):
            if key in ok[-1]:
                entry[key] = ok[-1][key]
    return entry


def run_size(rows: int, args, cluster: Any, artifact: Path, work: Path) -> dict:
    path, n_rows, n_customers = feature_bench.write_size(rows)
    raw = raw_grading_input(path, rows) if {"grading", "ingest"} & set(args.tasks) else path
    entry: dict = {
        "requested_rows": rows,
        "rows": n_rows,
        "customers": n_customers,
        "file_mb": path.stat().st_size / 2**20,
        "date": dt.date.today().isoformat(),
        "repeats": args.repeats,
        "command": "python benchmarks/engines.py " + " ".join(sys.argv[1:]),
    }
    masters = {"duckdb": "", "spark_local": LOCAL_MASTER, "spark_standalone": cluster.master}
    runs: dict = {(task, engine): [] for task in args.tasks for engine in args.engines}
    grades: dict = {}
    ingested: dict = {}
    order = [(task, engine) for task in args.tasks for engine in args.engines]
    for repeat in range(args.repeats):
        shift = repeat % len(args.engines)
        for task in args.tasks:
            engines = list(args.engines[shift:]) + list(args.engines[:shift])
            for engine in engines:
                cluster_pid = cluster.worker_pid if engine == "spark_standalone" else None
                print(f"{n_rows:>11,} rows  {task:<8} {engine:<16} run {repeat + 1}", end=" ", flush=True)
                if task == "features":
                    result = measure_features(engine, path, masters[engine], args.timeout, cluster_pid)
                elif task == "ingest":
                    result, interim = measure_ingest(
                        engine, raw, work, masters[engine], args.timeout, cluster_pid
                    )
                    if "error" not in result:
                        ingested[engine] = read_ingest(interim)
                        result.update(ingested[engine]["report"])
                else:
                    suffix = ".parquet" if engine == "duckdb" else ""
                    out = work / f"grades_{engine}_{rows}{suffix}"
                    result = measure_grading(
                        engine, artifact, raw, out, masters[engine], args.timeout, cluster_pid
                    )
                    if "error" not in result:
                        grades[engine] = read_grades(out)
                        result["grade_counts"] = grades[engine]["grade"].value_counts().sort_index().to_dict()
                runs[(task, engine)].append(result)
                shown = result.get("seconds")
                print(f"{shown:.2f}s" if shown is not None else result.get("error"), flush=True)
    for task, engine in order:
        entry.setdefault(task, {})[engine] = summarise(runs[(task, engine)])
    for task in args.tasks:
        base = entry[task].get("duckdb", {}).get("seconds")
        for engine in args.engines:
            seconds = entry[task][engine].get("seconds")
            if base and seconds is not None:
                entry[task][engine]["ratio_to_duckdb"] = seconds / base
    if "grading" in args.tasks:
        for engine in args.engines:
            last = [r for r in runs[("grading", engine)] if "grade_counts" in r]
            if last:
                entry["grading"][engine]["grade_counts"] = last[-1]["grade_counts"]
        if "duckdb" in grades:
            base = grades["duckdb"]
            entry["grading"]["same_as_duckdb"] = {
                engine: bool(
                    len(frame) == len(base)
                    and frame["customer_id"].tolist() == base["customer_id"].tolist()
                    and frame["grade"].tolist() == base["grade"].tolist()
                )
                for engine, frame in grades.items()
                if engine != "duckdb"
            }
    if "ingest" in args.tasks:
        for engine in args.engines:
            last = [r for r in runs[("ingest", engine)] if "rows_kept" in r]
            if last:
                entry["ingest"][engine].update(
                    {k: last[-1][k] for k in ("rows_in", "rows_kept", "by_reason")}
                )
        if "duckdb" in ingested:
            same = {
                engine: same_ingest(ingested["duckdb"], out)
                for engine, out in ingested.items()
                if engine != "duckdb"
            }
            entry["ingest"]["same_as_duckdb"] = same
            entry["ingest"]["outputs_identical"] = len(ingested) == len(args.engines) and all(same.values())
        else:
            entry["ingest"]["outputs_identical"] = False
    return entry


# --------------------------------------------------------------------------------------------------------------
# Report


def machine_info() -> dict:
    import duckdb
    import pyspark

    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "duckdb": duckdb.__version__,
        "pyspark": pyspark.__version__,
        "note": "shared machine (other jobs were running); children run with nice -n 10, contenders alternated",
    }


def _cell(entry: dict, key: str, fmt: str) -> str:
    value = entry.get(key)
    if isinstance(value, int | float):
        return format(value, fmt)
    return "failed" if "error" in entry else "–"


def markdown_table(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"Run {results['date']} on {machine['cores']} cores (shared machine, `nice -n 10`), python "
        f"{machine['python']}, DuckDB {machine['duckdb']}, pyspark {machine['pyspark']}. Median of the "
        f"alternated runs (column runs), each in a fresh process. DuckDB: threads={feature_bench.THREADS}, "
        f"memory_limit={feature_bench.MEMORY_LIMIT}. Spark: `{LOCAL_MASTER}`, and a standalone master + one worker "
        f"({WORKER_CORES} cores, {WORKER_MEMORY}) on 127.0.0.1; driver memory {SPARK_CONF['spark.driver.memory']}, "
        f"executor memory {CLUSTER_CONF['spark.executor.memory']}. Features: `build_features` fetched to pandas "
        "(Spark: session start-up + query). Grading: `segml grade` CLI with the smoke artifact, reasons included. "
        "Ingest: `segml ingest` CLI (smoke mapping, no customers file) on the same raw Parquet; the last column "
        "gives its kept rows and whether its DQ counts and clean transactions equal DuckDB's. "
        "MB: peak RSS of the contender's process tree (driver JVM included; the cluster's executor in brackets).",
        "",
        "| rows | customers | task | engine | runs | seconds | session s | query s | × DuckDB | peak MB | grades / outputs |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for size in results["sizes"]:
        for task in (task for task in TASKS if task in size):
            for engine in (engine for engine in ENGINES if engine in size[task]):
                entry = size[task][engine]
                ratio = entry.get("ratio_to_duckdb")
                mem = _cell(entry, "peak_tree_rss_mb", ".0f")
                if "cluster_peak_rss_mb" in entry:
                    mem += f" (+{entry['cluster_peak_rss_mb']:.0f})"
                grades = "–"
                if task == "grading" and "grade_counts" in entry:
                    grades = " ".join(f"{k}:{v:,}" for k, v in entry["grade_counts"].items())
                    same = size["grading"].get("same_as_duckdb", {}).get(engine)
                    if same is not None:
                        grades += " (same grades as DuckDB)" if same else " (**differs from DuckDB**)"
                if task == "ingest" and "rows_kept" in entry:
                    grades = f"kept {entry['rows_kept']:,} of {entry['rows_in']:,}"
                    same = size["ingest"].get("same_as_duckdb", {}).get(engine)
                    if same is not None:
                        grades += " (same outputs as DuckDB)" if same else " (**differs from DuckDB**)"
                if "error" in entry:
                    grades = f"error: {entry['error'][:120]}"
                lines.append(
                    f"| {size['rows']:,} | {size['customers']:,} | {task} | {engine} | "
                    f"{entry.get('n_ok', 0)}/{len(entry.get('runs', []))} | "
                    f"{_cell(entry, 'seconds', '.2f')} | {_cell(entry, 'session_seconds', '.2f')} | "
                    f"{_cell(entry, 'query_seconds', '.2f')} | "
                    f"{'–' if ratio is None else format(ratio, '.2f')} | {mem} | {grades} |"
                )
    commands = sorted(
        {
            f"`{size.get('command', results.get('command'))}` ({size.get('date', results.get('date'))})"
            for size in results["sizes"]
        }
        | {
            f"`{size[task]['command']}` ({size[task].get('date', size.get('date', results.get('date')))})"
            for size in results["sizes"]
            for task in TASKS
            if task in size and size[task].get("command")
        }
    )
    lines += ["", "Commands: " + ", ".join(commands) + "."]
    return "\n".join(lines)


def _same_size(old: dict, entry: dict) -> bool:
    """Whether an earlier size entry is the size of ``entry`` (older entries have no ``requested_rows``)."""
    if "requested_rows" in old:
        return old["requested_rows"] == entry["requested_rows"]
    return old["rows"] == entry["rows"]


def merge_previous(results: dict, previous: dict) -> None:
    """Keep what an earlier invocation measured and this one did not, in place.

    Sizes not run now are kept whole; a size re-run with other ``--tasks`` keeps its earlier tasks, each with
    the command, repeats and date it was measured with.
    """
    earlier = previous.get("sizes", [])
    for entry in earlier:
        for key in ("command", "repeats", "date"):
            entry.setdefault(key, previous.get(key))
    for entry in results["sizes"]:
        for old in earlier:
            if _same_size(old, entry):
                for task in TASKS:
                    if task not in entry and task in old:
                        entry[task] = {
                            **old[task],
                            **{key: old[task].get(key, old[key]) for key in ("command", "repeats", "date")},
                        }
    results["sizes"] += [e for e in earlier if not any(_same_size(e, entry) for entry in results["sizes"])]
    results["sizes"].sort(key=lambda e: e["rows"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="row counts (default 1M 10M)")
    parser.add_argument("--quick", action="store_true", help="1M rows only")
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs per contender (median)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per contender run")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--table-only", action="store_true", help="rewrite the README table from the JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--master", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = features_worker(args.worker, args.data, args.master)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result), flush=True)
        return

    if args.table_only:
        results = json.loads(RESULTS.read_text(encoding="utf-8"))
        update_readme_block(BEGIN_MARK, END_MARK, markdown_table(results), heading=HEADING)
        return

    sizes = [1_000_000] if args.quick else (args.sizes or list(DEFAULT_SIZES))
    feature_bench.generate_full_data()
    artifact = smoke_artifact() if "grading" in args.tasks else Path()
    results: dict = {
        "date": dt.date.today().isoformat(),
        "as_of": feature_bench.AS_OF.isoformat(),
        "command": "python benchmarks/engines.py " + " ".join(sys.argv[1:]),
        "repeats": args.repeats,
        "tasks": list(args.tasks),
        "engines": list(args.engines),
        "duckdb_threads": feature_bench.THREADS,
        "duckdb_memory_limit": feature_bench.MEMORY_LIMIT,
        "spark": {
            "local_master": LOCAL_MASTER,
            "conf": SPARK_CONF,
            "cluster_conf": CLUSTER_CONF,
            "worker_cores": WORKER_CORES,
            "worker_memory": WORKER_MEMORY,
        },
        "artifact": "smoke experiment (800 synthetic customers, seed 11), exported after segml train",
        "machine": machine_info(),
        "data": (
            f"segml.datasets.synthetic, {feature_bench.N_CUSTOMERS:,} customers in chunks of "
            f"{feature_bench.CHUNK_CUSTOMERS:,}, seed {feature_bench.SEED} (benchmarks/features.py)"
        ),
        "sizes": [],
    }
    with tempfile.TemporaryDirectory(prefix="segml-engines-") as tmp:
        work = Path(tmp)
        from segml.spark_cluster import StandaloneCluster

        cluster = StandaloneCluster(work, cores=WORKER_CORES, memory=WORKER_MEMORY, env=spark_env())
        try:
            if "spark_standalone" in args.engines:
                print(f"cluster: {cluster.start()}", flush=True)
            for rows in sorted(sizes):
                results["sizes"].append(run_size(rows, args, cluster, artifact, work))
        finally:
            cluster.stop()
    if RESULTS.is_file():
        merge_previous(results, json.loads(RESULTS.read_text(encoding="utf-8")))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    update_readme_block(BEGIN_MARK, END_MARK, markdown_table(results), heading=HEADING)
    print(f"wrote {RESULTS} and the engines block of benchmarks/README.md")


if __name__ == "__main__":
    main()
