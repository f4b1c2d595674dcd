"""Delta I/O through delta-spark, read back by independent readers (delta-rs, Polars)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType
from pyspark.testing import assertDataFrameEqual

from segmentation.errors import TableError
from segmentation.storage import delta_maintenance
from segmentation.storage import delta_tables as dtab

D1, D2, D3 = dt.date(2025, 1, 31), dt.date(2025, 2, 28), dt.date(2025, 3, 31)
SCHEMA = "customer_id string, as_of date, segment_id int, distance double, scored_at timestamp"


def rows(spark, as_of, n, seg=1):
    ts = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
    return spark.createDataFrame(
        [(f"c{i}", as_of, seg, float(i) / 2, ts) for i in range(n)], SCHEMA
    ).repartition(2)


def snapshot(as_of, txn=None):
    return dtab.WriteOptions(
        partition_by=("as_of",), replace={"as_of": as_of}, txn=txn, metadata={"job": "test"}
    )


def commit_infos(path):
    """The commitInfo action of every commit, read from the log's JSON files directly."""
    infos = {}
    for f in sorted((Path(path) / "_delta_log").glob("*.json")):
        for line in f.read_text().splitlines():
            action = json.loads(line)
            if "commitInfo" in action:
                infos[int(f.stem)] = action["commitInfo"]
    return infos


def test_write_creates_a_delta_spark_table_readable_by_delta_rs_and_polars(spark, tmp_path):
    path = str(tmp_path / "t")
    written = dtab.write(spark, rows(spark, D1, 5), path, snapshot(D1))
    assert written == dtab.Written(version=0, committed=True)
    table = DeltaTable(path)
    assert table.metadata().partition_columns == ["as_of"]
    arrow = table.to_pyarrow_table()
    assert arrow.num_rows == 5
    assert str(arrow.schema.field("scored_at").type) == "timestamp[us, tz=UTC]"
    frame = pl.read_delta(path)
    assert frame["as_of"].unique().to_list() == [D1]
    assert sorted(frame["customer_id"].to_list()) == [f"c{i}" for i in range(5)]
    info = commit_infos(path)[0]
    assert "Delta-Lake/" in info["engineInfo"] and "Apache-Spark/" in info["engineInfo"]
    assert json.loads(info["userMetadata"])["job"] == "test"


