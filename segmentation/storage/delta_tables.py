"""Delta Lake I/O through delta-spark: the one way tables are written and read (DESIGN.md).

* A snapshot (one ``as_of``, one model) is replaced atomically with ``replaceWhere`` on its
  partition values: one new table version, never duplicate rows on a re-run.
* A retried run commits nothing twice: every write carries a Delta transaction identifier
  (``txnAppId``/``txnVersion``); a write whose identifier the table already recorded is skipped
  by Delta itself.
* Rows are upserted with ``DeltaTable.merge`` (the SCD2 history).
* Schema enforcement is Delta's: a write whose columns differ from the table fails with a
  message naming the table and the columns; a table whose contract allows it evolves
  additively (new columns) on purpose, with ``mergeSchema``.
* Concurrent writers are Delta's optimistic concurrency: a conflict becomes a ``TableError``
  naming the table and the snapshot.

Every commit records ``userMetadata`` (JSON: job, run id, the write's id), so the version a
write produced is found in the table's history even when other writers commit meanwhile.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.errors import TableError
from segmentation.storage.delta_base import (
    CONF_LOCK,
    TXN_APP_ID_CONF,
    TXN_VERSION_CONF,
    USER_METADATA_CONF,
    absolute,
    exists,
    partition_predicate,
    session_confs,
    sql_literal,
    translated,
)  # fmt: skip
from segmentation.storage.delta_contract import (
    Contract,
    TableState,
    commented,
    sync_contract,
    table_state,
)  # fmt: skip

__all__ = [
    "CONF_LOCK",
    "Contract",
    "Txn",
    "WriteOptions",
    "Written",
    "absolute",
    "exists",
    "history",
    "merge",
    "partition_columns",
    "partition_predicate",
    "read",
    "session_confs",
    "sql_literal",
    "version",
    "write",
]

log = logging.getLogger(__name__)
# How far back a write looks for its own commit in the table's history.
_HISTORY_SEARCH = 200

WriteMode = Literal["append", "overwrite"]


@dataclass(frozen=True)
class Txn:
    """A Delta transaction identifier: Delta skips a write whose ``app_id`` already recorded
    ``version`` or a higher one (``txnAppId``/``txnVersion``)."""

    app_id: str
    version: int = 1


@dataclass(frozen=True)
class WriteOptions:
    """How a DataFrame lands in a table.

    Attributes:
        mode: ``append`` adds rows; ``overwrite`` replaces the rows of ``replace`` (a snapshot)
            or, without ``replace``, the whole table.
        partition_by: partition columns of the table.
        replace: with ``overwrite``, the partition values of the snapshot replaced atomically
            (``replaceWhere``), e.g. ``{"as_of": date(2025, 12, 31)}``; other snapshots stay.
        txn: the write's transaction identifier (a retry with the same one commits nothing).
        metadata: recorded in the commit's ``userMetadata`` (job, run id, inputs).
        evolve_schema: new columns in the rows are added to the table (``mergeSchema``); any
            other schema difference still fails.
        overwrite_schema: a whole-table overwrite may change the schema (``overwriteSchema``).
        contract: the table's description, column comments and properties (None: none).
    """

    mode: WriteMode = "overwrite"
    partition_by: tuple[str, ...] = ()
    replace: Mapping[str, Any] | None = None
    txn: Txn | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    evolve_schema: bool = False
    overwrite_schema: bool = False
    contract: Contract | None = None


@dataclass(frozen=True)
class Written:
    """What a write did: the table version that holds its rows, and whether it committed now
    (False: Delta skipped it, the table already held this transaction)."""

    version: int
    committed: bool


def write(spark: SparkSession, df: DataFrame, path: str, options: WriteOptions) -> Written:
    """Write ``df`` to the Delta table at ``path`` (created on the first write) as one version.

    Args:
        spark: the active session (with Delta).
        df: the rows; their schema must equal the table's (or add columns, with
            ``evolve_schema``).
        path: the table location (local path or URI).
        options: mode, partitioning, the snapshot replaced, transaction id, commit metadata.

    Returns:
        The version holding the rows and whether this call committed it.

    Raises:
        TableError: the schema or partitioning conflicts with the table (naming the columns),
            rows fall outside the replaced snapshot, or a concurrent writer changed the same
            snapshot (naming it).
    """
    missing = [c for c in options.partition_by if c not in df.columns]
    if missing:
        raise TableError(f"cannot write {path}: partition column(s) {missing} not in the rows")
    existing = table_state(spark, path)
    if existing is not None:
        _check_compatible(path, existing, df.schema, options)
    write_id = uuid.uuid4().hex
    rows = commented(df, options.contract.comments) if options.contract else df
    if existing is None and options.contract is not None:
        if _create(spark, rows, path, options, write_id):
            return _written(spark, path, write_id, options.txn)
    writer = rows.write.format("delta").mode(options.mode)
    if options.partition_by:
        writer = writer.partitionBy(*options.partition_by)
    if options.mode == "overwrite" and options.replace:
        writer = writer.option("replaceWhere", partition_predicate(options.replace))
    if options.txn is not None:
        writer = writer.option("txnAppId", options.txn.app_id).option(
            "txnVersion", options.txn.version
        )
    if options.evolve_schema:
        writer = writer.option("mergeSchema", "true")
    if options.overwrite_schema and options.mode == "overwrite" and not options.replace:
        writer = writer.option("overwriteSchema", "true")
    writer = writer.option("userMetadata", _user_metadata(options, write_id))
    with translated(path, options.replace):
        writer.save(path)
    written = _written(spark, path, write_id, options.txn, empty=rows.isEmpty)
    if options.contract is not None:
        # mergeSchema adds columns without their comments: read the table's new schema then.
        added = existing is not None and not set(df.columns) <= set(existing.schema.fieldNames())
        state = None if added else existing
        sync_contract(spark, path, options.contract, options.metadata, state=state)
    return written


def merge(
    spark: SparkSession,
    source: DataFrame,
    path: str,
    *,
    keys: Sequence[str],
    delete_unmatched: str | None = None,
    txn: Txn | None = None,
    metadata: Mapping[str, str] | None = None,
    contract: Contract | None = None,
    scope: str | None = None,
    changed: Sequence[str] | None = None,
    keep: Sequence[str] = (),
) -> Written:
    """Upsert ``source`` into the table at ``path`` with one ``DeltaTable.merge``.

    Rows matching on ``keys`` are updated with the source's values, new ones inserted; target
    rows with no source row are deleted only where ``delete_unmatched`` (a SQL condition on
    the target, alias ``t``) holds, and kept otherwise.

    ``scope`` (a condition on ``t``) limits the rows the merge matches (one partition);
    ``changed``: a matched row is updated only when one of these columns differs (null-safe),
    so an unchanged row is not rewritten and a change data feed records nothing for it;
    ``keep``: columns an update leaves as the target has them (``since``).

    Raises:
        TableError: no table at ``path``, a schema conflict, or a concurrent writer.
    """
    existing = table_state(spark, path)
    if existing is None:
        raise TableError(f"no Delta table at {path} to merge into")
    opts = WriteOptions(txn=txn, metadata=dict(metadata or {}))
    _check_compatible(path, existing, source.schema, opts)
    write_id = uuid.uuid4().hex
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    if scope is not None:
        condition = f"({scope}) AND {condition}"
    update = None if changed is None else " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in changed)
    builder = DeltaTable.forPath(spark, path).alias("t").merge(source.alias("s"), condition)
    if keep:
        values: dict[str, Any] = {f"`{c}`": f"s.`{c}`" for c in source.columns if c not in keep}
        builder = builder.whenMatchedUpdate(condition=update, set=values)
    else:
        builder = builder.whenMatchedUpdateAll(condition=update)
    builder = builder.whenNotMatchedInsertAll()
    if delete_unmatched is not None:
        builder = builder.whenNotMatchedBySourceDelete(delete_unmatched)
    confs = {USER_METADATA_CONF: _user_metadata(opts, write_id)}
    if txn is not None:
        confs |= {TXN_APP_ID_CONF: txn.app_id, TXN_VERSION_CONF: str(txn.version)}
    with CONF_LOCK, session_confs(spark, confs), translated(path, None):
        builder.execute()
    written = _written(spark, path, write_id, txn)
    if contract is not None:
        sync_contract(spark, path, contract, opts.metadata, state=existing)
    return written


def read(
    spark: SparkSession,
    path: str,
    *,
    version: int | None = None,
    partitions: Mapping[str, Any] | None = None,
) -> DataFrame:
    """Read a Delta table through Delta (deletion vectors and column mapping honoured).

    Args:
        spark: the active session.
        path: the table location.
        version: the table version to read (time travel); None reads the latest.
        partitions: keep only these partition values, e.g. ``{"as_of": date(2025, 12, 31)}``.

    Raises:
        TableError: no Delta table at ``path``, or no such version.
    """
    if not exists(spark, path):
        raise TableError(f"no Delta table at {path} (no _delta_log)")
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    try:
        df = reader.load(path)
    except AnalysisException as exc:
        raise TableError(f"cannot read Delta table {path} at version {version}: {exc}") from exc
    for key, value in (partitions or {}).items():
        df = df.where(F.col(key) == F.lit(value))
    return df


def version(spark: SparkSession, path: str) -> int | None:
    """The latest version of the table at ``path``, or None if there is no table."""
    if not exists(spark, path):
        return None
    row = DeltaTable.forPath(spark, absolute(path)).history(1).select("version").first()
    return None if row is None else int(row["version"])


def partition_columns(spark: SparkSession, path: str) -> list[str] | None:
    """The table's partition columns (None when there is no table)."""
    found = table_state(spark, path)
    return None if found is None else found.partitions


