"""Delta Lake I/O with two backends and one contract (DESIGN.md).

* ``spark``: Spark's own Delta data source, when the session has the Delta extension.
* ``embedded``: Spark writes Parquet files in parallel into a directory unique to this write,
  inside the table's location; once that Spark job has succeeded, the driver commits exactly
  those files as one Delta transaction with delta-rs, with partition values and per-file
  statistics read from the Parquet footers. Files of a write that never committed are not in
  the log, so no reader sees them (``vacuum`` removes them).

Writes are two-phase (``stage`` then ``commit``) so a job can stage all of its tables before it
commits any of them. Every commit is one new table version.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import posixpath
import time
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Literal

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    RemoveAction,
    Transaction,
    create_table_with_add_actions,
)
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

from segmentation.errors import TableError

log = logging.getLogger(__name__)

Backend = Literal["spark", "embedded"]
WriteMode = Literal["append", "overwrite"]

_DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
# Transaction identifiers are (app_id, version) pairs; one logical write is one app_id.
_TXN_VERSION = 1


@dataclass(frozen=True)
class WriteOptions:
    """How a DataFrame lands in a table.

    Attributes:
        mode: ``append`` adds files; ``overwrite`` replaces the whole table, or only the
            partitions in ``replace_partitions``.
        partition_by: partition columns of the table.
        replace_partitions: with ``overwrite``, the partition values to replace
            (e.g. ``{"as_of": date(2025, 12, 31)}``); other partitions are kept.
        idempotency_key: identifies one logical write; committing a key the table already
            recorded (a retried run) changes nothing.
        metadata: extra commit info recorded in the Delta log (run id, job, inputs).
    """

    mode: WriteMode = "append"
    partition_by: tuple[str, ...] = ()
    replace_partitions: Mapping[str, Any] | None = None
    idempotency_key: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass
class StagedWrite:
    """Files written for one table, not yet visible; ``commit`` makes them one version."""

    path: str
    backend: Backend
    options: WriteOptions
    schema: T.StructType
    df: DataFrame | None = None
    staging_dir: str | None = None
    adds: list[AddAction] = field(default_factory=list)
    rows: int = 0
    committed_version: int | None = None


def resolve_backend(spark: SparkSession, configured: str = "auto") -> Backend:
    """``spark`` when forced or when the session has the Delta extension, else ``embedded``."""
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if configured == "spark" and _DELTA_EXTENSION not in extensions:
        raise TableError(
            "storage.delta_backend is 'spark' but the session has no Delta extension: add "
            "--packages io.delta:delta-spark_2.13:<version> and set spark.sql.extensions="
            f"{_DELTA_EXTENSION} (or use delta_backend: auto/embedded)"
        )
    return configured_backend(configured, {"spark.sql.extensions": extensions})


def configured_backend(configured: str, spark_conf: Mapping[str, str]) -> Backend:
    """The backend a session with ``spark_conf`` uses (also before the session exists)."""
    if configured in ("spark", "embedded"):
        return configured  # type: ignore[return-value]
    return "spark" if _DELTA_EXTENSION in spark_conf.get("spark.sql.extensions", "") else "embedded"


def stage(
    spark: SparkSession, df: DataFrame, path: str, options: WriteOptions, *, backend: Backend
) -> StagedWrite:
    """Write ``df``'s files for ``path`` without making them visible.

    Args:
        spark: the active session.
        df: the rows to write; its schema becomes (or must match) the table's schema.
        path: the table location (local path or URI).
        options: mode, partitioning, replaced partitions, idempotency key, commit metadata.
        backend: ``spark`` defers the whole write to ``commit``; ``embedded`` runs the Spark
            job now and keeps the list of files it wrote.

    Returns:
        A staged write to pass to ``commit`` (or ``abort``).
    """
    missing = [c for c in options.partition_by if c not in df.columns]
    if missing:
        raise TableError(f"cannot write {path}: partition column(s) {missing} not in the rows")
    if backend == "spark":
        return StagedWrite(path=path, backend=backend, options=options, schema=df.schema, df=df)
    staging_rel = f"data-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
    staging_dir = posixpath.join(_local_or_uri(path), staging_rel)
    writer = df.write.mode("errorifexists")
    if options.partition_by:
        writer = writer.partitionBy(*options.partition_by)
    staged = StagedWrite(
        path=path,
        backend=backend,
        options=options,
        schema=df.schema,
        staging_dir=staging_dir,
    )
    try:
        writer.parquet(staging_dir)
        staged.adds, staged.rows = _collect_adds(path, staging_rel, df.schema, options)
    except BaseException:
        abort(staged)
        raise
    return staged


def commit(spark: SparkSession, staged: StagedWrite) -> int:
    """Make a staged write visible as one new table version and return that version.

    A write whose idempotency key the table already holds is not committed again; its staged
    files are removed and the table's current version is returned.
    """
    opts = staged.options
    if staged.backend == "spark":
        return _commit_spark(spark, staged)
    arrow_schema = to_arrow_schema(staged.schema, timezone="UTC")
    delta_schema = DeltaSchema.from_arrow(arrow_schema)
    write_id = posixpath.basename(staged.staging_dir or "")

    def properties(table: DeltaTable | None) -> CommitProperties:
        txns = [Transaction(opts.idempotency_key, _TXN_VERSION)] if opts.idempotency_key else []
        if table is not None and opts.mode == "overwrite":
            # Writers replacing the same snapshot (or the whole table) set the same transaction
            # id, so delta-rs rejects the second of two concurrent ones instead of keeping both.
            app_id = snapshot_app_id(opts.replace_partitions or {})
            txns.append(Transaction(app_id, (table.transaction_version(app_id) or 0) + 1))
        return CommitProperties(
            custom_metadata={
                **opts.metadata,
                "writer": "segmentation-embedded",
                "segmentation.write_id": write_id,
            },
            app_transactions=txns or None,
        )

    location = _local_or_uri(staged.path)
    table = _open(location)
    if table is None:
        try:
            create_table_with_add_actions(
                location,
                delta_schema,
                staged.adds,
                mode="error",
                partition_by=list(opts.partition_by) or None,
                commit_properties=properties(None),
            )
        except Exception as exc:
            # Another writer may have created the table between our check and our commit.
            table = _open(location)
            if table is None:
                abort(staged)
                raise TableError(f"could not create Delta table {staged.path}: {exc}") from exc
        else:
            staged.committed_version = 0
            return 0
    assert table is not None
    if opts.idempotency_key and table.transaction_version(opts.idempotency_key) is not None:
        log.info(
            "%s already holds write %s: not committed again", staged.path, opts.idempotency_key
        )
        abort(staged)
        staged.committed_version = table.version()
        return staged.committed_version
    _check_compatible(staged.path, table, arrow_schema, opts)
    filters = None
    if opts.mode == "overwrite" and opts.replace_partitions:
        filters = [(k, "=", _partition_string(v)) for k, v in opts.replace_partitions.items()]
    try:
        actions: list[AddAction | RemoveAction] = list(staged.adds)
        table.create_write_transaction(
            actions,
            opts.mode,
            delta_schema,
            partition_by=list(opts.partition_by) or None,
            partition_filters=filters,
            commit_properties=properties(table),
        )
    except CommitFailedError as exc:
        abort(staged)
        what = (
            f"snapshot {snapshot_app_id(opts.replace_partitions).split(':', 1)[1]}"
            if opts.replace_partitions
            else "the table"
        )
        raise TableError(
            f"conflict: another run changed {what} of {staged.path} at the same time; this "
            f"run's rows were not committed (the table holds the other run's). Re-run to "
            f"replace them. ({exc})"
        ) from exc
    except Exception as exc:
        abort(staged)
        raise TableError(f"commit to Delta table {staged.path} failed: {exc}") from exc
    staged.committed_version = _version_of_write(location, write_id)
    return staged.committed_version


def staged_rows(spark: SparkSession, staged: StagedWrite) -> DataFrame:
    """The data columns of a staged (not yet committed) embedded write, read back."""
    data = T.StructType(
        [f for f in staged.schema.fields if f.name not in staged.options.partition_by]
    )
    if staged.backend == "spark":
        assert staged.df is not None
        return staged.df.select(*data.names)
    if not staged.adds:
        return spark.createDataFrame([], data)
    location = _local_or_uri(staged.path)
    return spark.read.schema(data).parquet(*[posixpath.join(location, a.path) for a in staged.adds])


def snapshot_app_id(partitions: Mapping[str, Any]) -> str:
    """The Delta transaction id every writer of one snapshot (partition values) shares.

    No partition values means the whole table (``*``).
    """
    values = ",".join(f"{k}={_partition_string(v)}" for k, v in sorted(partitions.items()))
    return f"segmentation.snapshot:{values or '*'}"


def abort(staged: StagedWrite) -> None:
    """Remove the staged files of a write that will not be committed (best effort)."""
    if staged.staging_dir is None or staged.committed_version is not None:
        return
    fs, root = _filesystem(staged.staging_dir)
    try:
        fs.delete_dir(root)
    except (FileNotFoundError, OSError):
        pass


def write_table(
    spark: SparkSession, df: DataFrame, path: str, options: WriteOptions, *, backend: Backend
) -> int:
    """Stage and commit ``df`` to the table at ``path``; returns the new table version."""
    return commit(spark, stage(spark, df, path, options, backend=backend))


def tables_under(root: str) -> list[str]:
    """Names of the Delta tables directly under ``root`` (directories with a _delta_log)."""
    fs, base = _filesystem(_local_or_uri(root))
    try:
        entries = fs.get_file_info(pafs.FileSelector(base, recursive=False))
    except FileNotFoundError:
        return []
    names = [posixpath.basename(e.path) for e in entries if e.type == pafs.FileType.Directory]
    return sorted(n for n in names if table_exists(posixpath.join(root, n)))


def partition_columns(path: str) -> list[str] | None:
    """The table's partition columns (None when there is no table)."""
    table = _open(_local_or_uri(path))
    return None if table is None else list(table.metadata().partition_columns)


