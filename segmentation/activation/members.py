"""The audiences' tables: ``audience_members`` (the current state, kept by one MERGE per
audience with change data feed) and ``audience_history`` (SCD2).

``audience_members``: the MERGE of an audience inserts who joined, updates only the rows whose
``segment_id``, ``segment_name``, ``group`` or ``channel`` changed (``since`` kept), and deletes
who left (``WHEN NOT MATCHED BY SOURCE`` scoped to the audience). An unchanged member is not
rewritten, so the change data feed holds exactly the joiners (insert), movers (update) and
leavers (delete): what a reverse-ETL tool syncs.

``audience_history``: one row per audience, customer and stay with one segment, group and
channel; ``valid_from`` the scoring that opened it, ``valid_to`` the one that closed it
(exclusive). Re-building the latest date first undoes it (a replay is idempotent); building a
date before the audience's latest is refused (it would rewrite what a measured campaign read).
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import StorageConfig
from segmentation.errors import InputError
from segmentation.storage import delta_tables, tables
from segmentation.storage.delta_base import sql_literal
from segmentation.storage.tables import (
    AUDIENCE,
    AUDIENCE_HISTORY,
    AUDIENCE_MEMBERS,
    CUSTOMER_ID,
    GROUP,
    SEGMENT_ID,
    SEGMENT_NAME,
)

CHANGED = (SEGMENT_ID, SEGMENT_NAME, GROUP, "channel")
"""A member's row is updated only when one of these changed."""
_STAY = (SEGMENT_ID, GROUP, "channel")
"""A new history row opens when one of these changed."""


def member_rows(members: DataFrame, lineage: tables.Lineage) -> DataFrame:
    """``audience_members`` rows of one audience's members (``group`` not null)."""
    rows = members.select(
        AUDIENCE, CUSTOMER_ID, SEGMENT_ID, SEGMENT_NAME, GROUP, "channel",
        F.lit(lineage.as_of).cast("date").alias("since"),
        F.lit(lineage.as_of).cast("date").alias(tables.AS_OF), "model_name", "model_version",
        F.lit(lineage.run_id).alias(tables.RUN_ID),
    )  # fmt: skip
    return tables.conform(rows, AUDIENCE_MEMBERS)


def latest_build(history: DataFrame | None, audience: str) -> dt.date | None:
    """The latest scoring date in the audience's history (None: never built)."""
    if history is None:
        return None
    row = (
        history.where(F.col(AUDIENCE) == audience)
        .agg(F.greatest(F.max("valid_from"), F.max("valid_to")).alias("d"))
        .first()
    )
    return None if row is None else row["d"]


def check_forward(history: DataFrame | None, audience: str, as_of: dt.date) -> None:
    """Refuse a build before the audience's latest one (naming both dates)."""
    latest = latest_build(history, audience)
    if latest is not None and as_of < latest:
        raise InputError(
            f"audience {audience} was last built as of {latest}; building it as of {as_of} "
            "(features.as_of) would rewrite the history campaigns are measured against: build "
            f"{latest} or a later date"
        )


