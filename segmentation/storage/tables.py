"""The table contracts, in one place: names, schemas, partitioning, lineage, snapshot I/O.

Every writer and reader of an output table goes through a ``Table`` here (DESIGN.md, "Data
contracts"); nothing else spells a table's schema. Writes replace one snapshot (its partition
values) idempotently through ``delta_tables``; ``write_in_order`` runs a job's writes in its
documented publishing order.
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
from pyspark.sql import types as T

from segmentation.config import StorageConfig
from segmentation.errors import InputError
from segmentation.storage import delta_tables

CUSTOMER_ID = "customer_id"
AS_OF = "as_of"
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
RUN_ID = "run_id"
SEGMENT_ID = "segment_id"
SEGMENT_NAME = "segment_name"
DISTANCE = "distance"
REASON = "reason"


def _fields(*spec: tuple[str, T.DataType, bool]) -> list[T.StructField]:
    return [T.StructField(name, data_type, nullable) for name, data_type, nullable in spec]


_S, _I, _L, _D = T.StringType(), T.IntegerType(), T.LongType(), T.DoubleType()
_DATE, _TS, _B = T.DateType(), T.TimestampType(), T.BooleanType()

# The canonical events every reader maps the user's columns to (``sources``).
CANONICAL_EVENTS = T.StructType(
    _fields(
        (CUSTOMER_ID, _S, True), ("event_time", _TS, True), ("amount", _D, True),
        ("event_type", _S, True), ("category", _S, True), ("channel", _S, True),
        ("device", _S, True), ("quantity", _D, True), ("discount", _D, True),
        ("event_id", _S, True),
    )
)  # fmt: skip
# The lineage of a model's rows: which segmentation, version and run wrote them.
LINEAGE = _fields((AS_OF, _DATE, True), (MODEL_NAME, _S, True), (MODEL_VERSION, _I, True),
                  (RUN_ID, _S, True))  # fmt: skip


@dataclass(frozen=True)
class Table:
    """One output table's contract.

    Attributes:
        name: the table's directory under ``storage.warehouse``.
        partition_by: partition columns; a snapshot is one value of each.
        schema: the columns, in order (None: defined by the job's configuration, e.g. the
            feature columns of ``customer_features``).
        evolves: new columns are added on purpose (``mergeSchema``); nothing else changes.
    """

    name: str
    partition_by: tuple[str, ...] = ()
    schema: T.StructType | None = None
    evolves: bool = False


EVENTS = Table("events")
CUSTOMERS = Table("customers")
TRUTH = Table("segment_truth")
FEATURES = Table("customer_features", (AS_OF,), evolves=True)
REJECTED_SCHEMA = T.StructType(
    [*CANONICAL_EVENTS.fields, *_fields((REASON, _S, True), (AS_OF, _DATE, True),
                                        (RUN_ID, _S, True))]
)  # fmt: skip
REJECTED = Table("rejected_events", (AS_OF,), REJECTED_SCHEMA)
MEMBERSHIP_SCHEMA = T.StructType(
    _fields(
        (CUSTOMER_ID, _S, True), (AS_OF, _DATE, True), (SEGMENT_ID, _I, True),
        (SEGMENT_NAME, _S, True), (DISTANCE, _D, True), (MODEL_NAME, _S, True),
        (MODEL_VERSION, _I, True), (RUN_ID, _S, True), ("scored_at", _TS, True),
    )
)  # fmt: skip
MEMBERSHIP = Table("segment_membership", (MODEL_NAME, AS_OF), MEMBERSHIP_SCHEMA)
HISTORY_SCHEMA = T.StructType(
    _fields(
        (CUSTOMER_ID, _S, False), (MODEL_NAME, _S, False), (SEGMENT_ID, _I, False),
        (SEGMENT_NAME, _S, True), ("valid_from", _DATE, False), ("valid_to", _DATE, True),
        ("is_current", _B, False), (MODEL_VERSION, _I, False),
    )
)  # fmt: skip
HISTORY = Table("segment_membership_history", (), HISTORY_SCHEMA)
MIGRATION_SCHEMA = T.StructType(
    _fields(
        (AS_OF, _DATE, True), ("previous_as_of", _DATE, True), (MODEL_NAME, _S, True),
        ("from_segment_id", _I, True), ("from_segment_name", _S, True),
        ("to_segment_id", _I, True), ("to_segment_name", _S, True), ("customers", _L, True),
        ("share_of_from", _D, True),
    )
)  # fmt: skip
MIGRATION = Table("segment_migration", (MODEL_NAME, AS_OF), MIGRATION_SCHEMA)
# segment_profiles rows without their lineage (what ``profiling`` produces).
PROFILE_ROWS = T.StructType(
    _fields(
        (SEGMENT_ID, _I, False), (SEGMENT_NAME, _S, False), ("size", _L, False),
        ("share", _D, False), ("feature", _S, False), ("mean", _D, True), ("stddev", _D, True),
        ("min", _D, True), ("p25", _D, True), ("median", _D, True), ("p75", _D, True),
        ("max", _D, True), ("population_mean", _D, True), ("std_diff", _D, True),
    )
)  # fmt: skip
PROFILES_SCHEMA = T.StructType([*LINEAGE, *PROFILE_ROWS])
PROFILES = Table("segment_profiles", (MODEL_NAME, MODEL_VERSION), PROFILES_SCHEMA)
# segment_composition rows without their lineage and segment name (what ``explain`` produces).
COMPOSITION_ROWS = T.StructType(
    _fields(
        (SEGMENT_ID, _I, False), ("attribute", _S, False), ("value", _S, False),
        ("customers", _L, False), ("share_of_segment", _D, False),
        ("population_share", _D, False), ("sensitive", _B, False),
    )
)  # fmt: skip
COMPOSITION_SCHEMA = T.StructType(
    [*LINEAGE, COMPOSITION_ROWS[SEGMENT_ID], T.StructField(SEGMENT_NAME, _S, False),
     *COMPOSITION_ROWS.fields[1:]]
)  # fmt: skip
COMPOSITION = Table("segment_composition", (MODEL_NAME, MODEL_VERSION), COMPOSITION_SCHEMA)
RFM_SCORES_SCHEMA = T.StructType(
    _fields(
        (AS_OF, _DATE, True), (MODEL_NAME, _S, True), (MODEL_VERSION, _I, True),
        (CUSTOMER_ID, _S, True), ("r_score", _I, True), ("f_score", _I, True),
        ("m_score", _I, True), ("rfm_cell", _S, True), (SEGMENT_ID, _I, True),
        (SEGMENT_NAME, _S, True), (RUN_ID, _S, True),
    )
)  # fmt: skip
RFM_SCORES = Table("rfm_scores", (AS_OF,), RFM_SCORES_SCHEMA)
# segment_validation rows without their lineage (``validation.Measure``); segment_id null is
# a measure of the whole segmentation.
VALIDATION_ROWS = T.StructType(
    _fields(
        (SEGMENT_ID, _I, True), ("measure", _S, False), ("value", _D, True),
        ("ci_lower", _D, True), ("ci_upper", _D, True), ("verdict", _S, True),
    )
)  # fmt: skip
VALIDATION_SCHEMA = T.StructType([*LINEAGE, *VALIDATION_ROWS])
VALIDATION = Table("segment_validation", (MODEL_NAME, MODEL_VERSION), VALIDATION_SCHEMA)
# The attitudinal basis (``workflows/attitudes``): one row per item and factor. ``loading``
# is the rotated pattern loading, ``structure`` the item-factor correlation (oblique rotations;
# equal to the loading for orthogonal ones), ``score_weight`` the regression weight that scores
# the factor from the standardised item; communality and uniqueness are per item, explained
# variance (share of the items' total variance) per factor.
FACTOR_LOADING_ROWS = T.StructType(
    _fields(
        ("item", _S, False), ("factor", _I, False), ("factor_name", _S, False),
        ("loading", _D, False), ("structure", _D, False), ("score_weight", _D, False),
        ("communality", _D, False), ("uniqueness", _D, False),
        ("explained_variance", _D, False),
    )
)  # fmt: skip
FACTOR_LOADINGS_SCHEMA = T.StructType([*LINEAGE, *FACTOR_LOADING_ROWS])
FACTOR_LOADINGS = Table("factor_loadings", (MODEL_NAME, MODEL_VERSION), FACTOR_LOADINGS_SCHEMA)
# Respondents a training left out, with the reason (never silently dropped).
EXCLUSION_ROWS = T.StructType(
    _fields((CUSTOMER_ID, _S, True), (REASON, _S, False), ("missing_items", _I, True),
            ("items", _I, False))
)  # fmt: skip
EXCLUSIONS_SCHEMA = T.StructType([*LINEAGE, *EXCLUSION_ROWS])
EXCLUSIONS = Table("survey_exclusions", (MODEL_NAME, AS_OF), EXCLUSIONS_SCHEMA)
# Customer value (``workflows/value``): one row per customer with a purchase up to as_of, the
# BTYD summary in value.time_unit and the model's expectations over value.horizon_periods.
CUSTOMER_VALUE_SCHEMA = T.StructType(
    _fields(
        (CUSTOMER_ID, _S, False), (AS_OF, _DATE, True), (MODEL_NAME, _S, True),
        (MODEL_VERSION, _I, True), (RUN_ID, _S, True), ("x", _L, False), ("t_x", _D, False),
        ("T", _D, False), ("repeat_value", _D, True), ("p_alive", _D, False),
        ("expected_purchases", _D, False), ("expected_order_value", _D, False),
        ("clv", _D, False), ("time_unit", _S, False), ("horizon_periods", _D, False),
        ("flag", _S, True),
    )
)  # fmt: skip
CUSTOMER_VALUE = Table("customer_value", (MODEL_NAME, AS_OF), CUSTOMER_VALUE_SCHEMA)
VALUE_PARAMETER_ROWS = T.StructType(
    _fields(
        ("model", _S, False), ("parameter", _S, False), ("estimate", _D, True),
        ("std_error", _D, True),
    )
)  # fmt: skip
VALUE_PARAMETERS_SCHEMA = T.StructType([*LINEAGE, *VALUE_PARAMETER_ROWS])
VALUE_PARAMETERS = Table(
    "value_model_parameters", (MODEL_NAME, MODEL_VERSION), VALUE_PARAMETERS_SCHEMA
)
# The generator's survey sample and its planted attitudinal segments.
SURVEY = Table("survey_responses")
ATTITUDE_TRUTH = Table("attitude_truth")
# Identity stitching (``workflows/identities``): one snapshot per as_of of every identifier
# seen up to that day and the stitched customer key it belongs to (first_seen / last_seen: its
# first and last sighting, null for undated ones); the keys a run merged or split, against the
# previous snapshot; and what the guards held back (an identifier linked to too many others of
# a type, never used as an edge; a component above identity.max_component_size, kept and
# reported).
CUSTOMER_KEY = "customer_key"
IDENTITY_MAP_SCHEMA = T.StructType(
    _fields(
        ("identifier_type", _S, False), ("identifier", _S, False), (CUSTOMER_KEY, _S, False),
        ("first_seen", _TS, True), ("last_seen", _TS, True), (AS_OF, _DATE, True),
    )
)  # fmt: skip
IDENTITY_MAP = Table("identity_map", (AS_OF,), IDENTITY_MAP_SCHEMA)
IDENTITY_CHANGES_SCHEMA = T.StructType(
    _fields(
        (AS_OF, _DATE, True), ("previous_as_of", _DATE, True), ("change", _S, False),
        ("from_key", _S, False), ("to_key", _S, False), ("identifiers", _L, False),
        (RUN_ID, _S, True),
    )
)  # fmt: skip
IDENTITY_CHANGES = Table("identity_changes", (AS_OF,), IDENTITY_CHANGES_SCHEMA)
IDENTITY_GUARDS_SCHEMA = T.StructType(
    _fields(
        (AS_OF, _DATE, True), (REASON, _S, False), (CUSTOMER_KEY, _S, False),
        ("identifier_type", _S, True), ("identifier", _S, True), ("linked_type", _S, True),
        ("degree", _L, True), ("limit", _L, True), ("component_size", _L, True),
        (RUN_ID, _S, True),
    )
)  # fmt: skip
IDENTITY_GUARDS = Table("identity_guards", (AS_OF,), IDENTITY_GUARDS_SCHEMA)
# The generator's identity sample (generator.identities): its login edges and, per planted
# identifier (normalised), the customer it belongs to (a shared device: several rows).
IDENTITY_EDGES = Table("identity_edges")
IDENTITY_TRUTH = Table("identity_truth")
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
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in table.schema])


def with_lineage(rows: DataFrame, lineage: Lineage, table: Table) -> DataFrame:
    """Model rows (profiles, composition) with their lineage, conformed to ``table``."""
    return conform(rows.select(*lineage.columns(), "*"), table)


# --- writing -------------------------------------------------------------------------------

Write = tuple[str, Callable[[], int]]
"""A table name and the call that writes it (returns the version holding the rows)."""


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
    )
    rows = df if table.schema is None else conform(df, table)
    location = path(storage, table)
    return table.name, lambda: delta_tables.write(spark, rows, location, options).version


def write_in_order(writes: Sequence[Write]) -> dict[str, int]:
    """Run a job's writes one after another, in its documented order; returns the versions.

    Call it once everything is computed. Each write is atomic; Delta has no multi-table
    transaction, so a failure between two writes leaves the earlier ones written: a re-run of
    the same snapshot replaces them (no duplicates) and writes the rest.
    """
    versions: dict[str, int] = {}
    for i, (name, write) in enumerate(writes):
        if i:
            fault_point("between-writes")
        versions[name] = write()
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
