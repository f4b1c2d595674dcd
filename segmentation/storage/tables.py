"""How jobs use the table contracts: locations, snapshot reads and writes, lineage.

Every writer and reader of an output table goes through a ``Table`` (``storage.contracts``, the
one place a table's schema and descriptions are spelled; re-exported here). Writes replace one
snapshot (its partition values) idempotently through ``delta_tables``, creating a table with its
contract (description, comments, properties); ``write_in_order`` runs a job's writes in its
documented publishing order and registers them in the catalog when ``storage.schema`` is set.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import StorageConfig
from segmentation.errors import InputError
from segmentation.storage import catalog, delta_tables
from segmentation.storage.contracts import (
    AS_OF,
    ATTITUDE_TRUTH,
    AUDIENCE,
    AUDIENCE_HISTORY,
    AUDIENCE_HISTORY_SCHEMA,
    AUDIENCE_MEMBERS,
    AUDIENCE_MEMBERS_SCHEMA,
    BY_NAME,
    CAMPAIGN_RESULTS,
    CAMPAIGN_RESULTS_SCHEMA,
    CANONICAL_EVENTS,
    CHANGE_DATA_FEED,
    COMMENT,
    COMMON,
    COMPOSITION,
    COMPOSITION_ROWS,
    COMPOSITION_SCHEMA,
    CONSENT,
    CUSTOMER_ID,
    CUSTOMER_KEY,
    CUSTOMER_VALUE,
    CUSTOMER_VALUE_SCHEMA,
    CUSTOMERS,
    DISTANCE,
    EVENTS,
    EXCLUSION_ROWS,
    EXCLUSIONS,
    EXCLUSIONS_SCHEMA,
    FACTOR_LOADING_ROWS,
    FACTOR_LOADINGS,
    FACTOR_LOADINGS_SCHEMA,
    FEATURES,
    GLOBAL_HOLDOUT,
    GROUP,
    HISTORY,
    HISTORY_SCHEMA,
    HOLDOUT,
    IDENTITY_CHANGES,
    IDENTITY_CHANGES_SCHEMA,
    IDENTITY_EDGES,
    IDENTITY_GUARDS,
    IDENTITY_GUARDS_SCHEMA,
    IDENTITY_MAP,
    IDENTITY_MAP_SCHEMA,
    IDENTITY_TRUTH,
    LINEAGE,
    MEMBERSHIP,
    MEMBERSHIP_SCHEMA,
    MIGRATION,
    MIGRATION_SCHEMA,
    MODEL_NAME,
    MODEL_VERSION,
    PROFILE_ROWS,
    PROFILES,
    PROFILES_SCHEMA,
    PROPERTIES,
    REASON,
    REJECTED,
    REJECTED_SCHEMA,
    RFM_SCORES,
    RFM_SCORES_SCHEMA,
    RUN_ID,
    SEGMENT_ID,
    SEGMENT_NAME,
    SUPPRESSION,
    SURVEY,
    TABLES,
    TREATMENT,
    TRUTH,
    VALIDATION,
    VALIDATION_ROWS,
    VALIDATION_SCHEMA,
    VALUE_PARAMETER_ROWS,
    VALUE_PARAMETERS,
    VALUE_PARAMETERS_SCHEMA,
    Table,
    column,
    description_of,
    schema,
)  # fmt: skip

# The contracts are re-exported: jobs and stages use ``tables.<NAME>`` (the functions below
# are public too).
__all__ = [
    "AS_OF",
    "ATTITUDE_TRUTH",
    "AUDIENCE",
    "AUDIENCE_HISTORY",
    "AUDIENCE_HISTORY_SCHEMA",
    "AUDIENCE_MEMBERS",
    "AUDIENCE_MEMBERS_SCHEMA",
    "BY_NAME",
    "CAMPAIGN_RESULTS",
    "CAMPAIGN_RESULTS_SCHEMA",
    "CANONICAL_EVENTS",
    "CHANGE_DATA_FEED",
    "COMMENT",
    "COMMON",
    "COMPOSITION",
    "COMPOSITION_ROWS",
    "COMPOSITION_SCHEMA",
    "CONSENT",
    "CUSTOMERS",
    "CUSTOMER_ID",
    "CUSTOMER_KEY",
    "CUSTOMER_VALUE",
    "CUSTOMER_VALUE_SCHEMA",
    "DISTANCE",
    "EVENTS",
    "EXCLUSIONS",
    "EXCLUSIONS_SCHEMA",
    "EXCLUSION_ROWS",
    "FACTOR_LOADINGS",
    "FACTOR_LOADINGS_SCHEMA",
    "FACTOR_LOADING_ROWS",
    "FEATURES",
    "GLOBAL_HOLDOUT",
    "GROUP",
    "HISTORY",
    "HISTORY_SCHEMA",
    "HOLDOUT",
    "IDENTITY_CHANGES",
    "IDENTITY_CHANGES_SCHEMA",
    "IDENTITY_EDGES",
    "IDENTITY_GUARDS",
    "IDENTITY_GUARDS_SCHEMA",
    "IDENTITY_MAP",
    "IDENTITY_MAP_SCHEMA",
    "IDENTITY_TRUTH",
    "LINEAGE",
    "MEMBERSHIP",
    "MEMBERSHIP_SCHEMA",
    "MIGRATION",
    "MIGRATION_SCHEMA",
    "MODEL_NAME",
    "MODEL_VERSION",
    "PROFILES",
    "PROFILES_SCHEMA",
    "PROFILE_ROWS",
    "PROPERTIES",
    "REASON",
    "REJECTED",
    "REJECTED_SCHEMA",
    "RFM_SCORES",
    "RFM_SCORES_SCHEMA",
    "RUN_ID",
    "SEGMENT_ID",
    "SEGMENT_NAME",
    "SUPPRESSION",
    "SURVEY",
    "TABLES",
    "TREATMENT",
    "TRUTH",
    "VALIDATION",
    "VALIDATION_ROWS",
    "VALIDATION_SCHEMA",
    "VALUE_PARAMETERS",
    "VALUE_PARAMETERS_SCHEMA",
    "VALUE_PARAMETER_ROWS",
    "Table",
    "column",
    "description_of",
    "schema",
]  # fmt: skip

REPORTS_DIR = "reports"


def path(storage: StorageConfig, table: Table) -> str:
    """The table's location under ``storage.warehouse``."""
    return storage.table_path(table.name)


