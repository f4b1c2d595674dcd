"""The table contracts: transaction ids, snapshot writes, conforming rows, reading snapshots."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from segmentation.config import StorageConfig
from segmentation.errors import InputError
from segmentation.storage import tables

D1 = dt.date(2025, 12, 31)


def test_txn_names_job_run_key_snapshot_and_version():
    txn = tables.txn("run-7", job="assign_segments", parts={"model_name": "m", "as_of": D1, "v": 3})
    assert txn == tables.delta_tables.Txn("segmentation:assign_segments:run-7:as_of=2025-12-31,"
                                          "model_name=m,v=3")  # fmt: skip


def test_snapshot_write_needs_exactly_the_partition_values(spark, tmp_path):
    storage = StorageConfig(warehouse=str(tmp_path))
    df = spark.createDataFrame([], tables.MEMBERSHIP_SCHEMA)
    with pytest.raises(ValueError, match=r"one value of each of \('model_name', 'as_of'\)"):
        tables.snapshot_write(spark, storage, tables.MEMBERSHIP, df, job="j", run_id="r",
                              snapshot={"as_of": D1})  # fmt: skip


def test_snapshot_write_uses_the_run_key_when_given_and_conforms_rows(spark, tmp_path):
    storage = StorageConfig(warehouse=str(tmp_path), run_key="airflow-1")
    rows = spark.createDataFrame(
        [("c1", "2", D1, "m", 1, "Big", 0.5, "run", dt.datetime(2026, 1, 1))],
        "customer_id string, segment_id string, as_of date, model_name string, "
        "model_version long, segment_name string, distance float, run_id string, "
        "scored_at timestamp",
    )
    write = tables.snapshot_write(
        spark, storage, tables.MEMBERSHIP, rows, job="j", run_id="mlflow-run",
        snapshot={"model_name": "m", "as_of": D1}, model_version=1,
    )  # fmt: skip
    assert write.name == "segment_membership" and write.call() == 0
    stored = tables.read(spark, storage, tables.MEMBERSHIP)
    assert stored.schema.simpleString() == tables.MEMBERSHIP_SCHEMA.simpleString()
    history = tables.delta_tables.history(spark, tables.path(storage, tables.MEMBERSHIP))
    assert (
        '"txn_app_id": "segmentation:j:airflow-1:as_of=2025-12-31,model_name=m,v=1"'
        in (history[0]["userMetadata"])
    )
    # The same run key again: nothing is committed twice.
    assert write.call() == 0 and tables.version(spark, storage, tables.MEMBERSHIP) == 0


def test_conform_orders_casts_and_names_a_missing_column(spark):
    df = spark.createDataFrame([(1, "x")], "segment_id long, attribute string")
    with pytest.raises(ValueError, match=r"segment_composition lack column\(s\) \['as_of'"):
        tables.conform(df, tables.COMPOSITION)
    lineage = tables.Lineage(D1, "m", 2, "r")
    rows = spark.createDataFrame(
        [(1, "Big", "country", "US", 3, 0.5, 0.25, False)],
        "segment_id long, segment_name string, attribute string, value string, customers int, "
        "share_of_segment double, population_share double, sensitive boolean",
    )
    out = tables.with_lineage(rows, lineage, tables.COMPOSITION)
    assert out.schema.simpleString() == tables.COMPOSITION_SCHEMA.simpleString()
    assert out.select(F.col("model_version")).first()[0] == 2


def test_read_snapshot_missing_names_the_date_the_key_and_the_job(spark, tmp_path):
    storage = StorageConfig(warehouse=str(tmp_path))
    with pytest.raises(InputError, match=r"no customer_features snapshot for 2025-12-31 "
                       r"\(features.as_of\) at .*: run build_features"):  # fmt: skip
        tables.read_snapshot(spark, storage, tables.FEATURES, D1, key="features.as_of")
