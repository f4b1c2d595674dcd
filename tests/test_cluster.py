"""The spark-submit path on a real standalone cluster and MLflow tracking server (loopback).

Brings up a master, two workers, a history server and `mlflow server` with the product's own
`tools.devcluster`, submits `make run`'s pipeline as one application with `make`'s packaging,
checks the results through the master's, workers' and history server's JSON endpoints and
MLflow's REST API,
kills a worker during a job, and tears everything down with no process left behind.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from segmentation.config import load_config
from segmentation.workflows import generate, local_pipeline
from tests.conftest import mlflow_store
from tools.devcluster import DevCluster, Ports, group_members, spark_home

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Cluster against local mode on the same data: few bootstraps, one initialisation, k up to 4
# (equality, not stability or the choice of k, is what is compared here).
CUSTOMERS = 800
SIZE = [f"generator.customers={CUSTOMERS}", "generator.events=24000", "training.k_max=4",
        "training.n_init=1", "spark.shuffle_partitions=2", "attitudes.enabled=false",
        "training.selection_bootstrap_samples=3", "validation.bootstrap_samples=3",
        "audiences.definitions=[]", "validation.enabled=false", "b2b.enabled=false"]  # fmt: skip


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    p = free_ports(6)
    dev = DevCluster(
        root=tmp_path_factory.mktemp("cluster"),
        ports=Ports(master=p[0], master_ui=p[1], worker_uis=(p[2], p[3]), history=p[4],
                    mlflow=p[5]),
    )  # fmt: skip
    dev.up(timeout=180)
    pids = dev.running()
    assert set(pids) == {"master", "worker-1", "worker-2", "history", "mlflow"}
    dev.up(timeout=60)  # starting twice is harmless: nothing new is started
    assert dev.running() == pids
    yield dev
    dev.down()
    assert dev.running() == {}
    leftovers = {name: group_members(pid) for name, pid in pids.items()}
    assert all(not members for members in leftovers.values()), leftovers


@pytest.fixture(scope="module")
def package():
    subprocess.run(["make", "package"], cwd=ROOT, check=True, capture_output=True, timeout=300)
    zip_path = ROOT / "dist" / "segmentation.zip"
    assert zip_path.is_file()
    return zip_path


def submit(dev: DevCluster, zip_path: Path, job: str, overrides: list[str], *extra: str,
           wait: bool = True, log: Path | None = None):  # fmt: skip
    """spark-submit ``job``; ``wait=False`` returns the running process (its output piped, or
    in the file ``log`` when the caller does other work before reading it)."""
    conf = [x for k, v in dev.submit_conf().items() for x in ("--conf", f"{k}={v}")]
    argv = [
        str(Path(sys.executable).with_name("spark-submit")),
        "--master", dev.master_url, "--py-files", str(zip_path), *conf,
        str(ROOT / "jobs" / f"{job}.py"), *extra, "--config", str(ROOT / "conf" / "cluster.yaml"),
        *[x for o in overrides for x in ("--set", o)],
    ]  # fmt: skip
    env = {**os.environ, "SPARK_HOME": str(spark_home())}
    if not wait:
        if log is None:
            return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
        with log.open("w") as out:  # the child keeps its own descriptor
            return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def commit_infos(table: Path) -> dict[int, dict]:
    """Each commit's commitInfo, read from the table's log files (no Delta library)."""
    out = {}
    for f in sorted((table / "_delta_log").glob("*.json")):
        for line in f.read_text().splitlines():
            if '"commitInfo"' in line:
                out[int(f.stem)] = json.loads(line)["commitInfo"]
    return out


def mlflow_get(dev: DevCluster, endpoint: str, **params: str) -> dict:
    url = f"{dev.tracking_uri}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def app_id(dev: DevCluster, job: str) -> str:
    apps = dev.master_json()["completedapps"] + dev.master_json()["activeapps"]
    ids = [a["id"] for a in apps if a["name"] == f"customer-segmentation-{job}"]
    assert ids, apps
    return sorted(ids)[-1]


def tasks_per_worker(dev: DevCluster, app: str) -> list[int]:
    """Tasks run by each worker's executors for ``app``, from the history server's JSON alone
    (a killed worker answers nothing): an executor's log links name its worker's UI port."""
    deadline = time.monotonic() + 60
    while True:
        try:
            executors = dev.history_api(f"applications/{app}/allexecutors")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    per_worker = [0, 0]
    for e in executors:
        if e["id"] == "driver":
            continue
        port = urllib.parse.urlsplit(e["executorLogs"]["stdout"]).port
        per_worker[dev.ports.worker_uis.index(port)] += e["totalTasks"]
    return per_worker


def kill_worker_when(dev: DevCluster, ready: Callable[[], bool], done: threading.Event,
                     killed: list[str]) -> None:  # fmt: skip
    """SIGKILL worker 2 (and with its process group its executor) once the application has an
    executor on both workers and ``ready()`` holds; gives up when ``done`` is set."""
    while not done.is_set():
        try:
            both = all(dev.worker_json(i)["executors"] for i in range(2))
        except OSError:
            both = False
        if both and ready():
            dev.stop("worker-2", sig=signal.SIGKILL)
            killed.append("worker-2")
            return
        time.sleep(0.5)


def test_unreachable_master_fails_before_any_write(tmp_path):
    (port,) = free_ports(1)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "generate_events.py"),
         "--config", str(ROOT / "conf" / "cluster.yaml"),
         "--set", f"spark.master=spark://127.0.0.1:{port}",
         "--set", f"storage.warehouse={tmp_path / 'wh'}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"Spark master spark://127.0.0.1:{port} is not reachable" in proc.stderr
    assert not (tmp_path / "wh").exists()


def test_tracking_server_down_fails_before_any_write(tmp_path):
    (port,) = free_ports(1)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "generate_events.py"),
         "--set", f"tracking.tracking_uri=http://127.0.0.1:{port}",
         "--set", f"storage.warehouse={tmp_path / 'wh'}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"MLflow tracking server http://127.0.0.1:{port} (tracking.tracking_uri)" in proc.stderr
    assert "not reachable" in proc.stderr
    assert not (tmp_path / "wh").exists()


def test_executors_import_the_library_shipped_with_py_files(cluster, package):
    proc = submit(
        cluster, package, "check_cluster", [f"tracking.tracking_uri={cluster.tracking_uri}"]
    )
    origins = json.loads(proc.stdout.strip().splitlines()[-1])
    assert origins
    for origin in origins:
        assert "segmentation.zip/segmentation/__init__.py" in origin["module_file"]
        # The executors' interpreter cannot import the library by itself: only the zip gives it.
        alone = subprocess.run([origin["python"], "-c", "import segmentation"],
                               capture_output=True, text=True, cwd="/")  # fmt: skip
        assert alone.returncode != 0 and "No module named 'segmentation'" in alone.stderr
    assert {Path(o["executor_dir"]).parts[-3] for o in origins} <= {"work-1", "work-2"}


def test_pipeline_on_cluster_survives_a_killed_worker_and_matches_local_mode(
    spark, cluster, package, tmp_path_factory
):
    """`make run`'s one application (jobs/run_pipeline.py) submitted to the cluster: sample
    generation, features, value (an Arrow UDF on the executors), training, rules, then scoring
    a month later. Worker 2 is killed (SIGKILL, with its executor) once the features are
    written; the application finishes on worker 1, and its tables equal local mode's."""
    base = tmp_path_factory.mktemp("pipelines")
    cluster_wh, local_wh = base / "cluster-wh", base / "local-wh"
    local_cfg = load_config(
        ROOT / "conf" / "local.yaml",
        overrides=[*SIZE, f"storage.warehouse={local_wh}",
                   f"tracking.tracking_uri={mlflow_store(base / 'local-mlflow.db')}",
                   f"tracking.artifact_location={base / 'local-mlartifacts'}",
                   # Only what is compared: no RFM, no report in local mode.
                   "rfm.enabled=false", "explain.report=false"],
    )  # fmt: skip
    overrides = [*SIZE, f"storage.warehouse={cluster_wh}",
                 f"tracking.tracking_uri={cluster.tracking_uri}"]  # fmt: skip
    log = base / "submit.log"
    proc = submit(cluster, package, "run_pipeline", overrides, "--train-as-of", "2025-12-31",
                  "--score-as-of", "2026-01-31", wait=False, log=log)  # fmt: skip
    features_written = cluster_wh / "customer_features" / "_delta_log" / f"{0:020d}.json"
    done, killed = threading.Event(), []
    killer = threading.Thread(
        target=kill_worker_when, args=(cluster, features_written.exists, done, killed)
    )
    killer.start()
    # Meanwhile (the cluster's run waits on its executors more than on the cores), the same
    # sample and pipeline in local mode, in this process.
    try:
        generate.run(spark, local_cfg)
        local_pipeline.run(spark, local_cfg, train_as_of=dt.date(2025, 12, 31), echo=lambda _: None)
    finally:
        proc.wait(timeout=900)
        done.set()
        killer.join()
    assert killed == ["worker-2"], "the application ended before a worker could be killed"
    assert proc.returncode == 0, log.read_text()[-4000:]
    assert "worker-2" not in cluster.running()

    # The sample generated on the cluster is local mode's, row for row: nothing lost or
    # written twice by the killed executor's tasks.
    events = [pl.read_delta(str(wh / "events")).sort("event_id") for wh in (cluster_wh, local_wh)]
    assert events[0]["event_id"].n_unique() == events[0].height > 0
    assert events[0].equals(events[1])

    # Tasks of the application ran on both workers (workers' and history server's JSON).
    per_worker = tasks_per_worker(cluster, app_id(cluster, "run_pipeline"))
    assert all(n > 0 for n in per_worker), per_worker

    # The same membership and values as local mode.
    trained_on = dt.date(2025, 12, 31)
    cols = ["customer_id", "as_of", "segment_id", "segment_name", "distance"]
    all_models = pl.read_delta(str(cluster_wh / "segment_membership"))
    ours = pl.col("model_name") == "customer_segments"
    on_cluster = (
        all_models.filter(ours & (pl.col("as_of") == trained_on)).select(cols).sort("customer_id")
    )
    local_members = pl.read_delta(str(local_wh / "segment_membership"))
    in_local = local_members.filter(ours).select(cols).sort("customer_id")
    assert on_cluster.height == CUSTOMERS
    assert on_cluster.drop("distance").equals(in_local.drop("distance"))
    assert (on_cluster["distance"] - in_local["distance"]).abs().max() < 1e-9
    value_cols = ["customer_id", "x", "t_x", "T", "p_alive", "expected_purchases", "clv"]
    cluster_value = (
        pl.read_delta(str(cluster_wh / "customer_value"))
        .filter(pl.col("as_of") == trained_on)
        .select(value_cols)
        .sort("customer_id")
    )
    local_value = pl.read_delta(str(local_wh / "customer_value")).select(value_cols).sort(
        "customer_id")  # fmt: skip
    assert cluster_value.height == local_value.height > 0
    for column in ("p_alive", "expected_purchases", "clv"):
        assert (cluster_value[column] - local_value[column]).abs().max() < 1e-9, column

    # The run and the model version exist on the tracking server (REST over HTTP).
    alias = mlflow_get(cluster, "registered-models/alias", name="customer_segments",
                       alias="champion")["model_version"]  # fmt: skip
    run = mlflow_get(cluster, "runs/get", run_id=alias["run_id"])["run"]
    assert run["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["chosen_k"] == on_cluster["segment_id"].n_unique()
    # The scored month's membership comes from the assign step, scoring with the champion it
    # loaded from the tracking server; its run records that version.
    scored = all_models.filter(ours & (pl.col("as_of") == dt.date(2026, 1, 31)))
    assert scored.height == CUSTOMERS
    assert all_models.filter(ours)["model_version"].unique().to_list() == [int(alias["version"])]
    (assign_run_id,) = scored["run_id"].unique().to_list()
    assign_run = mlflow_get(cluster, "runs/get", run_id=assign_run_id)["run"]
    tags = {t["key"]: t["value"] for t in assign_run["data"]["tags"]}
    assert tags["job"] == "assign_segments" and tags["model_version"] == alias["version"]
    history = pl.read_delta(str(cluster_wh / "segment_membership_history"))
    current = history.filter((pl.col("model_name") == "customer_segments") & pl.col("is_current"))
    assert current.height == CUSTOMERS
    # Every table was written by the application on the cluster through delta-spark: each
    # commit's engineInfo is Spark with Delta, and its userMetadata names the step's MLflow run.
    for name in ("customer_features", "customer_value", "segment_membership",
                 "segment_membership_history"):  # fmt: skip
        commits = commit_infos(cluster_wh / name)
        assert all("Delta-Lake/" in c["engineInfo"] for c in commits.values()), name
    by_run = {
        json.loads(c["userMetadata"])["run_id"]: json.loads(c["userMetadata"])["job"]
        for c in commit_infos(cluster_wh / "segment_membership").values()
    }
    assert by_run[assign_run_id] == "assign_segments"
    # RFM beside it, from the rules steps (both dates); the training's report and pictures
    # went to the tracking server with its run.
    assert all_models.filter(pl.col("model_name") == "rfm").height == 2 * CUSTOMERS
    artifacts = mlflow_get(cluster, "artifacts/list", run_id=alias["run_id"], path="plots")
    assert {Path(f["path"]).name for f in artifacts["files"]} >= {"pca.png", "profile_heatmap.png"}
    assert (cluster_wh / "reports").is_dir()