def exists(spark: SparkSession, storage: StorageConfig, table: Table) -> bool:
    return delta_tables.exists(spark, path(storage, table))


def read(
    spark: SparkSession,
    storage: StorageConfig,
    table: Table,
    *,
    version: int | None = None,
    partitions: Mapping[str, Any] | None = None,
) -> DataFrame:
    """The table (at ``version``), optionally one snapshot's partitions."""
    return delta_tables.read(spark, path(storage, table), version=version, partitions=partitions)


def version(spark: SparkSession, storage: StorageConfig, table: Table) -> int | None:
    """The table's latest version (None: no table)."""
    return delta_tables.version(spark, path(storage, table))


def read_snapshot(
    spark: SparkSession,
    storage: StorageConfig,
    table: Table,
    as_of: dt.date,
    *,
    key: str,
    version: int | None = None,
) -> DataFrame:
    """The rows of ``table`` as of ``as_of``, at ``version`` (default: the current one).

    Raises:
        InputError: no table, or no rows for that date (naming ``key``, the config key that
            chose the date, and the job that writes the snapshot).
    """
    location = path(storage, table)
    if version is None:
        version = delta_tables.version(spark, location)
    rows = (
        None
        if version is None
        else delta_tables.read(spark, location, version=version, partitions={AS_OF: as_of})
    )
    if rows is None or rows.isEmpty():
        raise InputError(
            f"no {table.name} snapshot for {as_of} ({key}) at {location}: run build_features "
            "for that date first"
        )
    return rows


@dataclass(frozen=True)
class Lineage:
    """Which snapshot, segmentation, model version and run a model's rows belong to."""

    as_of: dt.date
    model_name: str
    model_version: int
    run_id: str

    def columns(self) -> list[Column]:
        return [
            F.lit(self.as_of).cast("date").alias(AS_OF),
            F.lit(self.model_name).alias(MODEL_NAME),
            F.lit(self.model_version).cast("int").alias(MODEL_VERSION),
            F.lit(self.run_id).alias(RUN_ID),
        ]


