"""Jobs killed with signal 9 (separate processes) mid-write, against delta-spark: tables stay
readable at a consistent version (a half-written feature state is never used), re-runs repair
them, and a killed write's files are invisible until VACUUM removes them."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from segmentation.config import load_config
from segmentation.storage import delta_maintenance
from segmentation.workflows import build_features, generate
from segmentation.workflows import feature_state as fs
from tests.conftest import mlflow_store

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def overrides(base: Path, customers: int, events: int, seed: int = 42) -> list[str]:
    return [
        f"storage.warehouse={base / 'wh'}",
        f"tracking.tracking_uri={mlflow_store(base / 'mlflow.db')}",
        f"tracking.artifact_location={base / 'mla'}",
        f"generator.customers={customers}",
        f"generator.events={events}",
        f"generator.seed={seed}",
        "spark.master=local[2]",
        "spark.shuffle_partitions=2",
    ]


def start_job(job: str, sets: list[str], env: dict[str, str] | None = None):
    argv = [
        sys.executable,
        str(ROOT / "jobs" / f"{job}.py"),
        *[x for o in sets for x in ("--set", o)],
    ]
    return subprocess.Popen(
        argv, cwd=ROOT, env={**os.environ, **(env or {})}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def wait_for(condition, proc, timeout=300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        assert proc.poll() is None, f"job ended before it could be killed: {proc.stderr.read()}"
        time.sleep(0.2)
    raise AssertionError("condition not reached")


def age(path: Path, days: float) -> None:
    past = time.time() - days * 86400
    for p in [path, *path.rglob("*")]:
        os.utime(p, (past, past))


def parquet_files(table: Path) -> set[str]:
    return {str(p.relative_to(table)) for p in table.rglob("*.parquet")}


def test_kill_during_the_feature_state_update_leaves_the_snapshots_and_a_rerun_repairs(
    spark, tmp_path
):
    """A day's feature run (``features.mode: auto``) killed after the snapshots and the four
    state tables, before the state's log row: the previous day's snapshot is intact, the new
    day's snapshot and quarantine are whole, the half-written state is detected and never
    used, and a re-run of the day rebuilds it and replaces the day's snapshot."""
    sets = [*overrides(tmp_path, 300, 9000), "features.mode=auto"]
    cfg = load_config(ROOT / "conf" / "local.yaml", overrides=sets)
    generate.run(spark, cfg)
    first = build_features.run(spark, cfg)
    assert first.mode == fs.REBUILD
    features = cfg.storage.table_path("customer_features")
    rejected = cfg.storage.table_path("rejected_events")
    day = cfg.features.as_of + dt.timedelta(days=1)
    next_day = [*sets, f"features.as_of={day}"]

    marker = tmp_path / "before-log"
    fault = {"SEGMENTATION_FAULT_POINT": "feature-state-log",
             "SEGMENTATION_FAULT_MARKER": str(marker)}  # fmt: skip
    proc = start_job("build_features", next_day, fault)
    wait_for(marker.exists, proc)
    kill(proc)

    # The documented order: both snapshots, then the state's tables, then its log row.
    assert DeltaTable(rejected).version() == DeltaTable(features).version() == 1
    snapshots = pl.read_delta(features)
    assert snapshots.group_by("as_of").len().sort("as_of").rows() == [
        (cfg.features.as_of, first.customers), (day, first.customers)
    ]  # fmt: skip
    log_rows = pl.read_delta(cfg.storage.table_path("feature_state_log"))
    assert log_rows["as_of"].to_list() == [cfg.features.as_of]
    again_cfg = load_config(ROOT / "conf" / "local.yaml", overrides=next_day)
    plan = fs.plan(spark, again_cfg)
    assert plan.mode == fs.REBUILD and "half-written" in plan.reason

    # A re-run of the day rebuilds the state and replaces its snapshot: nothing duplicated.
    again = build_features.run(spark, again_cfg)
    assert again.mode == fs.REBUILD and again.version == 2
    assert pl.read_delta(features).group_by("as_of").len().sort("as_of").rows() == [
        (cfg.features.as_of, first.customers), (day, again.customers)
    ]  # fmt: skip
    assert pl.read_delta(rejected).height == sum(first.rejected.values()) + sum(
        again.rejected.values()
    )
    log_rows = pl.read_delta(cfg.storage.table_path("feature_state_log"))
    assert log_rows.sort("increment")["mode"].to_list() == [fs.REBUILD, fs.REBUILD]
    assert fs.plan(spark, again_cfg).mode == fs.INCREMENTAL  # the state is usable again


def test_kill_during_a_delta_write_leaves_the_table_readable_and_vacuum_removes_its_files(
    spark, tmp_path
):
    small = overrides(tmp_path, 300, 9000)
    cfg = load_config(ROOT / "conf" / "local.yaml", overrides=small)
    generate.run(spark, cfg)
    events = Path(cfg.storage.table_path("events"))
    rows_before = pl.read_delta(str(events)).height
    committed = parquet_files(events)

    big = overrides(tmp_path, 60000, 3000000, seed=7)
    proc = start_job("generate_events", big)
    wait_for(lambda: len(parquet_files(events)) > len(committed), proc)  # tasks are writing
    kill(proc)
    orphans = parquet_files(events) - committed

    # Files of the killed write are in no commit: every reader sees the previous version.
    assert orphans
    assert DeltaTable(str(events)).version() == 0
    assert pl.read_delta(str(events)).height == rows_before
    for name in ("customers", "segment_truth"):
        assert DeltaTable(cfg.storage.table_path(name)).version() == 0

    # Re-running (another seed, same size as before) commits cleanly as the next version.
    rerun = load_config(ROOT / "conf" / "local.yaml", overrides=overrides(tmp_path, 300, 9000, 8))
    result = generate.run(spark, rerun)
    assert result.versions["events"] == 1
    assert pl.read_delta(str(events)).height == result.rows["events"]
    assert pl.read_delta(str(events))["event_id"].n_unique() == result.rows["events"]

    # VACUUM keeps recent files (retention guard) and removes the killed write's once old
    # enough; the versions' own files are recent and stay.
    assert delta_maintenance.vacuum(spark, str(events), retention_hours=24) == []
    for f in orphans:
        age(events / f, days=3)
    listed = delta_maintenance.vacuum(spark, str(events), retention_hours=24, dry_run=True)
    assert set(listed) == orphans
    removed = delta_maintenance.vacuum(spark, str(events), retention_hours=24, dry_run=False)
    assert set(removed) == orphans
    assert parquet_files(events).isdisjoint(orphans)
    assert pl.read_delta(str(events)).height == result.rows["events"]
