"""A Spark standalone cluster on loopback: one master and one worker started with ``spark-class``.

The pip wheel of pyspark has no ``start-master.sh``; this starts ``org.apache.spark.deploy.master.Master`` and
``…worker.Worker`` as child processes bound to 127.0.0.1, waits until the worker has registered, and stops both
by PID. Used by the cluster parity tests and ``benchmarks/engines.py``; a real deployment has its own cluster.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["StandaloneCluster"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as response:
            state = json.load(response)
    except OSError:
        return 0
    return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")


class StandaloneCluster:
    """``with StandaloneCluster(logs, cores=1, memory="1g", env=...) as master:`` → ``spark://127.0.0.1:P``.

    ``env`` is the environment of both processes (default: this one with ``SPARK_HOME`` of the installed
    pyspark and ``SPARK_LOCAL_IP=127.0.0.1``); their logs go to ``logs/master.log`` and ``logs/worker.log``.
    """

    def __init__(
        self, logs: Path, *, cores: int = 1, memory: str = "1g", env: dict[str, str] | None = None
    ) -> None:
        import pyspark

        self.logs = Path(logs)
        self.cores = cores
        self.memory = memory
        spark_home = str(Path(pyspark.__file__).parent)
        self.env = {"SPARK_HOME": spark_home, "SPARK_LOCAL_IP": "127.0.0.1", **(env or os.environ)}
        self.processes: list[subprocess.Popen] = []
        self.master = ""

    def _spawn(self, command: list[str], log_name: str) -> None:
        with (self.logs / log_name).open("wb") as log:
            self.processes.append(
                subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
            )

    def _logs(self) -> str:
        return "".join(
            (self.logs / name).read_text(errors="replace")
            for name in ("master.log", "worker.log")
            if (self.logs / name).is_file()
        )

    def start(self, timeout: float = 120.0) -> str:
        """Start both processes and wait for the worker; RuntimeError (with the logs) when it does not come."""
        self.logs.mkdir(parents=True, exist_ok=True)
        spark_class = str(Path(self.env["SPARK_HOME"]) / "bin" / "spark-class")
        port, ui_port, worker_ui = _free_port(), _free_port(), _free_port()
        self._spawn(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port)]
            + ["--webui-port", str(ui_port)],
            "master.log",
        )
        self._spawn(
            [spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}"]
            + ["--host", "127.0.0.1", "--cores", str(self.cores), "--memory", self.memory]
            + ["--webui-port", str(worker_ui), "--work-dir", str(self.logs / "work")],
            "worker.log",
        )
        deadline = time.monotonic() + timeout
        while _alive_workers(ui_port) < 1:
            if any(p.poll() is not None for p in self.processes):
                self.stop()
                raise RuntimeError(f"the Spark master or worker exited:\n{self._logs()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the worker did not register with the master in {timeout:.0f} s")
            time.sleep(1)
        self.master = f"spark://127.0.0.1:{port}"
        return self.master

    @property
    def worker_pid(self) -> int | None:
        return self.processes[1].pid if len(self.processes) > 1 else None

    def stop(self) -> None:
        """End both processes (terminate, then kill after 30 s)."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=30)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
