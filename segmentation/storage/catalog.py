"""Registering the output tables in a catalog, so warehouses and BI find them by name.

Off by default: with ``storage.schema`` set, every table a job writes is registered in
``storage.catalog``.``storage.schema`` (the session's current catalog when ``storage.catalog`` is
null) as an external Delta table at its storage location, in the same job, after its write;
tables with a ``current_view`` get that view of their latest ``as_of`` too. Re-runs are
idempotent (``CREATE TABLE IF NOT EXISTS``, ``CREATE OR REPLACE VIEW``). A name that the
catalog already holds at another location is an error naming both locations, raised before the
job writes anything.

The catalog is whatever the session is configured with: Unity Catalog on Databricks, a Hive
metastore or AWS Glue on EMR, or Spark's embedded Hive metastore (Derby) that
``storage.metastore`` puts in a local folder (``runtime.session``). Descriptions and comments
live in the Delta tables themselves (``delta_contract``), which the catalog shows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession

from segmentation.config import StorageConfig
from segmentation.errors import TableError
from segmentation.runtime import session
from segmentation.storage.contracts import AS_OF, MODEL_NAME, Table
from segmentation.storage.delta_base import absolute, first_line, sql_literal

log = logging.getLogger(__name__)


def quoted(*parts: str) -> str:
    return ".".join("`" + p.replace("`", "``") + "`" for p in parts)


def schema_name(storage: StorageConfig) -> str:
    """The quoted ``catalog.schema`` (or ``schema``) the tables are registered in."""
    assert storage.schema_ is not None, "storage.schema is not set"
    parts = [storage.catalog] if storage.catalog else []
    return quoted(*parts, storage.schema_)


def name(storage: StorageConfig, table: str) -> str:
    """A table's or view's quoted catalog name."""
    return f"{schema_name(storage)}.{quoted(table)}"


def location(storage: StorageConfig, table: Table) -> str:
    return absolute(storage.table_path(table.name))


def prepare(spark: SparkSession, storage: StorageConfig, contracts: Sequence[Table]) -> None:
    """Before a job writes: the schema exists, and none of ``contracts`` is registered at
    another location.

    Raises:
        TableError: the catalog cannot be reached or refuses the schema, or a table name is
            taken at another location (naming both).
    """
    if spark.conf.get("spark.sql.catalogImplementation", "in-memory") == "in-memory":
        log.warning(
            "storage.schema %s: this session's catalog is Spark's in-memory one, so the tables "
            "are registered for this process only; set storage.metastore (a local folder) or "
            "configure a metastore (spark.sql.catalogImplementation: hive)", storage.schema_,
        )  # fmt: skip
    _sql(spark, storage, f"CREATE SCHEMA IF NOT EXISTS {schema_name(storage)}",
         "create the schema")  # fmt: skip
    for table in contracts:
        check_location(spark, storage, table)


def check_location(spark: SparkSession, storage: StorageConfig, table: Table) -> None:
    """Fail when the catalog holds ``table``'s name at another location (or not as Delta)."""
    full = name(storage, table.name)
    if not _exists(spark, storage, full):
        return
    try:
        row = spark.sql(f"DESCRIBE DETAIL {full}").first()
    except AnalysisException as exc:
        raise TableError(
            f"catalog table {full} exists and is not a Delta table ({first_line(exc)}): drop "
            f"it or register the outputs in another schema (storage.schema)"
        ) from exc
    found = str(row["location"]) if row is not None else ""
    wanted = location(storage, table)
    if _normal(found) != _normal(wanted):
        raise TableError(
            f"catalog table {full} is registered at {found}, but this job writes "
            f"{table.name} to {wanted} (storage.warehouse): drop that table from the catalog, "
            f"or register these outputs in another schema (storage.schema)"
        )


def register(spark: SparkSession, storage: StorageConfig, table: Table) -> None:
    """Register ``table`` (and its current view) after a write; idempotent."""
    full = name(storage, table.name)
    _sql(
        spark,
        storage,
        f"CREATE TABLE IF NOT EXISTS {full} USING DELTA LOCATION "
        f"{sql_literal(location(storage, table))}",
        f"register {table.name}",
    )
    if table.current_view:
        _sql(spark, storage, view_sql(storage, table), f"create the view {table.current_view}")


def view_sql(storage: StorageConfig, table: Table) -> str:
    """``CREATE OR REPLACE VIEW`` of ``table``'s rows at its latest ``as_of`` (per model)."""
    assert table.current_view is not None
    source = name(storage, table.name)
    if MODEL_NAME in table.partition_by:
        what = "each model's latest as_of"
        body = (
            f"SELECT t.* FROM {source} t JOIN (SELECT {MODEL_NAME}, max({AS_OF}) AS latest "
            f"FROM {source} GROUP BY {MODEL_NAME}) l ON t.{MODEL_NAME} = l.{MODEL_NAME} "
            f"AND t.{AS_OF} = l.latest"
        )
    else:
        what = "the latest as_of"
        body = f"SELECT * FROM {source} WHERE {AS_OF} = (SELECT max({AS_OF}) FROM {source})"
    comment = f"The rows of {table.name} at {what}: the current state (customer-segmentation)."
    return (
        f"CREATE OR REPLACE VIEW {name(storage, table.current_view)} "
        f"COMMENT {sql_literal(comment)} AS {body}"
    )


def _exists(spark: SparkSession, storage: StorageConfig, full: str) -> bool:
    try:
        return bool(spark.catalog.tableExists(full.replace("`", "")))
    except AnalysisException as exc:
        raise _refused(storage, exc, f"look up {full}") from exc


def _sql(spark: SparkSession, storage: StorageConfig, statement: str, what: str) -> None:
    try:
        spark.sql(statement)
    except AnalysisException as exc:
        raise _refused(storage, exc, what) from exc
    log.debug("catalog: %s", statement)


def _refused(storage: StorageConfig, exc: Exception, what: str) -> TableError:
    text = str(exc)
    if any(sign in text for sign in _METASTORE_BUSY):
        return TableError(session.metastore_in_use(storage.metastore or "this session's"))
    return TableError(
        f"the catalog refused to {what} ({first_line(exc)}): check storage.catalog / "
        "storage.schema and that this job may create tables there"
    )


# How an embedded metastore that another JVM holds shows (Derby's XSDB6, then Hive's wrapper).
_METASTORE_BUSY = ("XSDB6", "Another instance of Derby", "SessionHiveMetaStoreClient")


def _normal(path: str) -> str:
    """A location without ``file:`` scheme and trailing slash (Spark reports ``file:/x``)."""
    for prefix in ("file://", "file:"):
        if path.startswith(prefix):
            path = path[len(prefix) :]
            break
    return os.path.normpath(path) if "://" not in path else path.rstrip("/")