def repartition(path: str, partition_by: Sequence[str], *, metadata: Mapping[str, str]) -> int:
    """Rewrite the whole table partitioned by ``partition_by``, as one new version.

    The rows stream from the current version's files into new ones (the driver holds one
    batch at a time); the old files stay for time travel until a vacuum. Returns the version.
    """
    from deltalake import write_deltalake

    location = _local_or_uri(path)
    table = _open(location)
    if table is None:
        raise TableError(f"no Delta table at {path}")
    reader = table.to_pyarrow_dataset().scanner().to_reader()
    write_deltalake(
        location,
        reader,
        mode="overwrite",
        partition_by=list(partition_by),
        schema_mode="overwrite",
        commit_properties=CommitProperties(custom_metadata=dict(metadata)),
    )
    return DeltaTable(location).version()


def data_files(path: str) -> list[str]:
    """The data files of the table's current version (for readers outside Spark)."""
    table = _open(_local_or_uri(path))
    if table is None:
        raise TableError(f"no Delta table at {path}")
    return list(table.file_uris())


def write_file(path: str, data: bytes) -> str:
    """Write a plain file (a report) next to the tables, local or on object storage.

    The bytes go to a temporary name first and are then moved into place, so a reader never
    sees half a file. Returns the absolute path or URI written.
    """
    location = _local_or_uri(path)
    fs, target = _filesystem(location)
    fs.create_dir(posixpath.dirname(target), recursive=True)
    tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, target)
    return location


