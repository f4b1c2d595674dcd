"""A real Spark standalone cluster and MLflow tracking server on 127.0.0.1, for development.

``python -m segmentation.devcluster up|down|status`` (``make cluster-up`` / ``cluster-down``)
starts, with the Spark distribution inside the installed pyspark:

* a standalone master and two workers (``spark-class ...deploy.master.Master`` / ``Worker``),
* a history server, so finished applications keep their REST API (executors, tasks),
* an MLflow tracking server (SQLite backend, artifacts served by the server).

PID files, logs, event logs, worker directories and the MLflow store live under ``.cluster/``
(git-ignored). ``up`` twice is harmless; ``down`` stops exactly the processes ``up`` recorded,
each with its whole process group (a worker's executors included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Ports:
    """Loopback ports of the cluster; override with SEG_* environment variables or flags."""

    master: int = 7177
    master_ui: int = 8180
    worker_uis: tuple[int, ...] = (8181, 8182)
    history: int = 18180
    mlflow: int = 5001

    @classmethod
    def from_env(cls) -> Ports:
        env = os.environ
        return cls(
            master=int(env.get("SEG_MASTER_PORT", cls.master)),
            master_ui=int(env.get("SEG_MASTER_UI_PORT", cls.master_ui)),
            worker_uis=tuple(
                int(p) for p in env.get("SEG_WORKER_UI_PORTS", "8181,8182").split(",")
            ),
            history=int(env.get("SEG_HISTORY_PORT", cls.history)),
            mlflow=int(env.get("SEG_MLFLOW_PORT", cls.mlflow)),
        )


@dataclass(frozen=True)
class DevCluster:
    """Where a dev cluster keeps its state, and how to reach it."""

    root: Path = Path(".cluster")
    ports: Ports = field(default_factory=Ports)
    worker_cores: int = 1
    worker_memory: str = "2g"

    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.ports.master}"

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.ports.mlflow}"

    @property
    def event_log_dir(self) -> Path:
        return (self.root / "events").resolve()

    def master_json(self) -> dict:  # type: ignore[type-arg]
        return dict(_get_json(f"http://{HOST}:{self.ports.master_ui}/json/"))  # type: ignore[arg-type]

    def worker_json(self, index: int) -> dict:  # type: ignore[type-arg]
        return dict(_get_json(f"http://{HOST}:{self.ports.worker_uis[index]}/json/"))  # type: ignore[arg-type]

    def history_api(self, path: str) -> list | dict:
        return _get_json(f"http://{HOST}:{self.ports.history}/api/v1/{path.lstrip('/')}")

    def submit_conf(self) -> dict[str, str]:
        """spark-submit settings for this cluster.

        Applications log events for the history server. Executors' Python workers run an
        interpreter without this project (:func:`executor_python`): pyspark comes from Spark's
        own zip, the library only from ``--py-files``, which is what proves the shipping works;
        numpy, pandas, pyarrow and scipy (the value scoring's Arrow UDF) are there, as on any
        PySpark cluster.
        The driver keeps this virtual environment's interpreter. The Delta jars are resolved
        on the driver (``spark.jars.packages``, from the Ivy cache ``make setup`` filled) and
        shipped to the executors, which write the tables' files.
        """
        from segmentation.runtime.session import PROVIDED_BY_SPARK, delta_coordinates

        return {
            "spark.jars.packages": delta_coordinates(),
            "spark.jars.excludes": ",".join(PROVIDED_BY_SPARK),
            "spark.eventLog.enabled": "true",
            "spark.eventLog.dir": self.event_log_dir.as_uri(),
            "spark.driver.host": HOST,
            "spark.driver.bindAddress": HOST,
            "spark.executor.memory": "1g",
            "spark.pyspark.python": str(executor_python(self.root)),
            "spark.pyspark.driver.python": sys.executable,
        }

    # --- processes ------------------------------------------------------------------------

    def services(self) -> dict[str, list[str]]:
        spark_class = str(spark_home() / "bin" / "spark-class")
        p = self.ports
        out: dict[str, list[str]] = {
            "master": [
                spark_class, "org.apache.spark.deploy.master.Master",
                "--host", HOST, "--port", str(p.master), "--webui-port", str(p.master_ui),
            ],
        }  # fmt: skip
        for i, ui in enumerate(p.worker_uis):
            out[f"worker-{i + 1}"] = [
                spark_class, "org.apache.spark.deploy.worker.Worker", self.master_url,
                "--host", HOST, "--cores", str(self.worker_cores),
                "--memory", self.worker_memory, "--webui-port", str(ui),
                "--work-dir", str((self.root / f"work-{i + 1}").resolve()),
            ]  # fmt: skip
        out["history"] = [spark_class, "org.apache.spark.deploy.history.HistoryServer"]
        out["mlflow"] = [
            str(Path(sys.executable).with_name("mlflow")), "server",
            "--host", HOST, "--port", str(p.mlflow), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{(self.root / 'mlflow.db').resolve()}",
            "--artifacts-destination", str((self.root / "mlartifacts").resolve()),
            "--serve-artifacts",
        ]  # fmt: skip
        return out

    def _env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env["SPARK_HOME"] = str(spark_home())
        env["SPARK_LOCAL_IP"] = HOST
        env.setdefault("SPARK_LOG_DIR", str((self.root / "logs").resolve()))
        if name == "history":
            env["SPARK_HISTORY_OPTS"] = (
                f"-Dspark.history.fs.logDirectory={self.event_log_dir.as_uri()} "
                f"-Dspark.history.ui.port={self.ports.history} "
                "-Dspark.history.fs.update.interval=1s"
            )
        return env

    def pid_file(self, name: str) -> Path:
        return self.root / "pids" / f"{name}.pid"

    def running(self) -> dict[str, int]:
        """Services whose recorded process is alive, with their pids."""
        alive = {}
        for name in self.services():
            pid = _read_pid(self.pid_file(name))
            if pid is not None and _alive(pid):
                alive[name] = pid
        return alive

    def up(self, *, timeout: float = 120.0) -> None:
        """Start what is not running yet and wait until the cluster is usable."""
        for sub in ("pids", "logs", "events", "mlartifacts"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        executor_python(self.root)
        running = self.running()
        for name, argv in self.services().items():
            if name in running:
                continue
            _check_port_free(name, argv, self)
            with open(self.root / "logs" / f"{name}.log", "ab") as log:
                proc = subprocess.Popen(
                    argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self._env(name),
                    start_new_session=True,
                )
            self.pid_file(name).write_text(str(proc.pid))
        self.wait_ready(timeout=timeout)

    def wait_ready(self, *, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        problems: list[str] = []
        while time.monotonic() < deadline:
            problems = self._not_ready()
            if not problems:
                return
            time.sleep(1.0)
        raise RuntimeError(f"dev cluster not ready after {timeout:.0f}s: {'; '.join(problems)}")

    def _not_ready(self) -> list[str]:
        problems = []
        try:
            workers = [w for w in self.master_json().get("workers", []) if w["state"] == "ALIVE"]
            if len(workers) < len(self.ports.worker_uis):
                problems.append(f"{len(workers)} worker(s) alive")
        except (OSError, ValueError) as exc:
            # ValueError: the status page answered before it was ready (not JSON yet).
            problems.append(f"master: {exc}")
        for name, url in (
            ("history", f"http://{HOST}:{self.ports.history}/api/v1/applications"),
            ("mlflow", f"{self.tracking_uri}/health"),
        ):
            try:
                with urllib.request.urlopen(url, timeout=2):
                    pass
            except OSError as exc:
                problems.append(f"{name}: {exc}")
        return problems

    def stop(self, name: str, *, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Stop one service and its whole process group."""
        pid = _read_pid(self.pid_file(name))
        if pid is None:
            return
        _kill_group(pid, sig, timeout)
        self.pid_file(name).unlink(missing_ok=True)

    def down(self) -> None:
        """Stop exactly what ``up`` started (workers first), and remove their pid files."""
        order = [n for n in self.services() if n.startswith("worker")]
        order += ["history", "master", "mlflow"]
        for name in order:
            self.stop(name)


def spark_home() -> Path:
    """The Spark distribution inside the installed pyspark package."""
    return Path(pyspark.__file__).resolve().parent


def executor_python(root: Path) -> Path:
    """The executors' interpreter: a virtual environment under ``root`` that sees this
    environment's site-packages (numpy, pandas, pyarrow, scipy) as a plain path, so the
    editable install of this project, which only a processed ``.pth`` file makes importable,
    is not: the library reaches the executors only through ``--py-files``. Created once."""
    venv = (root / "executor-python").resolve()
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([_base_python(), "-m", "venv", "--without-pip", str(venv)], check=True)
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        ours = next(p for p in sys.path if p.endswith("site-packages"))
        (venv / "lib" / version / "site-packages" / "driver-packages.pth").write_text(ours + "\n")
    return python


def _base_python() -> str:
    """A Python of the driver's version outside this virtual environment."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix) / "bin" / f"python{version}"
    return str(base) if base.exists() else shutil.which("python3") or sys.executable


def _get_json(url: str) -> dict | list:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read().decode())  # type: ignore[no-any-return]


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _kill_group(pid: int, sig: int, timeout: float) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().split(")")[-1].split()
        except OSError:
            continue
        # fields[0] is the state, fields[2] the process group id.
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (for tests that check nothing is left behind)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().split(")")[-1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def _check_port_free(name: str, argv: Sequence[str], cluster: DevCluster) -> None:
    ports = {
        "master": [cluster.ports.master, cluster.ports.master_ui],
        "history": [cluster.ports.history],
        "mlflow": [cluster.ports.mlflow],
    }.get(name, [])
    if name.startswith("worker"):
        ports = [cluster.ports.worker_uis[int(name.split("-")[1]) - 1]]
    for port in ports:
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                raise RuntimeError(
                    f"cannot start {name}: port {port} on {HOST} is already in use "
                    "(set SEG_*_PORT variables to other ports)"
                )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local Spark standalone cluster + MLflow server")
    parser.add_argument("command", choices=["up", "down", "status", "submit-conf", "spark-home"])
    parser.add_argument("--root", default=".cluster", help="state directory (default .cluster)")
    args = parser.parse_args(argv)
    cluster = DevCluster(root=Path(args.root), ports=Ports.from_env())
    if args.command == "up":
        cluster.up()
        print(f"Spark master  {cluster.master_url}  (UI http://{HOST}:{cluster.ports.master_ui})")
        print(f"History       http://{HOST}:{cluster.ports.history}")
        print(f"MLflow        {cluster.tracking_uri}")
    elif args.command == "down":
        cluster.down()
        print("dev cluster stopped")
    elif args.command == "spark-home":
        print(spark_home())
    elif args.command == "submit-conf":
        print(" ".join(f"--conf {k}={v}" for k, v in cluster.submit_conf().items()))
    else:
        running = cluster.running()
        for name in cluster.services():
            state = f"running pid {running[name]}" if name in running else "stopped"
            print(f"{name:<10} {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
