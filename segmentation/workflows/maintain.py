"""Table maintenance with delta-spark: VACUUM (files of old versions and killed runs), OPTIMIZE
(compaction), and the one-off upgrade of tables written by an older release."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from segmentation.config import AppConfig
from segmentation.storage import delta_maintenance, publishing


@dataclass
class TableMaintenance:
    """What maintenance did (or, without ``apply``, would do) to one table."""

    name: str
    vacuumed: list[str] = field(default_factory=list)
    compacted: dict[str, int] | None = None


@dataclass
class MaintainResult:
    applied: bool
    tables: list[TableMaintenance] = field(default_factory=list)
    upgraded: dict[str, int] | None = None


def run(
    spark: SparkSession,
    cfg: AppConfig,
    *,
    retention_hours: int = 168,
    apply: bool = False,
    optimize: bool = False,
    upgrade: bool = False,
) -> MaintainResult:
    """Maintain every Delta table under ``storage.warehouse``.

    Args:
        retention_hours: VACUUM keeps files younger than this (at least 24: the guard).
        apply: delete what VACUUM lists (default: only list).
        optimize: run OPTIMIZE on each table first.
        upgrade: instead, repartition snapshot tables of an older release (one version each).
    """
    if upgrade:
        return MaintainResult(applied=True, upgraded=publishing.upgrade_layout(spark, cfg.storage))
    result = MaintainResult(applied=apply)
    for name in delta_maintenance.tables_under(spark, cfg.storage.warehouse):
        path = cfg.storage.table_path(name)
        done = TableMaintenance(name)
        if optimize:
            done.compacted = delta_maintenance.optimize(spark, path)
        done.vacuumed = delta_maintenance.vacuum(
            spark, path, retention_hours=retention_hours, dry_run=not apply
        )
        result.tables.append(done)
    return result