def table_exists(path: str) -> bool:
    """Whether ``path`` holds a Delta table (has a transaction log)."""
    return _open(_local_or_uri(path)) is not None


def table_version(path: str) -> int | None:
    """The latest version of the table at ``path``, or None if there is no table."""
    table = _open(_local_or_uri(path))
    return None if table is None else table.version()


def table_schema(path: str) -> pa.Schema:
    """The Arrow schema of the Delta table at ``path`` (read from its log, no Spark work)."""
    table = _open(_local_or_uri(path))
    if table is None:
        raise TableError(f"no Delta table at {path} (no _delta_log)")
    return pa.schema(table.schema().to_arrow())


def read_table(
    spark: SparkSession,
    path: str,
    *,
    backend: Backend,
    version: int | None = None,
    partitions: Mapping[str, Any] | None = None,
) -> DataFrame:
    """Read a Delta table as a distributed DataFrame.

    Args:
        spark: the active session.
        path: the table location.
        backend: ``spark`` uses Spark's Delta source; ``embedded`` resolves the files of the
            snapshot with delta-rs and reads them with Spark's Parquet reader.
        version: the table version to read (time travel); None reads the latest.
        partitions: keep only these partition values, e.g. ``{"as_of": date(2025, 12, 31)}``.
    """
    if backend == "spark":
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        df = reader.load(path)
        for key, value in (partitions or {}).items():
            df = df.where(F.col(key) == F.lit(value))
        return df
    location = _local_or_uri(path)
    try:
        table = DeltaTable(location, version=version)
    except TableNotFoundError as exc:
        raise TableError(f"no Delta table at {path} (no _delta_log)") from exc
    except Exception as exc:
        raise TableError(f"cannot read Delta table {path} at version {version}: {exc}") from exc
    spark_schema = from_arrow_schema(pa.schema(table.schema().to_arrow()))
    part_cols = list(table.metadata().partition_columns)
    data_fields = [f for f in spark_schema.fields if f.name not in part_cols]
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    groups: dict[tuple[Any, ...], list[str]] = {}
    for action in actions:
        part_key = tuple(action.get(f"partition.{c}") for c in part_cols)
        if partitions and any(
            _partition_string(action.get(f"partition.{k}")) != _partition_string(v)
            for k, v in partitions.items()
        ):
            continue
        groups.setdefault(part_key, []).append(posixpath.join(location, action["path"]))
    if not groups:
        return spark.createDataFrame([], spark_schema)
    types = {f.name: f.dataType for f in spark_schema.fields}
    frames = []
    for part_key, files in sorted(groups.items(), key=lambda kv: [str(v) for v in kv[0]]):
        part = spark.read.schema(T.StructType(data_fields)).parquet(*files)
        for col, value in zip(part_cols, part_key, strict=True):
            # CASE without ELSE keeps the column nullable, as the table schema declares it.
            part = part.withColumn(col, F.when(F.lit(True), F.lit(value)).cast(types[col]))
        frames.append(part.select(*spark_schema.names))
    return reduce(DataFrame.unionByName, frames)


