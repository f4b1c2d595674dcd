"""What is new in the events input since a feature run read it: the rows an incremental feature
run reads (``workflows.feature_state``), or the reason it cannot read only those.

* A **Delta** input is read version by version: the commits since the recorded version
  (``_delta_log/<version>.json``) must only add rows (``add`` actions with ``dataChange``;
  compaction, whose actions say ``dataChange: false``, changes no rows). A commit that removes
  rows (DELETE, UPDATE, MERGE, an overwrite), changes the schema, or is no longer in the log
  forces a rebuild: a deleted row must never come back. The rows of each appending commit are
  its new files, read as Parquet with the table's schema and their partition values (a table
  with column mapping: read through Delta at that version, filtered to those files).
* **Files** (CSV, JSON, Parquet) are compared by their listing (relative path, size,
  modification time): new files are read; a replaced or removed file forces a rebuild.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.errors.exceptions.captured import CapturedException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.config import EventSourceConfig
from segmentation.inputs.sources import read_raw
from segmentation.storage import delta_tables


@dataclass(frozen=True)
class Marker:
    """How far the input was read: its Delta version, or its file listing."""

    kind: str
    """``delta`` or ``files``."""
    version: int | None = None
    files: dict[str, list[int]] = field(default_factory=dict)
    """Relative path -> [size in bytes, modification time in ms]."""

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "files": self.files}, sort_keys=True)

    @classmethod
    def from_json(cls, kind: str, text: str) -> Marker:
        data = json.loads(text)
        return cls(kind, data.get("version"), {k: list(v) for k, v in data["files"].items()})


@dataclass(frozen=True)
class Increment:
    """The input's new rows since a marker."""

    marker: Marker
    """The input now (what the next run compares with)."""
    raw: DataFrame | None
    """The new rows as ``sources.read_raw`` reads the input (None: nothing new, or rebuild)."""
    described: str
    """What was new, for the run summary (``2 new files``, ``Delta versions 4-5 (appends)``)."""
    rebuild: str | None = None
    """Why only the new rows cannot be read (None: they can)."""


def marker(spark: SparkSession, source: EventSourceConfig, path: str) -> Marker:
    """The input's marker now."""
    if source.format == "delta":
        return Marker("delta", delta_tables.version(spark, path))
    return Marker("files", files=_listing(spark, path))


def since(
    spark: SparkSession, source: EventSourceConfig, path: str, previous: Marker, now: Marker
) -> Increment:
    """The rows added to the input since ``previous`` up to ``now`` (:func:`marker`: the input
    as this run found it; see the module docstring)."""
    if now.kind != previous.kind:
        return Increment(now, None, "", f"input.events.format changed to {source.format}")
    if now.kind == "delta":
        return _delta_since(spark, path, previous, now)
    changed = sorted(f for f, meta in previous.files.items() if now.files.get(f) != meta)
    if changed:
        gone = [f for f in changed if f not in now.files]
        what = "removed" if len(gone) == len(changed) else "replaced or removed"
        return Increment(
            now, None, "", f"{len(changed)} input file(s) {what} since the state was built "
            f"(first: {changed[0]})"
        )  # fmt: skip
    new = sorted(set(now.files) - set(previous.files))
    if not new:
        return Increment(now, None, "no new input files")
    base = path.rstrip("/")
    # The whole input's schema, as the full run reads it, so a new file's own types (an
    # empty file's null columns, an int64 amount) never decide how its rows are read. JSON
    # infers a schema by reading every row: its new files are read as they come.
    schema = None if source.format == "json" else read_raw(spark, source, base, trim=False).schema
    raw = read_raw(spark, source, base, files=[f"{base}/{f}" for f in new], schema=schema)
    return Increment(now, raw, f"{len(new)} new input file(s)")