def conform(df: DataFrame, table: Table) -> DataFrame:
    """``df``'s columns in the contract's order and types (a missing column is an error)."""
    assert table.schema is not None, f"{table.name} has no fixed schema"
    missing = [f.name for f in table.schema.fields if f.name not in df.columns]
    if missing:
        raise ValueError(f"rows for {table.name} lack column(s) {missing}")
    return df.select(
        *[F.col(f.name).cast(f.dataType).alias(f.name, metadata=f.metadata) for f in table.schema]
    )


def with_lineage(rows: DataFrame, lineage: Lineage, table: Table) -> DataFrame:
    """Model rows (profiles, composition) with their lineage, conformed to ``table``."""
    return conform(rows.select(*lineage.columns(), "*"), table)


# --- writing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """One table write of a job: the table, the call that writes it (returns the version
    holding the rows), and where (the session and storage, for catalog registration)."""

    table: Table
    call: Callable[[], int]
    spark: SparkSession
    storage: StorageConfig

    @property
    def name(self) -> str:
        return self.table.name


def contract(table: Table, df: DataFrame) -> delta_tables.Contract:
    """What ``table`` says about itself, for the rows ``df`` it is written with."""
    return delta_tables.Contract(
        description=table.table_comment(),
        comments=table.comments(df.schema.fields),
        properties=dict(table.properties),
    )


def txn(run_key: str, *, job: str, parts: Mapping[str, Any]) -> delta_tables.Txn:
    """A write's Delta transaction id: job, run key, snapshot values (and model version).

    The run key is ``storage.run_key`` (an orchestrator's run id) or the job's MLflow run id:
    a retry with the same key commits nothing twice; another key, or other content (another
    model version), writes again.
    """
    values = ",".join(f"{k}={_text(v)}" for k, v in sorted(parts.items()))
    return delta_tables.Txn(f"segmentation:{job}:{run_key}:{values}")


def snapshot_write(
    spark: SparkSession,
    storage: StorageConfig,
    table: Table,
    df: DataFrame,
    *,
    job: str,
    run_id: str,
    snapshot: Mapping[str, Any],
    model_version: int | None = None,
) -> Write:
    """The write replacing one snapshot of ``table`` (its partition values), idempotently.

    Raises:
        ValueError: ``snapshot`` does not name exactly the table's partition columns.
    """
    if sorted(snapshot) != sorted(table.partition_by):
        raise ValueError(f"a {table.name} snapshot is one value of each of {table.partition_by}")
    extra = {} if model_version is None else {"v": model_version}
    options = delta_tables.WriteOptions(
        mode="overwrite",
        partition_by=table.partition_by,
        replace=dict(snapshot),
        txn=txn(storage.run_key or run_id, job=job, parts={**snapshot, **extra}),
        metadata={
            "job": job,
            "run_id": run_id,
            **{k: _text(v) for k, v in snapshot.items()},
            **({MODEL_VERSION: str(model_version)} if model_version is not None else {}),
        },
        evolve_schema=table.evolves,
        contract=contract(table, df),
    )
    rows = df if table.schema is None else conform(df, table)
    location = path(storage, table)
    return Write(
        table, lambda: delta_tables.write(spark, rows, location, options).version, spark, storage
    )


def write_in_order(writes: Sequence[Write]) -> dict[str, int]:
    """Run a job's writes one after another, in its documented order; returns the versions.

    Call it once everything is computed. Each write is atomic; Delta has no multi-table
    transaction, so a failure between two writes leaves the earlier ones written: a re-run of
    the same snapshot replaces them (no duplicates) and writes the rest.

    With ``storage.schema`` set, the tables are checked against the catalog first (a name taken
    at another location fails before anything is written) and each is registered right after
    its write (``catalog``).
    """
    registered = [w for w in writes if w.storage.registered]
    if registered:
        catalog.prepare(registered[0].spark, registered[0].storage, [w.table for w in registered])
    versions: dict[str, int] = {}
    for i, write in enumerate(writes):
        if i:
            fault_point("between-writes")
        versions[write.name] = write.call()
        if write.storage.registered:
            catalog.register(write.spark, write.storage, write.table)
    return versions


def fault_point(name: str) -> None:
    """Crash tests' hook: with SEGMENTATION_FAULT_POINT=name, signal and wait to be killed."""
    if os.environ.get("SEGMENTATION_FAULT_POINT") != name:
        return
    marker = os.environ.get("SEGMENTATION_FAULT_MARKER")
    if marker:
        Path(marker).write_text(name)
    time.sleep(600)


def _text(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)