def history(spark: SparkSession, path: str, limit: int = 20) -> list[dict[str, Any]]:
    """The latest commits, newest first: version, operation, engineInfo, userMetadata."""
    rows = (
        DeltaTable.forPath(spark, absolute(path))
        .history(limit)
        .select("version", "operation", "engineInfo", "userMetadata", "operationParameters")
        .collect()
    )
    return [r.asDict() for r in rows]


def rows_written(spark: SparkSession, path: str, version: int) -> int | None:
    """The rows the commit ``version`` wrote (Delta's ``numOutputRows`` operation metric),
    or None when that commit is not among the latest 20 or has no such metric."""
    rows = (
        DeltaTable.forPath(spark, absolute(path))
        .history(20)
        .where(F.col("version") == version)
        .select(F.col("operationMetrics")["numOutputRows"].alias("rows"))
        .collect()
    )
    return int(rows[0]["rows"]) if rows and rows[0]["rows"] is not None else None


def schema_changes(old: T.StructType, new: T.StructType) -> tuple[list[str], list[str], list[str]]:
    """The columns ``new`` adds to ``old``, removes from it, and whose type it changes
    (``name (old -> new)``): what a write of ``new`` rows to a table of ``old`` would meet."""
    before = {f.name: f.dataType for f in old.fields}
    after = {f.name: f.dataType for f in new.fields}
    changed = sorted(
        f"{k} ({before[k].simpleString()} -> {after[k].simpleString()})"
        for k in set(before) & set(after)
        if before[k] != after[k]
    )
    return sorted(set(after) - set(before)), sorted(set(before) - set(after)), changed


