"""What a Delta table says about itself: description, column comments and properties
(protocol, change data feed), from the table contracts; written when a table is created, and
brought up to date by later writes (``sync_contract``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.errors import TableError
from segmentation.storage.delta_base import (
    CONF_LOCK,
    USER_METADATA_CONF,
    absolute,
    exists,
    session_confs,
    sql_literal,
    translated,
)  # fmt: skip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Contract:
    """What a table says about itself: written when a write creates it, and brought up to
    date (one metadata commit, only when something differs) by later writes.

    Attributes:
        description: the table comment (Delta's ``description``).
        comments: column name -> comment.
        properties: Delta table properties; ``delta.minReaderVersion`` / ``minWriterVersion``
            are raised when lower, never lowered (a higher protocol is logged).
    """

    description: str | None = None
    comments: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TableState:
    """What a write needs to know of an existing table (one ``detail()`` and one schema)."""

    schema: T.StructType
    partitions: list[str]
    description: str | None
    properties: Mapping[str, str]
    reader_version: int
    writer_version: int


def table_state(spark: SparkSession, path: str) -> TableState | None:
    if not exists(spark, path):
        return None
    table = DeltaTable.forPath(spark, absolute(path))
    detail = table.detail().first()
    assert detail is not None
    return TableState(
        schema=table.toDF().schema,
        partitions=list(detail["partitionColumns"] or []),
        description=detail["description"],
        properties=dict(detail["properties"] or {}),
        reader_version=int(detail["minReaderVersion"]),
        writer_version=int(detail["minWriterVersion"]),
    )


def commented(df: DataFrame, comments: Mapping[str, str]) -> DataFrame:
    """``df`` with each column's comment in its metadata (other metadata kept), so the write
    that creates a table records them."""
    if not comments:
        return df
    return df.select(
        *[
            F.col(f"`{f.name}`").alias(f.name, metadata={**(f.metadata or {}),
                                                         "comment": comments[f.name]})
            if f.name in comments else F.col(f"`{f.name}`")
            for f in df.schema.fields
        ]
    )  # fmt: skip


def sync_contract(
    spark: SparkSession,
    path: str,
    contract: Contract,
    metadata: Mapping[str, str] | None = None,
    state: TableState | None = None,
) -> list[str]:
    """Bring the table's comments, description and properties to ``contract``: one commit per
    kind that differs (none when all agree: the usual case). Returns what changed.

    A conflict with a concurrent writer is logged and left to the next write."""
    state = state or table_state(spark, path)
    if state is None:
        return []
    table = f"delta.`{absolute(path)}`"
    statements = []
    current = {f.name: str((f.metadata or {}).get("comment", "")) for f in state.schema.fields}
    stale = {c: t for c, t in contract.comments.items() if c in current and current[c] != t}
    if stale:
        changes = ", ".join(f"`{c}` COMMENT {sql_literal(t)}" for c, t in sorted(stale.items()))
        statements.append(("comments", f"ALTER TABLE {table} ALTER COLUMN {changes}"))
    if contract.description and state.description != contract.description:
        statements.append(
            ("description", f"COMMENT ON TABLE {table} IS {sql_literal(contract.description)}")
        )
    properties = _stale_properties(path, state, contract.properties)
    if properties:
        listed = ", ".join(f"{sql_literal(k)} = {sql_literal(v)}" for k, v in properties.items())
        statements.append(("properties", f"ALTER TABLE {table} SET TBLPROPERTIES ({listed})"))
    confs = {USER_METADATA_CONF: json.dumps({**(metadata or {}), "contract": "sync"})}
    done = []
    for what, statement in statements:
        try:
            with CONF_LOCK, session_confs(spark, confs), translated(path, None):
                spark.sql(statement)
            done.append(what)
        except TableError as exc:
            log.warning("%s: table %s not brought up to date (%s)", path, what, exc)
    return done


_PROTOCOL = {"delta.minReaderVersion": "reader_version", "delta.minWriterVersion": "writer_version"}


def _stale_properties(path: str, state: TableState, wanted: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for key, value in wanted.items():
        if key in _PROTOCOL:
            have = getattr(state, _PROTOCOL[key])
            if have < int(value):
                out[key] = value
            elif have > int(value):
                log.info("%s has Delta %s %d (the contract asks %s): a reader needs that "
                         "version or later", path, key, have, value)  # fmt: skip
        elif state.properties.get(key) != value:
            out[key] = value
    return out
