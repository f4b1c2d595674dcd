"""The table contracts, in one place: every output table's name, columns (type, nullability and
description), partitioning, Delta table properties and the job that writes it.

Every writer and reader of a table goes through a ``Table`` here (DESIGN.md, "Data contracts").
The descriptions are written into the tables (Delta table and column comments, shown by
``DESCRIBE TABLE EXTENDED`` and by the catalog when ``storage.schema`` is set) and rendered into
``docs/reference/tables.md`` by ``tools/docs_reference.py``: one source, so the two never
differ. A column's description says its unit, time zone and meaning.

Protocol: every table is Delta reader version 1 and writer version 2 (``PROPERTIES``), the
lowest versions, which readers without newer table features read too (delta-rs, Polars,
DuckDB's ``delta`` extension, Trino); deletion vectors are switched off explicitly, so a
cluster whose defaults switch them on does not raise the reader version. A table that an
activation tool reads incrementally adds change data feed (writer version 4, readers
unchanged).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from pyspark.sql import types as T

CUSTOMER_ID = "customer_id"
AS_OF = "as_of"
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
RUN_ID = "run_id"
SEGMENT_ID = "segment_id"
SEGMENT_NAME = "segment_name"
DISTANCE = "distance"
REASON = "reason"

COMMENT = "comment"
"""The column metadata key Spark and Delta read as the column's comment."""

# fmt: off
# Descriptions of the columns many tables share (a table's own text wins).
COMMON = MappingProxyType({
    CUSTOMER_ID: "The customer's id as the input names it (text, trimmed; numeric ids as their "
                 "integer text), or the stitched customer_key when identity stitching is on.",
    AS_OF: "The date the row is as of: events up to and including this calendar day (in "
           "input.events.time_zone) count; for model tables, the training snapshot's date.",
    MODEL_NAME: "The segmentation: customer_segments (clustering), attitudes, rfm, b2b_tiers, "
                "customer_value, or the name you configured. Filter on it.",
    MODEL_VERSION: "The MLflow registered model version that produced the row (rule-based "
                   "segmentations: the version of their rules).",
    RUN_ID: "The MLflow run id of the job run that wrote the row.",
    SEGMENT_ID: "The segment's id, stable across retrains while the segment's members agree "
                "(a new segment gets a new id); join on model_name and model_version.",
    SEGMENT_NAME: "The segment's generated name (from its distinctive features).",
    REASON: "Why the row was left out, a code documented in the docs' Features page.",
})

# Every table: reader 1 / writer 2, no deletion vectors (see the module docstring).
PROPERTIES = MappingProxyType({
    "delta.minReaderVersion": "1",
    "delta.minWriterVersion": "2",
    "delta.enableDeletionVectors": "false",
})
CHANGE_DATA_FEED = MappingProxyType({
    **PROPERTIES, "delta.minWriterVersion": "4", "delta.enableChangeDataFeed": "true",
})  # fmt: skip
# fmt: on


def column(
    name: str, data_type: T.DataType, nullable: bool = True, text: str = ""
) -> T.StructField:
    """A contract column: its description (``text`` or the shared one) as its comment."""
    description = text or COMMON.get(name, "")
    if not description:
        raise ValueError(f"column {name} has no description")
    return T.StructField(name, data_type, nullable, {COMMENT: description})


def schema(*columns: T.StructField) -> T.StructType:
    return T.StructType(list(columns))


def description_of(field: T.StructField) -> str:
    return str((field.metadata or {}).get(COMMENT, ""))


@dataclass(frozen=True)
class Table:
    """One output table's contract.

    Attributes:
        name: the table's directory under ``storage.warehouse`` (and its catalog name).
        description: what one row is and what the table is for.
        written_by: the jobs that write it (``jobs/<name>.py``).
        partition_by: partition columns; a snapshot is one value of each.
        schema: the columns, in order, with their descriptions (None: defined by the job's
            configuration, e.g. the feature columns of ``customer_features``).
        described: for a table without a fixed schema, (column name or ``fnmatch`` pattern,
            description) pairs, the first match wins; ``{level}`` is the raw level label.
        evolves: new columns are added on purpose (``mergeSchema``); nothing else changes.
        properties: Delta table properties set when it is created (protocol, change data feed).
        current_view: the name of its catalog view of the latest ``as_of`` (per model).
    """

    name: str
    description: str
    written_by: tuple[str, ...]
    partition_by: tuple[str, ...] = ()
    schema: T.StructType | None = None
    described: tuple[tuple[str, str], ...] = ()
    evolves: bool = False
    properties: Mapping[str, str] = field(default_factory=lambda: PROPERTIES, hash=False)
    current_view: str | None = None

    def table_comment(self) -> str:
        jobs = ", ".join(f"jobs/{j}.py" for j in self.written_by)
        return f"{self.description} Written by {jobs} (customer-segmentation)."

    def column_description(self, name: str, label: str | None = None) -> str:
        """The description of column ``name`` ("" when the contract has none)."""
        if self.schema is not None and name in self.schema.fieldNames():
            return description_of(self.schema[name])
        for pattern, text in self.described:
            if fnmatch.fnmatchcase(name, pattern):
                level = label if label is not None else name.rpartition("_share_")[2]
                return text.replace("{level}", level)
        return COMMON.get(name, "")

    def comments(self, fields: Sequence[T.StructField]) -> dict[str, str]:
        """The comment of each of ``fields`` (a level column's raw label from its metadata)."""
        out = {}
        for f in fields:
            label = (f.metadata or {}).get("label")
            text = self.column_description(f.name, None if label is None else str(label))
            if text:
                out[f.name] = text
        return out


# The lineage of a model's rows: which segmentation, version and run wrote them.
LINEAGE = (
    column(AS_OF, T.DateType()), column(MODEL_NAME, T.StringType()),
    column(MODEL_VERSION, T.IntegerType()), column(RUN_ID, T.StringType()),
)  # fmt: skip
