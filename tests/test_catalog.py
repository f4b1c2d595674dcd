"""Tables a warehouse finds by name: catalog registration (``storage.schema``), the contract's
descriptions as Delta comments, the current views, and the embedded metastore's one-JVM limit."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from deltalake import DeltaTable

from segmentation.config import StorageConfig, load_config
from segmentation.errors import SegmentationError, TableError
from segmentation.runtime import session
from segmentation.storage import catalog, tables

ROOT = Path(__file__).resolve().parents[1]
D1, D2 = dt.date(2025, 11, 30), dt.date(2025, 12, 31)
SCORED = dt.datetime(2026, 1, 1, 6)


def membership(spark, storage, model: str, as_of: dt.date, rows: list[tuple[str, int]], run=""):
    df = spark.createDataFrame(
        [(c, as_of, s, f"S{s}", 0.5, model, 1, "run", SCORED) for c, s in rows],
        tables.MEMBERSHIP_SCHEMA,
    )
    return tables.snapshot_write(
        spark, storage, tables.MEMBERSHIP, df, job="test", run_id=run or f"r-{model}-{as_of}",
        snapshot={tables.MODEL_NAME: model, tables.AS_OF: as_of},
    )  # fmt: skip


def described(spark, full: str) -> tuple[dict[str, str], dict[str, str]]:
    """Column comments and the detailed table information of ``DESCRIBE TABLE EXTENDED``."""
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {full}").collect()
    columns, details, in_details = {}, {}, False
    for r in rows:
        if r["col_name"].startswith("# Detailed Table Information"):
            in_details = True
        elif in_details:
            details[r["col_name"]] = r["data_type"]
        elif r["col_name"] and not r["col_name"].startswith("#"):
            columns.setdefault(r["col_name"], r["comment"] or "")
    return columns, details


@pytest.fixture
def schema(spark):
    name = f"seg_{uuid.uuid4().hex[:8]}"
    yield name
    spark.sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def test_registered_tables_carry_the_contract_and_the_current_view_is_each_models_latest(
    spark, tmp_path, schema
):
    storage = StorageConfig(warehouse=str(tmp_path / "wh"), schema=schema)
    # Model a: c3 left at D2 (no current segment), c1 moved. Model b: only D1.
    tables.write_in_order([
        membership(spark, storage, "a", D1, [("c1", 1), ("c2", 2), ("c3", 1)]),
        membership(spark, storage, "a", D2, [("c1", 2), ("c2", 2)]),
        membership(spark, storage, "b", D1, [("c1", 5)]),
    ])  # fmt: skip
    current = spark.sql(f"SELECT * FROM {schema}.segment_membership_current")
    assert sorted(
        (r["model_name"], r["customer_id"], r["segment_id"], r["as_of"]) for r in current.collect()
    ) == [("a", "c1", 2, D2), ("a", "c2", 2, D2), ("b", "c1", 5, D1)]
    columns, details = described(spark, f"{schema}.segment_membership")
    assert columns == {
        f.name: tables.description_of(f) for f in tables.MEMBERSHIP_SCHEMA.fields
    }  # fmt: skip
    assert details["Comment"] == tables.MEMBERSHIP.table_comment()
    assert details["Type"] == "EXTERNAL"
    assert details["Location"].endswith(str(tmp_path / "wh" / "segment_membership"))
    # Readers who know only the path see the same: delta-rs reads the comments and protocol.
    dt_ = DeltaTable(str(tmp_path / "wh" / "segment_membership"))
    assert dt_.metadata().description == tables.MEMBERSHIP.table_comment()
    protocol = dt_.protocol()
    assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2)
    # A retry of the same run commits nothing twice; another run replaces the snapshot; both
    # register again without error.
    version = tables.version(spark, storage, tables.MEMBERSHIP)
    tables.write_in_order([membership(spark, storage, "a", D2, [("c1", 2), ("c2", 2)])])
    assert tables.version(spark, storage, tables.MEMBERSHIP) == version
    rerun = membership(spark, storage, "a", D2, [("c1", 2)], run="another run")
    tables.write_in_order([rerun])
    assert tables.version(spark, storage, tables.MEMBERSHIP) == version + 1
    assert spark.table(f"{schema}.segment_membership").count() == 5


def test_a_name_registered_at_another_location_stops_the_job_before_it_writes(
    spark, tmp_path, schema
):
    first = StorageConfig(warehouse=str(tmp_path / "first"), schema=schema)
    tables.write_in_order([membership(spark, first, "a", D1, [("c1", 1)])])
    other = StorageConfig(warehouse=str(tmp_path / "other"), schema=schema)
    with pytest.raises(TableError) as err:
        tables.write_in_order([membership(spark, other, "a", D1, [("c1", 1)])])
    text = str(err.value)
    assert f"{schema}`.`segment_membership` is registered at" in text
    assert str(tmp_path / "first" / "segment_membership") in text
    assert str(tmp_path / "other" / "segment_membership") in text
    assert "storage.schema" in text
    assert not (tmp_path / "other").exists()


def test_catalog_keys_are_checked(tmp_path):
    with pytest.raises(SegmentationError, match=r"storage\.catalog needs storage\.schema"):
        load_config(ROOT / "conf" / "local.yaml", overrides=["storage.catalog=main"])
    with pytest.raises(SegmentationError, match=r"storage\.schema must be a plain identifier"):
        load_config(ROOT / "conf" / "local.yaml", overrides=["storage.schema=my-schema"])
    with pytest.raises(SegmentationError, match=r"starting with a letter or _\), got '1'"):
        load_config(ROOT / "conf" / "local.yaml", overrides=["storage.schema='1'"])
    with pytest.raises(SegmentationError, match=r"storage\.metastore needs storage\.schema"):
        load_config(ROOT / "conf" / "local.yaml", overrides=["storage.metastore=ms"])
    with pytest.raises(SegmentationError, match=r"storage\.metastore must name a folder"):
        load_config(ROOT / "conf" / "local.yaml", overrides=["storage.schema=s",
                                                           "storage.metastore='  '"])  # fmt: skip
    cfg = load_config(ROOT / "conf" / "local.yaml", overrides=["storage.schema=segments",
                                                               "storage.catalog=main"])  # fmt: skip
    assert catalog.name(cfg.storage, "segment_membership") == (
        "`main`.`segments`.`segment_membership`"
    )


# --- the embedded metastore across processes (storage.metastore) ----------------------------

WRITER = """
import datetime as dt, sys
from segmentation.config import load_config
from segmentation.runtime.session import build_session
from segmentation.storage import tables
cfg = load_config("conf/local.yaml", overrides=sys.argv[1:])
spark = build_session(cfg)
df = spark.createDataFrame([("c1", dt.date(2025, 12, 31), 3.0)],
                           "customer_id string, as_of date, frequency double")
