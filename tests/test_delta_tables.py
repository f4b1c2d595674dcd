"""The embedded Delta backend: Spark-written files, delta-rs commits, independent readers."""

from __future__ import annotations

import datetime as dt
import os
import threading

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from segmentation import delta_tables as dtab
from segmentation.errors import TableError

D1, D2 = dt.date(2025, 1, 31), dt.date(2025, 2, 28)
SCHEMA = "customer_id string, as_of date, segment_id int, distance double, scored_at timestamp"


def rows(spark, as_of, n, seg=1):
    ts = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
    return spark.createDataFrame(
        [(f"c{i}", as_of, seg, float(i) / 2, ts) for i in range(n)], SCHEMA
    ).repartition(2)


def snapshot_options(as_of, key=None):
    return dtab.WriteOptions(
        mode="overwrite",
        partition_by=("as_of",),
        replace_partitions={"as_of": as_of},
        idempotency_key=key,
        metadata={"job": "test"},
    )


def test_write_table_creates_table_readable_by_delta_rs_and_polars(spark, tmp_path):
    path = str(tmp_path / "t")
    version = dtab.write_table(spark, rows(spark, D1, 5), path, snapshot_options(D1),
                               backend="embedded")  # fmt: skip
    assert version == 0
    table = DeltaTable(path)
    assert table.metadata().partition_columns == ["as_of"]
    arrow = table.to_pyarrow_table()
    assert arrow.num_rows == 5
    assert str(arrow.schema.field("scored_at").type) == "timestamp[us, tz=UTC]"
    frame = pl.read_delta(path)
    assert frame.height == 5
    assert frame["as_of"].unique().to_list() == [D1]
    assert sorted(frame["customer_id"].to_list()) == [f"c{i}" for i in range(5)]