def _delta_since(spark: SparkSession, path: str, previous: Marker, now: Marker) -> Increment:
    assert previous.version is not None and now.version is not None
    if now.version < previous.version:
        return Increment(now, None, "", f"the input table is at version {now.version}, before "
                                        f"the state's {previous.version} (restored?)")  # fmt: skip
    added: dict[int, list[dict]] = {}
    for v in range(previous.version + 1, now.version + 1):
        actions = _commit(spark, path, v)
        if actions is None:
            return Increment(now, None, "", f"input version {v}'s commit is no longer in the "
                                            "Delta log (log retention)")  # fmt: skip
        problem = _not_an_append(actions)
        if problem:
            return Increment(now, None, "", f"input version {v} {problem}")
        adds = [a["add"] for a in actions if "add" in a and a["add"].get("dataChange", True)]
        gone = _first_gone(spark, path, adds)
        if gone:
            return Increment(now, None, "", f"input version {v}'s data file {gone} is gone "
                             "(compacted, then vacuumed?): its rows are only in the table's "
                             "current files")  # fmt: skip
        if adds:
            added[v] = adds
    if not added:
        return Increment(now, None, "no new input rows (Delta versions "
                                    f"{previous.version}-{now.version})")  # fmt: skip
    raw = _appended(spark, path, added)
    return Increment(now, raw, f"Delta versions {min(added)}-{max(added)} ({len(added)} append(s))")


def _appended(spark: SparkSession, path: str, added: Mapping[int, Sequence[dict]]) -> DataFrame:
    """The rows the appending commits added (version -> its ``add`` actions, none with a
    deletion vector): their files read as Parquet at once, with the table's schema (the same
    at every version read: a schema change forces a rebuild) and each file's partition
    values, so only they are read. With column mapping (the files' column names are not the
    table's), each version through Delta, filtered to its files: Delta scans every file of
    the version for that (a filter on ``_metadata`` prunes no file of a Delta table)."""
    found = delta_tables.table_state(spark, path)
    assert found is not None
    if found.properties.get("delta.columnMapping.mode", "none") != "none":
        return reduce(DataFrame.unionByName, [
            delta_tables.read(spark, path, version=v).where(
                F.col("_metadata.file_name").isin([a["path"].rsplit("/", 1)[-1] for a in adds]))
            for v, adds in added.items()
        ])  # fmt: skip
    table = delta_tables.read(spark, path, version=max(added)).schema
    partitioned = set(found.partitions)
    data = T.StructType([f for f in table.fields if f.name not in partitioned])
    groups: dict[tuple[tuple[str, str | None], ...], list[str]] = {}
    for a in (a for adds in added.values() for a in adds):
        key = tuple(sorted((a.get("partitionValues") or {}).items()))
        groups.setdefault(key, []).append(_file(path, a["path"]))
    frames = []
    for key, files in groups.items():
        values = dict(key)
        frames.append(spark.read.schema(data).parquet(*files).select(*[
            F.lit(values.get(f.name)).cast(f.dataType).alias(f.name) if f.name in partitioned
            else F.col(f"`{f.name}`") for f in table.fields
        ]))  # fmt: skip
    return reduce(DataFrame.unionByName, frames)


def _first_gone(spark: SparkSession, path: str, adds: Sequence[dict]) -> str | None:
    """The first of the ``add`` actions' files no longer on storage (None: all there)."""
    for a in adds:
        fs, location = _hadoop(spark, _file(path, a["path"]))
        if not fs.exists(location):
            return str(a["path"])
    return None


def _file(table: str, relative: str) -> str:
    """A data file's location from its ``add`` path (URL-encoded, relative to the table
    unless absolute)."""
    if "://" in relative or relative.startswith("/"):
        return relative
    return f"{table.rstrip('/')}/{urllib.parse.unquote(relative)}"


def rows_unchanged(spark: SparkSession, path: str, since: int, until: int) -> bool:
    """Every commit of the Delta table at ``path`` after ``since`` up to ``until`` changes no
    rows, and every one is still in the log: ``OPTIMIZE``'s compaction, ``VACUUM``'s log
    entries (``dataChange`` false), and changes of the table's comments, description or
    properties (a catalog's, or a contract brought up to date after a write) that leave its
    columns as they were at ``since``."""
    columns: list[tuple] | None = None
    for v in range(since + 1, until + 1):
        actions = _commit(spark, path, v)
        if actions is None:
            return False
        if any("add" in a and a["add"].get("dataChange", True) for a in actions):
            return False
        metadata = [a["metaData"] for a in actions if "metaData" in a]
        if metadata:
            columns = columns if columns is not None else _columns_at(spark, path, since)
            new = [_columns(T.StructType.fromJson(json.loads(m["schemaString"]))) for m in metadata]
            if columns is None or any(c != columns for c in new):
                return False
        if _not_an_append([a for a in actions if "metaData" not in a]) is not None:
            return False
    return True


