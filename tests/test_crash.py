"""Jobs killed with a signal mid-write: tables stay at their previous version, re-runs work,
and the killed run's files are invisible until `vacuum` removes them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from segmentation import delta_tables, pipeline
from segmentation.config import load_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def overrides(base: Path, customers: int, events: int, seed: int = 42) -> list[str]:
    return [
        f"storage.warehouse={base / 'wh'}",
        f"tracking.tracking_uri=sqlite:///{base / 'mlflow.db'}",
        f"tracking.artifact_location={base / 'mla'}",
        f"generator.customers={customers}",
        f"generator.events={events}",
        f"generator.seed={seed}",
        "spark.master=local[2]",
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


def test_kill_during_commit_step_leaves_tables_at_previous_version(spark, tmp_path):
    sets = overrides(tmp_path, 300, 9000)
    cfg = load_config(ROOT / "conf" / "local.yaml", overrides=sets)
    pipeline.generate(spark, cfg)
    first = pipeline.build_features(spark, cfg)
    features = Path(cfg.storage.table_path("customer_features"))
    before = {d.name for d in features.iterdir() if d.name.startswith("data-")}

    marker = tmp_path / "at-commit"
    fault = {"SEGMENTATION_FAULT_POINT": "before-commit", "SEGMENTATION_FAULT_MARKER": str(marker)}
    proc = start_job("build_features", sets, fault)
    wait_for(marker.exists, proc)
    kill(proc)

    # Every output table is at its previous version, with the same rows.
    for name in ("customer_features", "rejected_events"):
        assert DeltaTable(cfg.storage.table_path(name)).version() == 0
    assert pl.read_delta(str(features)).height == first.customers
    # The killed run had staged its files; no reader sees them.
    orphans = {d.name for d in features.iterdir() if d.name.startswith("data-")} - before
    assert len(orphans) == 1

    # A re-run succeeds: one new version, the snapshot replaced, nothing duplicated.
    again = pipeline.build_features(spark, cfg)
    assert again.version == 1
    assert pl.read_delta(str(features)).height == first.customers

    # vacuum keeps recent files (retention guard) and removes the killed run's once old enough.
    (orphan,) = orphans
    assert all(orphan not in f for f in delta_tables.vacuum(str(features), retention_hours=24))
    age(features / orphan, days=3)
    removed = delta_tables.vacuum(str(features), retention_hours=24, dry_run=False)
    assert removed and all(f.startswith(orphan + "/") for f in removed)
    assert not (features / orphan).exists()
    assert pl.read_delta(str(features)).height == first.customers


def test_kill_during_parquet_write_leaves_table_at_previous_version(spark, tmp_path):
    small = overrides(tmp_path, 300, 9000)
    cfg = load_config(ROOT / "conf" / "local.yaml", overrides=small)
    pipeline.generate(spark, cfg)
    events = Path(cfg.storage.table_path("events"))
    rows_before = pl.read_delta(str(events)).height

    big = overrides(tmp_path, 60000, 3000000, seed=7)
    proc = start_job("generate_events", big)
    writing = lambda: any(events.glob("data-*/_temporary"))  # noqa: E731
    wait_for(writing, proc)
    time.sleep(1.0)
    kill(proc)

    assert DeltaTable(str(events)).version() == 0
    assert pl.read_delta(str(events)).height == rows_before
    for name in ("customers", "segment_truth"):
        assert DeltaTable(cfg.storage.table_path(name)).version() == 0

    # Re-running (another seed, same size as before) commits cleanly as the next version.
    rerun = load_config(ROOT / "conf" / "local.yaml", overrides=overrides(tmp_path, 300, 9000, 8))
    result = pipeline.generate(spark, rerun)
    assert result.versions["events"] == 1
    assert pl.read_delta(str(events)).height == result.rows["events"]
    assert pl.read_delta(str(events))["event_id"].n_unique() == result.rows["events"]