tables.write_in_order([tables.snapshot_write(spark, cfg.storage, tables.FEATURES, df, job="w",
                       run_id="r", snapshot={"as_of": dt.date(2025, 12, 31)})])
print("written", flush=True)
"""

READER = """
import sys
from segmentation.config import load_config
from segmentation.runtime.session import build_session
cfg = load_config("conf/local.yaml", overrides=sys.argv[1:])
spark = build_session(cfg)
rows = spark.sql("SELECT customer_id, frequency FROM segments.customer_features_current")
print("rows", [tuple(r) for r in rows.collect()], flush=True)
for r in spark.sql("DESCRIBE TABLE EXTENDED segments.customer_features").collect():
    if r["col_name"] in ("frequency", "Comment"):
        print("described", r["col_name"], "|", r["comment"] or r["data_type"], flush=True)
sys.stdin.readline()  # hold the metastore until the test closes stdin
"""


def python(code: str, *overrides: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *overrides], cwd=ROOT, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw,
    )  # fmt: skip


@pytest.mark.integration
def test_embedded_metastore_registers_for_the_next_process_and_admits_one_jvm(tmp_path):
    overrides = [
        f"storage.warehouse={tmp_path / 'wh'}", f"storage.metastore={tmp_path / 'metastore'}",
        "storage.schema=segments", "spark.master=local[1]", "spark.shuffle_partitions=1",
    ]  # fmt: skip
    writer = python(WRITER, *overrides)
    out, err = writer.communicate("\n", timeout=300)
    assert writer.returncode == 0 and "written" in out, err[-3000:]
    reader = python(READER, *overrides)
    try:
        lines = []
        while not any(line.startswith("described Comment") for line in lines):
            line = reader.stdout.readline()
            assert line, reader.stderr.read()[-3000:]
            lines.append(line.strip())
        assert "rows [('c1', 3.0)]" in lines
        assert f"described frequency | {tables.FEATURES.column_description('frequency')}" in lines
        assert f"described Comment | {tables.FEATURES.table_comment()}" in lines
        # While the reader's JVM holds the metastore, a second process stops at once, saying
        # which metastore and what to do, before it starts Spark.
        job = subprocess.run(
            [sys.executable, "jobs/generate_events.py", *(f"--set={o}" for o in overrides),
             "--set=generator.customers=50", "--set=generator.events=500"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
            capture_output=True, timeout=120,
        )  # fmt: skip
        assert job.returncode == 2, job.stderr[-3000:]
        assert f"ERROR: the Hive metastore in {tmp_path / 'metastore'} (storage.metastore" in (
            job.stderr
        )
        assert "metastore server" in job.stderr and "hive.metastore.uris" in job.stderr
        assert "Traceback" not in job.stderr
        assert not (tmp_path / "wh" / "events").exists()
    finally:
        reader.communicate("\n", timeout=120)
    session.check_metastore_free(tmp_path / "metastore")  # released when the JVM ended


def test_a_column_added_by_a_later_snapshot_gets_its_description_in_that_write(spark, tmp_path):
    """mergeSchema adds a column without its comment; the same write brings it up to date."""
    storage = StorageConfig(warehouse=str(tmp_path / "wh"))

    def features(as_of: dt.date, *columns: str):
        df = spark.createDataFrame([("c1", as_of, *(1.0 for _ in columns))],
                                   ", ".join(["customer_id string", "as_of date",
                                              *(f"{c} double" for c in columns)]))  # fmt: skip
        return tables.snapshot_write(
            spark, storage, tables.FEATURES, df, job="test", run_id=f"r-{as_of}",
            snapshot={tables.AS_OF: as_of},
        )  # fmt: skip

    tables.write_in_order([features(D1, "frequency")])
    tables.write_in_order([features(D2, "frequency", "recency_days")])
    fields = {
        f.name: f for f in DeltaTable(str(tmp_path / "wh" / "customer_features")).schema().fields
    }
    assert fields["recency_days"].metadata["comment"] == tables.FEATURES.column_description(
        "recency_days"
    )
    assert fields["frequency"].metadata["comment"] == tables.FEATURES.column_description(
        "frequency"
    )