def _columns_at(spark: SparkSession, path: str, version: int) -> list[tuple] | None:
    """The columns of the table at ``version`` (None: that version can no longer be read,
    its log entries cleaned up)."""
    try:
        schema = spark.read.format("delta").option("versionAsOf", version).load(path).schema
    except (Py4JJavaError, CapturedException):
        return None
    return _columns(schema)


def _columns(schema: T.StructType) -> list[tuple]:
    """A schema's columns without their comments (name, type, nullable)."""
    return [(f.name, f.dataType.simpleString(), f.nullable) for f in schema.fields]


def _not_an_append(actions: Sequence[dict]) -> str | None:
    """Why a commit is more than an append (None: it only adds rows, or changes none)."""
    operation = next((a["commitInfo"].get("operation") for a in actions if "commitInfo" in a), "?")
    for a in actions:
        if "remove" in a and a["remove"].get("dataChange", True):
            return f"removed or rewrote rows ({operation}): deleted rows must not count"
        if "metaData" in a:
            return f"changed the table's schema or settings ({operation})"
        if "add" in a and a["add"].get("deletionVector"):
            return f"deleted rows through a deletion vector ({operation})"
    return None


def _commit(spark: SparkSession, path: str, version: int) -> list[dict] | None:
    """The actions of one Delta commit (None: the commit file is gone)."""
    fs, location = _hadoop(spark, f"{path.rstrip('/')}/_delta_log/{version:020d}.json")
    if not fs.exists(location):
        return None
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    stream = fs.open(location)
    try:
        text = jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()
    return [json.loads(line) for line in str(text).splitlines() if line.strip()]


def _listing(spark: SparkSession, path: str) -> dict[str, list[int]]:
    """Every data file under ``path`` (names starting with ``_`` or ``.`` skipped, as Spark
    does): relative path -> [size, modification time in ms]."""
    fs, root = _hadoop(spark, path)
    if not fs.exists(root):
        return {}
    prefix = str(fs.makeQualified(root).toString()).rstrip("/") + "/"
    out: dict[str, list[int]] = {}
    status = fs.getFileStatus(root)
    if status.isFile():
        return {root.getName(): [int(status.getLen()), int(status.getModificationTime())]}
    files = fs.listFiles(root, True)
    while files.hasNext():
        status = files.next()
        full = str(status.getPath().toString())
        relative = full[len(prefix) :] if full.startswith(prefix) else status.getPath().getName()
        if any(part.startswith(("_", ".")) for part in relative.split("/")):
            continue
        out[relative] = [int(status.getLen()), int(status.getModificationTime())]
    return out


def pinned(spark: SparkSession, source: EventSourceConfig, path: str, at: Marker) -> DataFrame:
    """Every input row as of ``at`` (the Delta version, or exactly the listed files), so rows
    added while a rebuild runs are read by the next run, not by both."""
    if at.kind == "delta":
        return delta_tables.read(spark, path, version=at.version)
    base = path.rstrip("/")
    if not at.files or not _is_dir(spark, base):
        return read_raw(spark, source, base)
    return read_raw(spark, source, base, files=[f"{base}/{f}" for f in sorted(at.files)])


def _is_dir(spark: SparkSession, path: str) -> bool:
    fs, location = _hadoop(spark, path)
    return bool(fs.exists(location) and fs.getFileStatus(location).isDirectory())


def _hadoop(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """The Hadoop FileSystem holding ``path`` (any scheme Spark reads) and its Path."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    location = jvm.org.apache.hadoop.fs.Path(delta_tables.absolute(path))
    return location.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), location