def vacuum(path: str, *, retention_hours: int = 168, dry_run: bool = True) -> list[str]:
    """Delete files no reader needs: old versions' files and files of runs that never committed.

    Two kinds of files go: those delta-rs's vacuum finds (no longer referenced by any version
    within ``retention_hours``), and the staging directories of writes that never committed
    (a killed or failed run; their write id is in no commit of the log), once older than the
    retention. The retention guard: fewer than 24 hours is refused, because a reader of a
    recent version or a write still in progress may need those files.

    Returns:
        The paths deleted (or, with ``dry_run``, that would be deleted), relative to the table.
    """
    if retention_hours < 24:
        raise TableError("vacuum retention below 24 hours is refused: readers may need the files")
    location = _local_or_uri(path)
    table = _open(location)
    if table is None:
        raise TableError(f"no Delta table at {path}")
    removed = list(
        table.vacuum(
            retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=False
        )
    )
    committed = {e.get("segmentation.write_id") for e in table.history()}
    active = {posixpath.relpath(u, location).split("/", 1)[0] for u in table.file_uris()}
    fs, root = _filesystem(location)
    cutoff_ns = (time.time() - retention_hours * 3600) * 1e9
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=False)):
        name = posixpath.basename(info.path)
        if not name.startswith("data-") or name in committed or name in active:
            continue
        files = fs.get_file_info(pafs.FileSelector(info.path, recursive=True))
        newest = max([f.mtime_ns or 0 for f in files] + [info.mtime_ns or 0])
        if newest > cutoff_ns:
            continue  # maybe a write still in progress
        removed += [posixpath.relpath(f.path, root) for f in files if f.type == pafs.FileType.File]
        if not dry_run:
            fs.delete_dir(info.path)
    return sorted(removed)


