"""The low-level Delta helpers every Delta module shares: SQL literals and predicates, session
confs, paths, and Delta's exceptions as ``TableError`` naming the table."""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from delta.exceptions import (
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    DeltaConcurrentModificationException,
    MetadataChangedException,
    ProtocolChangedException,
)
from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession

from segmentation.errors import TableError

# Delta's session confs for idempotent DML (MERGE) and commit metadata.
TXN_APP_ID_CONF = "spark.databricks.delta.write.txnAppId"
TXN_VERSION_CONF = "spark.databricks.delta.write.txnVersion"
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
# Session confs are per session, so two MERGEs from threads of one session take turns setting
# them; DataFrame writes carry theirs as options and need no lock.
CONF_LOCK = threading.Lock()
# Delta's commit conflicts (its Python classes do not share a base class).
CONFLICTS = (
    DeltaConcurrentModificationException,
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    MetadataChangedException,
    ProtocolChangedException,
)


def exists(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` holds a Delta table."""
    return bool(DeltaTable.isDeltaTable(spark, absolute(path)))


def partition_predicate(values: Mapping[str, Any]) -> str:
    """A SQL predicate selecting one snapshot, e.g. ``model_name = 'rfm' AND as_of = DATE
    '2025-12-31'`` (values quoted as SQL literals)."""
    if not values:
        raise TableError("a replaced snapshot needs at least one partition value")
    return " AND ".join(
        f"`{k}` IS NULL" if v is None else f"`{k}` = {sql_literal(v)}"
        for k, v in sorted(values.items())
    )


@contextmanager
def translated(path: str, snapshot: Mapping[str, Any] | None) -> Iterator[None]:
    """Delta's conflict and schema exceptions as ``TableError`` naming table and snapshot."""
    what = f"snapshot {partition_predicate(snapshot)}" if snapshot else "the table"
    try:
        yield
    except CONFLICTS as exc:
        raise TableError(
            f"conflict: another run changed {what} of {path} at the same time; this run's "
            f"rows were not committed (the table holds the other run's). Re-run to replace "
            f"them. ({type(exc).__name__}: {first_line(exc)})"
        ) from exc
    except AnalysisException as exc:
        text = str(exc)
        if "replaceWhere" in text or "DELTA_REPLACE_WHERE" in text:
            raise TableError(
                f"rows written to {what} of {path} fall outside it: {first_line(exc)}"
            ) from exc
        if "schema" in text.lower():
            raise TableError(f"table {path} refused the write's schema: {first_line(exc)}") from exc
        raise TableError(f"write to Delta table {path} failed: {first_line(exc)}") from exc


@contextmanager
def session_confs(spark: SparkSession, confs: Mapping[str, str]) -> Iterator[None]:
    previous = {k: spark.conf.get(k, None) for k in confs}
    for k, v in confs.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, old in previous.items():
            if old is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, old)


def sql_literal(value: Any) -> str:
    """``value`` as a Spark SQL literal (strings quoted and escaped, dates as DATE '...')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def absolute(path: str) -> str:
    """Absolute local path for plain paths; URIs (s3a://, file://...) unchanged."""
    if "://" in path:
        return path
    return os.path.abspath(path)
