"""Delta table maintenance through delta-spark: VACUUM with a retention guard, OPTIMIZE,
rewriting a table with another partitioning, and finding the tables under a warehouse."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence

import pyarrow.fs as pafs
from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from segmentation.errors import TableError
from segmentation.storage import delta_tables, files

_RETENTION_CHECK_CONF = "spark.databricks.delta.retentionDurationCheck.enabled"
# Delta 4 ignores VACUUM's RETAIN n HOURS (other than 0) by default and uses the table's
# delta.deletedFileRetentionDuration; the job's --retention-hours is honoured with this off.
_RETENTION_IGNORE_CONF = "spark.databricks.delta.vacuum.retentionWindowIgnore.enabled"


def tables_under(spark: SparkSession, root: str) -> list[str]:
    """Names of the Delta tables directly under ``root``."""
    fs, base = files.filesystem(delta_tables.absolute(root))
    try:
        entries = fs.get_file_info(pafs.FileSelector(base, recursive=False))
    except FileNotFoundError:
        return []
    names = [posixpath.basename(e.path) for e in entries if e.type == pafs.FileType.Directory]
    return sorted(n for n in names if delta_tables.exists(spark, posixpath.join(root, n)))


def vacuum(
    spark: SparkSession, path: str, *, retention_hours: int = 168, dry_run: bool = True
) -> list[str]:
    """Delta's ``VACUUM``: delete files no version within the retention needs.

    That covers the files of old versions and the files of writes that never committed (a
    killed run). The retention guard: fewer than 24 hours is refused, because a reader of a
    recent version or a write still in progress may need those files.

    Returns:
        The files deleted (or, with ``dry_run``, that would be), relative to the table.
    """
    if retention_hours < 24:
        raise TableError("vacuum retention below 24 hours is refused: readers may need the files")
    location = delta_tables.absolute(path)
    if not delta_tables.exists(spark, location):
        raise TableError(f"no Delta table at {path}")
    # Delta's own check refuses < 168 hours; ours (>= 24) replaces it.
    confs = {_RETENTION_CHECK_CONF: "false", _RETENTION_IGNORE_CONF: "false"}
    with delta_tables.CONF_LOCK, delta_tables.session_confs(spark, confs):
        listed = spark.sql(
            f"VACUUM delta.`{location}` RETAIN {int(retention_hours)} HOURS DRY RUN"
        ).collect()
        removable = sorted(_relative(location, r["path"]) for r in listed)
        if not dry_run and removable:
            DeltaTable.forPath(spark, location).vacuum(float(retention_hours))
    return removable


def optimize(spark: SparkSession, path: str) -> dict[str, int]:
    """Delta's ``OPTIMIZE`` (bin-packing compaction): files removed and added."""
    metrics = (
        DeltaTable.forPath(spark, delta_tables.absolute(path))
        .optimize()
        .executeCompaction()
        .first()
    )
    m = metrics["metrics"] if metrics is not None else None
    return {
        "files_removed": int(m["numFilesRemoved"]) if m else 0,
        "files_added": int(m["numFilesAdded"]) if m else 0,
    }


def repartition(
    spark: SparkSession, path: str, partition_by: Sequence[str], *, metadata: Mapping[str, str]
) -> int:
    """Rewrite the whole table partitioned by ``partition_by``, as one new version.

    The old files stay for time travel until a vacuum. Returns the new version.
    """
    if not delta_tables.exists(spark, path):
        raise TableError(f"no Delta table at {path}")
    current = delta_tables.read(spark, path)
    options = delta_tables.WriteOptions(
        mode="overwrite", partition_by=tuple(partition_by), metadata=metadata,
        overwrite_schema=True,
    )  # fmt: skip
    return delta_tables.write(spark, current, path, options).version


def _relative(location: str, file_path: str) -> str:
    local = file_path.removeprefix("file:").removeprefix("//")
    return posixpath.relpath(local, location) if local.startswith("/") else file_path