def test_write_table_adds_per_file_stats_from_parquet_footers(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write_table(spark, rows(spark, D1, 6), path, snapshot_options(D1), backend="embedded")
    actions = pa.table(DeltaTable(path).get_add_actions(flatten=True)).to_pylist()
    assert sum(a["num_records"] for a in actions) == 6
    assert min(a["min.distance"] for a in actions) == 0.0
    assert max(a["max.distance"] for a in actions) == 2.5
    assert all(a["null_count.customer_id"] == 0 for a in actions)
    assert all(a["path"].startswith("data-") and "as_of=2025-01-31/" in a["path"] for a in actions)


def test_replacing_a_snapshot_keeps_others_and_never_duplicates(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write_table(spark, rows(spark, D1, 4), path, snapshot_options(D1), backend="embedded")
    dtab.write_table(spark, rows(spark, D2, 3), path, snapshot_options(D2), backend="embedded")
    v = dtab.write_table(spark, rows(spark, D1, 4, seg=2), path, snapshot_options(D1),
                         backend="embedded")  # fmt: skip
    assert v == 2
    frame = pl.read_delta(path)
    assert frame.height == 7
    assert frame.filter(pl.col("as_of") == D1)["segment_id"].unique().to_list() == [2]
    # Time travel: version 0 still holds the first snapshot as first written.
    first = dtab.read_table(spark, path, backend="embedded", version=0)
    assertDataFrameEqual(first, rows(spark, D1, 4))


def test_read_table_filters_partitions_and_restores_partition_column(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write_table(spark, rows(spark, D1, 4), path, snapshot_options(D1), backend="embedded")
    dtab.write_table(spark, rows(spark, D2, 3), path, snapshot_options(D2), backend="embedded")
    second = dtab.read_table(spark, path, backend="embedded", partitions={"as_of": D2})
    assertDataFrameEqual(second, rows(spark, D2, 3))
    assert second.schema["as_of"].dataType.simpleString() == "date"


def test_same_idempotency_key_is_committed_once(spark, tmp_path):
    path = str(tmp_path / "t")
    options = dtab.WriteOptions(mode="append", idempotency_key="run-1")
    assert dtab.write_table(spark, rows(spark, D1, 3), path, options, backend="embedded") == 0
    assert dtab.write_table(spark, rows(spark, D1, 3), path, options, backend="embedded") == 0
    assert DeltaTable(path).version() == 0
    assert pl.read_delta(path).height == 3
    # The skipped write's staged files were removed: only the committed data directory remains.
    data_dirs = [d for d in os.listdir(path) if d.startswith("data-")]
    assert len(data_dirs) == 1


def test_staged_write_is_invisible_until_committed_and_abort_removes_files(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write_table(spark, rows(spark, D1, 2), path, snapshot_options(D1), backend="embedded")
    staged = dtab.stage(spark, rows(spark, D2, 5), path, snapshot_options(D2), backend="embedded")
    assert staged.rows == 5
    assert pl.read_delta(path).height == 2  # staged files are not in the log
    assert os.path.isdir(staged.staging_dir)
    dtab.abort(staged)
    assert not os.path.exists(staged.staging_dir)
    assert DeltaTable(path).version() == 0


def test_commit_records_metadata_in_history(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write_table(spark, rows(spark, D1, 2), path, snapshot_options(D1), backend="embedded")
    last = DeltaTable(path).history(1)[0]
    assert last["job"] == "test"
    assert last["segmentation.write_id"].startswith("data-")


def test_schema_change_on_partition_replace_is_a_clear_error(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write_table(spark, rows(spark, D1, 2), path, snapshot_options(D1), backend="embedded")
    wider = rows(spark, D2, 2).withColumn("extra", F.lit(1))
    with pytest.raises(TableError, match=r"different schema \(added \['extra'\]"):
        dtab.write_table(spark, wider, path, snapshot_options(D2), backend="embedded")
    assert DeltaTable(path).version() == 0


def test_read_table_missing_is_a_clear_error(spark, tmp_path):
    with pytest.raises(TableError, match="no Delta table at"):
        dtab.read_table(spark, str(tmp_path / "none"), backend="embedded")


def test_resolve_backend_without_delta_extension_is_embedded(spark):
    assert dtab.resolve_backend(spark, "auto") == "embedded"
    with pytest.raises(TableError, match="no Delta extension"):
        dtab.resolve_backend(spark, "spark")


def test_vacuum_refuses_short_retention(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write_table(spark, rows(spark, D1, 2), path, snapshot_options(D1), backend="embedded")
    with pytest.raises(TableError, match="refused"):
        dtab.vacuum(path, retention_hours=1)
    assert dtab.vacuum(path, retention_hours=168, dry_run=True) == []


def commit_concurrently(spark, staged):
    """Commit staged writes from threads released together; returns versions or errors."""
    results: list = [None] * len(staged)
    barrier = threading.Barrier(len(staged))

    def commit(i):
        barrier.wait()
        try:
            results[i] = dtab.commit(spark, staged[i])
        except TableError as exc:
            results[i] = exc

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(len(staged))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_writers_of_different_snapshots_both_succeed(spark, tmp_path):
    path = str(tmp_path / "t")
    dtab.write_table(spark, rows(spark, D1, 2), path, snapshot_options(D1), backend="embedded")
    d3 = dt.date(2025, 3, 31)
    staged = [
        dtab.stage(spark, rows(spark, D2, 3), path, snapshot_options(D2), backend="embedded"),
        dtab.stage(spark, rows(spark, d3, 4), path, snapshot_options(d3), backend="embedded"),
    ]
    results = commit_concurrently(spark, staged)
    assert sorted(results) == [1, 2]
    counts = dict(pl.read_delta(path).group_by("as_of").len().iter_rows())
    assert counts == {D1: 2, D2: 3, d3: 4}


@pytest.mark.parametrize("attempt", range(3))
def test_concurrent_writers_of_the_same_snapshot_never_double_it(spark, tmp_path, attempt):
    path = str(tmp_path / "t")
    dtab.write_table(spark, rows(spark, D1, 2), path, snapshot_options(D1), backend="embedded")
    staged = [
        dtab.stage(
            spark, rows(spark, D2, 3, seg=1), path, snapshot_options(D2), backend="embedded"
        ),
        dtab.stage(
            spark, rows(spark, D2, 4, seg=2), path, snapshot_options(D2), backend="embedded"
        ),
    ]
    results = commit_concurrently(spark, staged)
    snapshot = pl.read_delta(path).filter(pl.col("as_of") == D2)
    errors = [r for r in results if isinstance(r, TableError)]
    if errors:  # the race happened: one writer lost with a clear message, its files removed
        assert len(errors) == 1 and "conflict: another run changed snapshot as_of=" in str(
            errors[0]
        )
        loser = staged[results.index(errors[0])]
        assert not os.path.exists(loser.staging_dir)
    winner = max((r, i) for i, r in enumerate(results) if isinstance(r, int))[1]
    assert snapshot.height == (3, 4)[winner]  # one writer's rows, never both
    assert snapshot["segment_id"].unique().to_list() == [winner + 1]
    assert pl.read_delta(path).filter(pl.col("as_of") == D1).height == 2