# --- internals ---------------------------------------------------------------------------


def _check_compatible(
    path: str,
    existing: TableState,
    schema: T.StructType,
    opts: WriteOptions,
) -> None:
    """Name the columns of a schema or partitioning conflict before Delta refuses the write."""
    table_schema, table_parts = existing.schema, existing.partitions
    replacing_all = opts.mode == "overwrite" and not opts.replace and opts.overwrite_schema
    if replacing_all:
        return
    if opts.partition_by and table_parts != list(opts.partition_by):
        raise TableError(
            f"table {path} is partitioned by {table_parts}, this write by "
            f"{list(opts.partition_by)}: write to a new table location"
        )
    added, removed, changed = schema_changes(table_schema, schema)
    if not (added or removed or changed) or (opts.evolve_schema and not removed and not changed):
        return
    raise TableError(
        f"table {path} has a different schema: columns added {added}, removed {removed}, "
        f"changed {changed}. Delta enforces the table's schema: write to a new table location, "
        "or replace the whole table"
        + ("" if opts.evolve_schema else " (this table does not evolve its schema)")
    )


def _create(
    spark: SparkSession, rows: DataFrame, path: str, options: WriteOptions, write_id: str
) -> bool:
    """Create the table with its first rows and its contract in one commit (CREATE TABLE AS
    SELECT: description, comments, partitioning and properties); False when another writer
    created it first (then the caller writes as to any existing table)."""
    assert options.contract is not None
    writer = rows.writeTo(f"delta.`{absolute(path)}`").using("delta")
    if options.partition_by:
        writer = writer.partitionedBy(*[F.col(c) for c in options.partition_by])
    if options.contract.description:
        writer = writer.tableProperty("comment", options.contract.description)
    for key, value in options.contract.properties.items():
        writer = writer.tableProperty(key, value)
    if options.txn is not None:
        writer = writer.option("txnAppId", options.txn.app_id).option(
            "txnVersion", str(options.txn.version)
        )
    # CREATE TABLE AS SELECT records userMetadata from the session, not from an option.
    confs = {USER_METADATA_CONF: _user_metadata(options, write_id)}
    with CONF_LOCK, session_confs(spark, confs), translated(path, None):
        try:
            writer.create()
        except AnalysisException as exc:
            if "ALREADY_EXISTS" in str(exc).upper().replace(" ", "_"):
                return False
            raise
    return True


def _written(
    spark: SparkSession,
    path: str,
    write_id: str,
    txn: Txn | None,
    *,
    empty: Callable[[], bool] | None = None,
) -> Written:
    """The version our write produced, found by its write id (others may have committed).

    Delta commits nothing for rows that change nothing (an append of no rows, no rows over an
    empty snapshot): when ``empty()`` says the rows were empty, the table's latest version
    holds them, not committed now."""
    entries = history(spark, path, _HISTORY_SEARCH)
    for entry in entries:
        meta = _parse_metadata(entry.get("userMetadata"))
        if meta.get("write_id") == write_id:
            return Written(int(entry["version"]), True)
    if txn is not None:
        for entry in entries:
            meta = _parse_metadata(entry.get("userMetadata"))
            if meta.get("txn_app_id") == txn.app_id:
                log.info("%s already holds transaction %s: not committed again", path, txn.app_id)
                return Written(int(entry["version"]), False)
        log.info("%s already holds transaction %s: not committed again", path, txn.app_id)
        return Written(int(entries[0]["version"]), False)
    if empty is not None and entries and empty():
        log.info("%s: no rows to write, nothing committed", path)
        return Written(int(entries[0]["version"]), False)
    raise TableError(f"write {write_id} to {path} is not in the table's recent history")


def _user_metadata(opts: WriteOptions, write_id: str) -> str:
    meta = {**opts.metadata, "write_id": write_id}
    if opts.txn is not None:
        meta["txn_app_id"] = opts.txn.app_id
    return json.dumps(meta, sort_keys=True)


def _parse_metadata(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
