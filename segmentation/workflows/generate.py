"""The sample data: ``events``, ``customers`` and ``segment_truth`` with planted archetypes."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from pyspark.sql import SparkSession

from segmentation import delta_tables, tables
from segmentation import generator as gen
from segmentation.config import AppConfig, to_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateResult:
    skipped: bool
    versions: dict[str, int | None]
    rows: dict[str, int]


def run(spark: SparkSession, cfg: AppConfig, *, if_absent: bool = False) -> GenerateResult:
    """Write the sample ``events``, ``customers`` and ``segment_truth`` tables.

    Each table is replaced whole. The writes carry one transaction id derived from the
    generator settings, so generating the same sample again commits nothing.

    Args:
        spark: the active session.
        cfg: ``generator`` sizes and seed; ``storage`` for the table locations.
        if_absent: do nothing when the events table already exists.
    """
    storage, g = cfg.storage, cfg.generator
    targets = (tables.EVENTS, tables.CUSTOMERS, tables.TRUTH)
    if if_absent and tables.exists(spark, storage, tables.EVENTS):
        log.info(
            "sample events already at %s: not generated again", tables.path(storage, tables.EVENTS)
        )
        versions = {t.name: delta_tables.version(spark, tables.path(storage, t)) for t in targets}
        return GenerateResult(True, versions, {})
    data = gen.generate(
        spark, customers=g.customers, events=g.events, seed=g.seed, start_date=g.start_date,
        end_date=g.end_date, partitions=g.partitions, overlap=g.overlap,
    )  # fmt: skip
    params = json.dumps(to_dict(g), sort_keys=True)
    key = hashlib.sha256(params.encode()).hexdigest()[:16]
    options = delta_tables.WriteOptions(
        mode="overwrite",
        txn=delta_tables.Txn(f"segmentation:generate:{key}"),
        metadata={"job": "generate", "params": params},
        overwrite_schema=True,
    )
    frames = dict(zip(targets, (data.events, data.customers, data.segment_truth), strict=True))

    def writer(table: tables.Table) -> tables.Write:
        location = tables.path(storage, table)
        return (
            table.name,
            lambda: delta_tables.write(spark, frames[table], location, options).version,
        )

    written = tables.write_in_order([writer(t) for t in targets])
    rows = {
        t.name: tables.read(spark, storage, t, version=written[t.name]).count() for t in targets
    }
    return GenerateResult(False, dict(written), rows)