# --- internals ---------------------------------------------------------------------------


def _commit_spark(spark: SparkSession, staged: StagedWrite) -> int:
    opts = staged.options
    assert staged.df is not None
    writer = staged.df.write.format("delta").mode(opts.mode)
    if opts.partition_by:
        writer = writer.partitionBy(*opts.partition_by)
    if opts.mode == "overwrite" and opts.replace_partitions:
        predicate = " AND ".join(
            f"{k} = '{_partition_string(v)}'" for k, v in opts.replace_partitions.items()
        )
        writer = writer.option("replaceWhere", predicate)
    if opts.idempotency_key:
        writer = writer.option("txnAppId", opts.idempotency_key).option("txnVersion", _TXN_VERSION)
    for key, value in opts.metadata.items():
        writer = writer.option(f"userMetadata.{key}", value)
    writer.save(staged.path)
    version = spark.sql(f"DESCRIBE HISTORY delta.`{staged.path}` LIMIT 1").first()
    staged.committed_version = int(version["version"]) if version else 0
    return staged.committed_version


def _collect_adds(
    path: str, staging_rel: str, schema: T.StructType, options: WriteOptions
) -> tuple[list[AddAction], int]:
    """AddActions for exactly the Parquet files this write's Spark job produced."""
    location = _local_or_uri(path)
    fs, staging_root = _filesystem(posixpath.join(location, staging_rel))
    infos = fs.get_file_info(pafs.FileSelector(staging_root, recursive=True))
    adds: list[AddAction] = []
    total = 0
    data_fields = {f.name: f for f in schema.fields if f.name not in options.partition_by}
    for info in sorted(infos, key=lambda i: i.path):
        name = posixpath.basename(info.path)
        if info.type != pafs.FileType.File:
            continue
        if not name.endswith(".parquet"):
            # Checksums and markers of the local filesystem: never part of the table.
            fs.delete_file(info.path)
            continue
        rel_in_stage = posixpath.relpath(info.path, staging_root)
        partition_values = _partition_values(rel_in_stage, options.partition_by)
        with fs.open_input_file(info.path) as handle:
            metadata = pq.ParquetFile(handle).metadata
        total += metadata.num_rows
        adds.append(
            AddAction(
                path=posixpath.join(staging_rel, rel_in_stage),
                size=int(info.size),
                partition_values=partition_values,
                modification_time=int(info.mtime_ns // 1_000_000) if info.mtime_ns else 0,
                data_change=True,
                stats=json.dumps(_file_stats(metadata, data_fields)),
            )
        )
    return adds, total


def _partition_values(rel_path: str, partition_by: Sequence[str]) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for segment in rel_path.split("/")[:-1]:
        key, sep, raw = segment.partition("=")
        if sep and key in partition_by:
            value = urllib.parse.unquote(raw)
            values[key] = None if value == _HIVE_NULL else value
    missing = set(partition_by) - set(values)
    if missing:
        raise TableError(f"file {rel_path} has no partition value for {sorted(missing)}")
    return values


def _file_stats(metadata: pq.FileMetaData, fields: Mapping[str, T.StructField]) -> dict[str, Any]:
    """Delta per-file statistics (numRecords, minValues, maxValues, nullCount) from a footer."""
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for ci in range(metadata.num_columns):
        column = metadata.row_group(0).column(ci) if metadata.num_row_groups else None
        if column is None:
            break
        name = column.path_in_schema
        spark_field = fields.get(name)
        if spark_field is None or not _has_stats(spark_field.dataType):
            continue
        lo = hi = None
        null_count = 0
        complete = True
        for rg in range(metadata.num_row_groups):
            stats = metadata.row_group(rg).column(ci).statistics
            if stats is None:
                complete = False
                break
            null_count += stats.null_count or 0
            if stats.has_min_max:
                lo = stats.min if lo is None else min(lo, stats.min)
                hi = stats.max if hi is None else max(hi, stats.max)
        if not complete:
            continue
        nulls[name] = int(null_count)
        if lo is not None and hi is not None and not _is_nan(lo) and not _is_nan(hi):
            mins[name] = _json_value(lo, spark_field.dataType)
            maxs[name] = _json_value(hi, spark_field.dataType)
    return {
        "numRecords": metadata.num_rows,
        "minValues": mins,
        "maxValues": maxs,
        "nullCount": nulls,
    }


def _has_stats(data_type: T.DataType) -> bool:
    return isinstance(
        data_type,
        T.IntegralType | T.FloatType | T.DoubleType | T.StringType | T.DateType | T.TimestampType,
    )


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _json_value(value: Any, data_type: T.DataType) -> Any:
    if isinstance(data_type, T.TimestampType):
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return None
    if isinstance(data_type, T.DateType):
        return value.isoformat() if isinstance(value, dt.date) else None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _partition_string(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _check_compatible(
    path: str, table: DeltaTable, arrow_schema: pa.Schema, opts: WriteOptions
) -> None:
    existing = pa.schema(table.schema().to_arrow())
    existing_parts = list(table.metadata().partition_columns)
    if existing_parts != list(opts.partition_by):
        raise TableError(
            f"table {path} is partitioned by {existing_parts}, this write by "
            f"{list(opts.partition_by)}: write to a new table location"
        )
    replacing_all = opts.mode == "overwrite" and not opts.replace_partitions
    old = {f.name: f.type for f in existing}
    new = {f.name: f.type for f in arrow_schema}
    if old != new and not replacing_all:
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
        raise TableError(
            f"table {path} has a different schema (added {added}, removed {removed}, "
            f"changed {changed}); the columns changed with the configuration: write to a new "
            "table location or replace the whole table"
        )


def _version_of_write(location: str, write_id: str) -> int:
    """The version our commit got: found by its write id, since other writers may commit too.

    delta-rs numbers ``history()`` entries by counting down from a second read of the latest
    version (delta-io/delta-rs#4488), so a commit landing during the call shifts every number.
    The history is trusted only when the latest version is the same before and after it.
    """
    for _ in range(20):
        table = DeltaTable(location)
        entries = table.history(limit=100)
        if DeltaTable(location).version() != table.version():
            continue  # another writer committed meanwhile: the numbering may be shifted
        for entry in entries:
            if entry.get("segmentation.write_id") == write_id:
                return int(entry["version"])
        break
    raise TableError(f"commit {write_id} to {location} is not in the table's recent history")


def _open(location: str) -> DeltaTable | None:
    try:
        return DeltaTable(location)
    except TableNotFoundError:
        return None


def _local_or_uri(path: str) -> str:
    """Absolute local path for plain paths; URIs (s3a://, file://...) unchanged."""
    if "://" in path:
        return path
    return os.path.abspath(path)


def _filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in location:
        return pafs.LocalFileSystem(), location
    uri = location.replace("s3a://", "s3://", 1)
    return pafs.FileSystem.from_uri(uri)
