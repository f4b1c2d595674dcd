"""The session factory: Delta in every session, its coordinates, the offline option, and a
clear message when the jars cannot be resolved."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pyspark
import pytest
import yaml

from segmentation.config.platform import SparkConfig
from segmentation.errors import ConfigError
from segmentation.runtime import session

ROOT = Path(__file__).resolve().parents[1]
IVY_SETTINGS = """<ivysettings>
  <settings defaultResolver="unreachable"/>
  <resolvers>
    <ibiblio name="unreachable" m2compatible="true" root="http://127.0.0.1:9/maven2/"/>
  </resolvers>
</ivysettings>
"""


def test_delta_coordinates_match_the_installed_delta_spark_and_pyspark():
    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    expected = (
        f"io.delta:delta-spark_{spark_minor}_2.13:{importlib.metadata.version('delta-spark')}"
    )
    assert session.delta_coordinates() == expected


def test_the_test_session_has_delta(spark):
    assert spark.conf.get("spark.sql.extensions") == session.DELTA_EXTENSION
    assert spark.conf.get("spark.sql.catalog.spark_catalog") == session.DELTA_CATALOG
    session.check_delta(spark)  # raises without Delta classes


def test_delta_rebuilds_snapshots_with_one_wave_of_local_task_slots(spark, monkeypatch):
    """Delta's 50 snapshot tasks are capped by the shuffle partitions and, in local mode, by
    the local task slots; a user's own setting wins."""
    monkeypatch.setattr(session.os, "cpu_count", lambda: 6)
    cases = {("local", 8): 1, ("local[2]", 8): 2, ("local[*]", 8): 6, ("local[*]", 4): 4,
             ("local[3,2]", 8): 3, ("spark://h:7077", 8): 8, ("yarn", 200): 200}  # fmt: skip
    for (master, shuffle), expected in cases.items():
        cfg = SparkConfig(master=master, shuffle_partitions=shuffle)
        assert session.snapshot_partitions(cfg) == expected, master
    # The suite's session: local[2], 2 shuffle partitions.
    assert spark.conf.get("spark.databricks.delta.snapshotPartitions") == "2"


def test_local_delta_jars_accepts_folders_files_and_globs(tmp_path):
    (tmp_path / "a.jar").write_bytes(b"")
    (tmp_path / "b.jar").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    folder = session.local_delta_jars([str(tmp_path)])
    assert [Path(j).name for j in folder] == ["a.jar", "b.jar"]
    assert session.local_delta_jars([str(tmp_path / "a*.jar")]) == [str(tmp_path / "a.jar")]
    with pytest.raises(ConfigError, match=r"spark.delta_jars entry .*nothing.* is no jar file"):
        session.local_delta_jars([str(tmp_path / "nothing")])


def offline_config(tmp_path: Path, **spark: object) -> Path:
    """An overlay (beside a copy of base.yaml) whose Ivy cache is empty and whose only
    repository is unreachable: Spark cannot resolve anything."""
    conf = tmp_path / "conf"
    conf.mkdir()
    shutil.copy(ROOT / "conf" / "base.yaml", conf / "base.yaml")
    (tmp_path / "ivysettings.xml").write_text(IVY_SETTINGS)
    overlay = {
        "spark": {
            "master": "local[1]",
            "conf": {
                "spark.jars.ivy": str(tmp_path / "empty-ivy"),
                "spark.jars.ivySettings": str(tmp_path / "ivysettings.xml"),
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
            },
            **spark,
        },
        "storage": {"warehouse": str(tmp_path / "wh")},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        "generator": {"customers": 50, "events": 500},
    }
    (conf / "offline.yaml").write_text(yaml.safe_dump(overlay))
    return conf / "offline.yaml"


def run_job(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "generate_events.py"), "--config", str(config)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip


@pytest.mark.integration
def test_unresolvable_jars_stop_the_job_naming_coordinates_and_the_offline_option(tmp_path):
    proc = run_job(offline_config(tmp_path))
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("ERROR: Spark could not start")
    assert session.delta_coordinates() in error
    assert "spark.delta_jars" in error and "make delta-jars" in error
    assert "unresolved dependency" in proc.stderr  # Ivy's own report, above the message
    assert not (tmp_path / "wh").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_local_jar_folder_runs_a_job_without_any_repository(spark, tmp_path):
    """The offline option: the jars this session resolved, copied to a folder, are enough."""
    jars = [
        j.removeprefix("file://").removeprefix("file:")
        for j in spark.sparkContext.getConf().get("spark.jars", "").split(",")
        if j
    ]
    assert any("delta-spark" in Path(j).name for j in jars)
    folder = tmp_path / "delta-jars"
    folder.mkdir()
    for jar in jars:
        shutil.copy(jar, folder)
    proc = run_job(offline_config(tmp_path, delta_jars=[str(folder)]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Sample data written" in proc.stdout
    assert (tmp_path / "wh" / "events" / "_delta_log").is_dir()