def test_replacing_a_snapshot_keeps_others_and_never_duplicates(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write(spark, rows(spark, D1, 4), path, snapshot(D1))
    dtab.write(spark, rows(spark, D2, 3), path, snapshot(D2))
    assert dtab.write(spark, rows(spark, D1, 4, seg=2), path, snapshot(D1)).version == 2
    frame = pl.read_delta(path)
    assert frame.height == 7
    assert frame.filter(pl.col("as_of") == D1)["segment_id"].unique().to_list() == [2]
    info = commit_infos(path)[2]
    assert info["operation"] == "WRITE" and "2025-01-31" in info["operationParameters"]["predicate"]
    # Time travel: version 0 still holds the first snapshot as first written.
    assertDataFrameEqual(dtab.read(spark, path, version=0), rows(spark, D1, 4))


def test_read_filters_partitions(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write(spark, rows(spark, D1, 4), path, snapshot(D1))
    dtab.write(spark, rows(spark, D2, 3), path, snapshot(D2))
    second = dtab.read(spark, path, partitions={"as_of": D2})
    assertDataFrameEqual(second, rows(spark, D2, 3))
    assert dtab.version(spark, path) == 1
    assert dtab.partition_columns(spark, path) == ["as_of"]


def test_a_retried_transaction_commits_nothing_twice(spark, tmp_path):
    path = str(tmp_path / "t")
    txn = dtab.Txn("segmentation:test:run-1:as_of=2025-01-31")
    assert dtab.write(spark, rows(spark, D1, 3), path, snapshot(D1, txn)).committed
    again = dtab.write(spark, rows(spark, D1, 5, seg=9), path, snapshot(D1, txn))
    assert again == dtab.Written(version=0, committed=False)
    assert DeltaTable(path).version() == 0
    assert pl.read_delta(path)["segment_id"].unique().to_list() == [1]
    # Another run (another transaction id) replaces the snapshot.
    other = dtab.Txn("segmentation:test:run-2:as_of=2025-01-31")
    assert dtab.write(spark, rows(spark, D1, 5, seg=9), path, snapshot(D1, other)).version == 1
    assert pl.read_delta(path).height == 5


def test_writing_no_rows_that_change_nothing_keeps_the_version(spark, tmp_path):
    """Delta commits nothing for an append of no rows: the write says so, with the version
    that holds the table's rows, instead of failing to find its commit."""
    path = str(tmp_path / "t")
    assert (
        dtab.write(spark, rows(spark, D1, 3), path, dtab.WriteOptions(mode="append")).version == 0
    )
    empty = rows(spark, D1, 0)
    again = dtab.write(spark, empty, path, dtab.WriteOptions(mode="append"))
    assert again == dtab.Written(version=0, committed=False)
    assert DeltaTable(path).version() == 0 and pl.read_delta(path).height == 3
    # Rows that do change the table are committed as ever.
    assert dtab.write(spark, rows(spark, D2, 2), path, dtab.WriteOptions(mode="append")) == (
        dtab.Written(version=1, committed=True))  # fmt: skip


def test_schema_conflict_names_the_table_and_the_columns(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write(spark, rows(spark, D1, 2), path, snapshot(D1))
    wider = rows(spark, D2, 2).withColumn("extra", F.lit(1))
    with pytest.raises(TableError, match=rf"table {path} has a different schema: columns "
                       r"added \['extra'\], removed \[\], changed \[\]"):  # fmt: skip
        dtab.write(spark, wider, path, snapshot(D2))
    retyped = rows(spark, D2, 2).withColumn("segment_id", F.col("segment_id").cast("string"))
    with pytest.raises(TableError, match=r"changed \['segment_id \(int -> string\)'\]"):
        dtab.write(spark, retyped, path, snapshot(D2))
    assert DeltaTable(path).version() == 0


def test_additive_schema_change_evolves_on_purpose(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write(spark, rows(spark, D1, 2), path, snapshot(D1))
    wider = rows(spark, D2, 2).withColumn("extra", F.lit(7))
    options = dtab.WriteOptions(partition_by=("as_of",), replace={"as_of": D2}, evolve_schema=True)
    dtab.write(spark, wider, path, options)
    frame = pl.read_delta(path).sort("as_of", "customer_id")
    assert frame["extra"].to_list() == [None, None, 7, 7]
    # Evolution is additive only: dropping a column still fails.
    with pytest.raises(TableError, match=r"removed \['extra'\]"):
        dtab.write(spark, rows(spark, D3, 2), path, options)


def test_partitioning_conflict_is_a_clear_error(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write(spark, rows(spark, D1, 2), path, snapshot(D1))
    other = dtab.WriteOptions(partition_by=("segment_id",), replace={"segment_id": 1})
    with pytest.raises(TableError, match=r"partitioned by \['as_of'\], this write by"):
        dtab.write(spark, rows(spark, D1, 2), path, other)


def test_rows_outside_the_replaced_snapshot_are_refused(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write(spark, rows(spark, D1, 2), path, snapshot(D1))
    with pytest.raises(TableError, match="fall outside it"):
        dtab.write(spark, rows(spark, D2, 2), path, snapshot(D1))
    assert pl.read_delta(path)["as_of"].unique().to_list() == [D1]


def test_merge_updates_inserts_and_deletes_only_where_told(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write(spark, rows(spark, D1, 3), path, dtab.WriteOptions(mode="append"))
    source = spark.createDataFrame([("c0", D1, 5, 0.0, None), ("c9", D1, 6, 1.0, None)], SCHEMA)
    txn = dtab.Txn("merge-1")
    merged = dtab.merge(spark, source, path, keys=("customer_id", "as_of"),
                        delete_unmatched="t.customer_id = 'c2'", txn=txn)  # fmt: skip
    assert merged == dtab.Written(version=1, committed=True)
    got = {r["customer_id"]: r["segment_id"] for r in pl.read_delta(path).to_dicts()}
    assert got == {"c0": 5, "c1": 1, "c9": 6}  # c1 unmatched but kept, c2 deleted
    assert commit_infos(path)[1]["operation"] == "MERGE"
    # The same transaction again commits nothing.
    again = dtab.merge(spark, source.withColumn("segment_id", F.lit(99)), path,
                       keys=("customer_id", "as_of"), txn=txn)  # fmt: skip
    assert again == dtab.Written(version=1, committed=False)
    assert spark.conf.get("spark.databricks.delta.write.txnAppId", None) is None


def test_read_missing_table_is_a_clear_error(spark, tmp_path):
    with pytest.raises(TableError, match="no Delta table at"):
        dtab.read(spark, str(tmp_path / "none"))
    assert dtab.version(spark, str(tmp_path / "none")) is None


def test_vacuum_refuses_short_retention_and_optimize_compacts(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write(spark, rows(spark, D1, 4), path, snapshot(D1))
    dtab.write(spark, rows(spark, D1, 4), path, snapshot(D1))
    with pytest.raises(TableError, match="refused"):
        delta_maintenance.vacuum(spark, path, retention_hours=1)
    # Version 0's files are recent: the retention keeps them.
    assert delta_maintenance.vacuum(spark, path, retention_hours=168, dry_run=True) == []
    done = delta_maintenance.optimize(spark, path)
    assert done["files_removed"] >= 2 and done["files_added"] == 1
    assert pl.read_delta(path).height == 4
    assert commit_infos(path)[2]["operation"] == "OPTIMIZE"


def write_concurrently(spark, path, frames, options):
    """Write from threads released together; returns Written results or TableErrors (any
    other exception fails the test)."""
    results: list = [None] * len(frames)
    barrier = threading.Barrier(len(frames))

    def work(i):
        barrier.wait()
        try:
            results[i] = dtab.write(spark, frames[i], path, options[i])
        except TableError as exc:
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None for r in results), results
    return results


def test_concurrent_writers_of_different_snapshots_both_succeed(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write(spark, rows(spark, D1, 2), path, snapshot(D1))
    results = write_concurrently(
        spark, path, [rows(spark, D2, 3), rows(spark, D3, 4)], [snapshot(D2), snapshot(D3)]
    )
    assert sorted(r.version for r in results) == [1, 2]
    counts = dict(pl.read_delta(path).group_by("as_of").len().iter_rows())
    assert counts == {D1: 2, D2: 3, D3: 4}


@F.udf(returnType=DoubleType())
def slowly(x):
    """Holds each writer's Spark job for a second, so both read the table before either
    commits: the race happens every time."""
    time.sleep(1.0)
    return x


def test_concurrent_writers_of_the_same_snapshot_one_wins_one_gets_a_clear_conflict(
    spark, tmp_path
):
    path = str(tmp_path / "t")
    dtab.write(spark, rows(spark, D1, 2), path, snapshot(D1))
    frames = [
        rows(spark, D2, n, seg=s).withColumn("distance", slowly("distance"))
        for n, s in ((3, 1), (4, 2))
    ]
    results = write_concurrently(spark, path, frames, [snapshot(D2), snapshot(D2)])
    snap = pl.read_delta(path).filter(pl.col("as_of") == D2)
    errors = [r for r in results if isinstance(r, TableError)]
    assert len(errors) == 1, results
    assert f"conflict: another run changed snapshot `as_of` = DATE '2025-02-28' of {path}" in str(
        errors[0]
    )
    assert DeltaTable(path).version() == 1
    winner = max((r.version, i) for i, r in enumerate(results) if isinstance(r, dtab.Written))[1]
    assert snap.height == (3, 4)[winner]  # one writer's rows, never both
    assert snap["segment_id"].unique().to_list() == [winner + 1]
    assert pl.read_delta(path).filter(pl.col("as_of") == D1).height == 2