def history_rows(history: DataFrame | None, members: DataFrame, as_of: dt.date) -> DataFrame:
    """The audience's whole history after the build of ``as_of`` (``members``: its rows with
    ``group`` not null; ``history``: the audience's current rows, or None)."""
    day = F.lit(as_of).cast("date")
    new = members.select(AUDIENCE, CUSTOMER_ID, SEGMENT_ID, SEGMENT_NAME, GROUP, "channel",
                         "model_name", "model_version")  # fmt: skip
    if history is None:
        return _stays(new, day, F.lit(None).cast("date"))
    undone = history.where(F.col("valid_from") != day).withColumn(
        "valid_to", F.when(F.col("valid_to") != day, F.col("valid_to"))
    )
    closed = undone.where(F.col("valid_to").isNotNull())
    open_ = undone.where(F.col("valid_to").isNull()).alias("o")
    joined = open_.join(new.alias("m"), on=[AUDIENCE, CUSTOMER_ID], how="full")
    same = F.lit(True)
    for c in _STAY:
        same = same & F.col(f"o.{c}").eqNullSafe(F.col(f"m.{c}"))
    has_open, has_new = F.col("o.valid_from").isNotNull(), F.col("m.group").isNotNull()
    names = [f.name for f in AUDIENCE_HISTORY.schema or []]
    ids = (AUDIENCE, CUSTOMER_ID)
    old = [F.col(f"o.{c}") for c in names if c not in ids]
    kept = joined.where(has_open & has_new & same).select(*ids, *old)
    ended = joined.where(has_open & ~(has_new & same)).select(*ids, *old)
    opened = joined.where(has_new & ~(has_open & same)).select(
        *ids, *[F.col(f"m.{c}") for c in new.columns if c not in ids]
    )
    return (
        _conform(closed)
        .unionByName(_conform(kept))
        .unionByName(_stays(ended, F.col("valid_from"), day, keep_from=True))
        .unionByName(_stays(opened, day, F.lit(None).cast("date")))
    )


def _stays(
    df: DataFrame, valid_from: Column, valid_to: Column, *, keep_from: bool = False
) -> DataFrame:
    rows = df.withColumn("valid_to", valid_to)
    if not keep_from:
        rows = rows.withColumn("valid_from", valid_from)
    return _conform(rows.withColumn("is_current", F.col("valid_to").isNull()))


def _conform(df: DataFrame) -> DataFrame:
    return tables.conform(df, AUDIENCE_HISTORY)


def _scope(audience: str) -> str:
    return f"t.{AUDIENCE} = {sql_literal(audience)}"


def _ensure(spark: SparkSession, storage: StorageConfig, table: tables.Table, rows: DataFrame,
            metadata: dict[str, str]) -> str:  # fmt: skip
    """The table's path, created empty with its contract (change data feed) when absent."""
    path = tables.path(storage, table)
    if not delta_tables.exists(spark, path):
        options = delta_tables.WriteOptions(
            mode="append", partition_by=table.partition_by, metadata=metadata,
            contract=tables.contract(table, rows),
        )  # fmt: skip
        assert table.schema is not None
        delta_tables.write(spark, spark.createDataFrame([], table.schema), path, options)
    return path


def merge_members(spark: SparkSession, storage: StorageConfig, rows: DataFrame, audience: str,
                  txn: delta_tables.Txn, metadata: dict[str, str]) -> int:  # fmt: skip
    """One MERGE of the audience's members into ``audience_members``; the version."""
    path = _ensure(spark, storage, AUDIENCE_MEMBERS, rows, metadata)
    return delta_tables.merge(
        spark, rows, path, keys=(AUDIENCE, CUSTOMER_ID), scope=_scope(audience),
        delete_unmatched=_scope(audience), changed=CHANGED, keep=("since",), txn=txn,
        metadata=metadata, contract=tables.contract(AUDIENCE_MEMBERS, rows),
    ).version  # fmt: skip


def merge_history(spark: SparkSession, storage: StorageConfig, rows: DataFrame, audience: str,
                  txn: delta_tables.Txn, metadata: dict[str, str]) -> int:  # fmt: skip
    """One MERGE of the audience's history rows into ``audience_history``; the version."""
    path = _ensure(spark, storage, AUDIENCE_HISTORY, rows, metadata)
    names = [f.name for f in AUDIENCE_HISTORY.schema or []]
    keys = (AUDIENCE, CUSTOMER_ID, "valid_from")
    return delta_tables.merge(
        spark, rows, path, keys=keys, scope=_scope(audience), delete_unmatched=_scope(audience),
        changed=[c for c in names if c not in keys], txn=txn, metadata=metadata,
        contract=tables.contract(AUDIENCE_HISTORY, rows),
    ).version  # fmt: skip
