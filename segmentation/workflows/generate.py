"""The sample data: ``events``, ``customers`` and ``segment_truth`` with planted archetypes,
``survey_responses`` and ``attitude_truth`` with planted attitudinal segments, and the
``consent`` records and ``suppression`` list the audiences read."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession

from segmentation.config import AppConfig, GeneratorConfig, StorageConfig, to_dict
from segmentation.sample import consent as sample_consent
from segmentation.sample import generator as gen
from segmentation.sample import identities as sample_ids
from segmentation.sample import survey_generator
from segmentation.storage import delta_tables, tables

log = logging.getLogger(__name__)

# Tables written together: the first of each group says whether the group exists (with
# generator.identities, the last too: a sample without its identifiers is generated again).
BEHAVIOUR = (tables.EVENTS, tables.CUSTOMERS, tables.TRUTH)
IDENTITIES = (*BEHAVIOUR, tables.IDENTITY_EDGES, tables.IDENTITY_TRUTH)
SURVEY = (tables.SURVEY, tables.ATTITUDE_TRUTH)
CONSENT = (tables.CONSENT, tables.SUPPRESSION)


@dataclass(frozen=True)
class GenerateResult:
    skipped: bool
    versions: dict[str, int | None]
    rows: dict[str, int]
    kept: tuple[str, ...] = field(default=())


def run(spark: SparkSession, cfg: AppConfig, *, if_absent: bool = False) -> GenerateResult:
    """Write the sample tables (``BEHAVIOUR``, ``SURVEY`` and ``CONSENT``).

    Each table is replaced whole. The writes carry one transaction id derived from the
    generator settings, so generating the same sample again commits nothing.

    Args:
        spark: the active session.
        cfg: ``generator`` sizes and seed; ``storage`` for the table locations.
        if_absent: keep a group of tables whose first and last tables already exist (a sample
            made by an earlier release gains its survey tables without its events being
            replaced; one without the identities that ``generator.identities`` asks for is
            generated again).
    """
    storage, g = cfg.storage, cfg.generator
    every_group: list[tuple[tables.Table, ...]] = [
        IDENTITIES if g.identities else BEHAVIOUR,
        SURVEY,
        *([CONSENT] if g.consent else []),
    ]
    groups = every_group
    if if_absent:
        groups = [g_ for g_ in groups if not _exists(spark, cfg, g_)]
    kept = tuple(t.name for grp in every_group if grp not in groups for t in grp)
    if kept:
        log.info("sample tables already under %s, not generated again: %s", storage.warehouse,
                 ", ".join(kept))  # fmt: skip
    if not groups:
        every = tuple(t for grp in every_group for t in grp)
        versions = {t.name: delta_tables.version(spark, tables.path(storage, t)) for t in every}
        return GenerateResult(True, versions, {}, kept)
    frames = _frames(spark, g, groups)
    if CONSENT in groups:
        frames |= _consent(spark, cfg, frames.get(tables.CUSTOMERS))
    params = json.dumps(to_dict(g), sort_keys=True)
    key = hashlib.sha256(params.encode()).hexdigest()[:16]

    def writer(table: tables.Table) -> tables.Write:
        location = tables.path(storage, table)
        options = delta_tables.WriteOptions(
            mode="overwrite",
            txn=delta_tables.Txn(f"segmentation:generate:{key}"),
            metadata={"job": "generate", "params": params},
            overwrite_schema=True,
            contract=tables.contract(table, frames[table]),
        )
        return tables.Write(
            table,
            lambda: delta_tables.write(spark, frames[table], location, options).version,
            spark,
            storage,
        )

    written = tables.write_in_order([writer(t) for t in frames])
    rows = {t.name: _rows(spark, storage, t, written[t.name]) for t in frames}
    return GenerateResult(False, dict(written), rows, kept)


def _rows(spark: SparkSession, storage: StorageConfig, table: tables.Table, version: int) -> int:
    """The rows of ``table`` at ``version`` (replaced whole): the commit's own row count,
    else a count of the table."""
    found = delta_tables.rows_written(spark, tables.path(storage, table), version)
    if found is not None:
        return found
    return tables.read(spark, storage, table, version=version).count()


def _consent(
    spark: SparkSession, cfg: AppConfig, customers: DataFrame | None
) -> dict[tables.Table, DataFrame]:
    """The consent records and suppression list of the sample's customers."""
    g = cfg.generator
    if customers is None:
        customers = tables.read(spark, cfg.storage, tables.CUSTOMERS)
    return {
        tables.CONSENT: sample_consent.consent(customers, g.seed, g.start_date, g.end_date),
        tables.SUPPRESSION: sample_consent.suppression(customers, g.seed),
    }


def _exists(spark: SparkSession, cfg: AppConfig, group: tuple[tables.Table, ...]) -> bool:
    """The group's first and last tables exist (it was written whole)."""
    return all(tables.exists(spark, cfg.storage, t) for t in (group[0], group[-1]))


def _frames(
    spark: SparkSession, g: GeneratorConfig, groups: list[tuple[tables.Table, ...]]
) -> dict[tables.Table, DataFrame]:
    frames: dict[tables.Table, DataFrame] = {}
    if BEHAVIOUR in groups or IDENTITIES in groups:
        data = gen.generate(
            spark, customers=g.customers, events=g.events, seed=g.seed,
            start_date=g.start_date, end_date=g.end_date, partitions=g.partitions,
            overlap=g.overlap,
        )  # fmt: skip
        frames.update(zip(BEHAVIOUR, (data.events, data.customers, data.segment_truth),
                          strict=True))  # fmt: skip
        if g.identities:
            frames |= {
                tables.EVENTS: sample_ids.with_identifiers(data.events, g.seed),
                tables.CUSTOMERS: sample_ids.customer_identifiers(data.customers, g.seed),
                tables.IDENTITY_EDGES: sample_ids.logins(data.events, g.seed),
                tables.IDENTITY_TRUTH: sample_ids.truth(
                    data.segment_truth.select("customer_id"), g.seed
                ),
            }
    if SURVEY in groups:
        survey = survey_generator.generate_survey(
            spark, customers=g.customers, seed=g.seed, share=g.survey_share,
            missing_share=g.survey_missing_share,
        )  # fmt: skip
        frames.update(zip(SURVEY, (survey.responses, survey.truth), strict=True))
    return frames
