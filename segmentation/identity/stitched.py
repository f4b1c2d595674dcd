"""The inputs as every job downstream of the stitching reads them: with identity stitching in
force (``AppConfig.stitching``), ``customer_id`` is the stitched ``customer_key`` of the
``identity_map`` snapshot of ``features.as_of``; without it, the inputs exactly as the
``inputs`` package reads them.

Features, customer value, the outcome backtest, training's composition, the rule-based
segments and the attitudinal segmentation read their inputs here, so every table they write
is keyed alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession

from segmentation.config import AppConfig, Identifier
from segmentation.identity import keying
from segmentation.identity.sightings import dimension_identifiers
from segmentation.inputs import customers as customers_dim
from segmentation.inputs import quality, sources
from segmentation.runtime.blocks import SharedWithin

_STAGED: SharedWithin[tuple[DataFrame, sources.InputCounts]] = SharedWithin(
    lambda staged: staged[0].unpersist()
)


def sharing() -> contextlib.AbstractContextManager[None]:
    """Within the block, the steps that stage the events of one configuration (the feature
    job, customer value, the outcome backtest) share one staged read of them: the first
    stages and persists the rows, the others reuse them, and the block's end releases them.

    The configuration is the events' location and mapping, the stitching, ``features.as_of``
    and the staging bounds; the input must not change inside the block (``make run``'s steps
    of one date)."""
    return _STAGED.block()


@dataclasses.dataclass(frozen=True)
class Staged:
    """Staged events (``quality.stage_source``) and their input counts."""

    rows: DataFrame
    counts: sources.InputCounts
    shared: bool
    """The rows belong to a :func:`sharing` block: not the caller's to release."""

    def release(self) -> None:
        if not self.shared:
            self.rows.unpersist()


def stage(
    spark: SparkSession,
    cfg: AppConfig,
    source: sources.EventSource,
    *,
    earliest: dt.date,
    latest: dt.date,
    keep: Column | None = None,
    reuse: bool = True,
) -> Staged:
    """``quality.stage_source`` of ``source`` (read by :func:`events` for ``cfg``); within
    :func:`sharing` and with ``reuse``, the rows an earlier step staged for the same
    configuration (``keep`` then filters them: the staging numbers copies per customer, so
    the rows are the same). ``reuse=False``: a source of its own (a feature-state rebuild's)."""
    zone = cfg.input.events.time_zone
    if not _STAGED.open or not reuse:
        rows, counts = _stage_once(source, keep=keep, earliest=earliest, latest=latest, zone=zone)
        return Staged(rows, counts, shared=False)
    identity = cfg.stitching()
    key = (
        cfg.events_path(), cfg.input.events.model_dump_json(), str(cfg.features.as_of),
        str(earliest), str(latest), "" if identity is None else identity.model_dump_json(),
    )  # fmt: skip
    rows, counts = _STAGED.get(key, lambda: _stage_once(
        source, keep=None, earliest=earliest, latest=latest, zone=zone))  # fmt: skip
    return Staged(rows if keep is None else rows.where(keep), counts, shared=True)


def _stage_once(
    source: sources.EventSource,
    *,
    keep: Column | None,
    earliest: dt.date,
    latest: dt.date,
    zone: str,
) -> tuple[DataFrame, sources.InputCounts]:
    """``quality.stage_source``, with the source's ``scanned_twice`` frame (the keyed read's
    normalised events) persisted for that one pass, so the input is scanned once, and
    released once the staged rows are filled."""
    twice = source.scanned_twice
    if twice is not None:
        twice.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return quality.stage_source(
            source, keep=keep, earliest=earliest, latest=latest, time_zone=zone
        )
    finally:
        if twice is not None:
            twice.unpersist()


def events(
    spark: SparkSession, cfg: AppConfig, *, raw: DataFrame | None = None
) -> sources.EventSource:
    """The events (``sources.read_events``; ``raw``: these input rows only), keyed when
    stitching is on.

    Raises:
        InputError: as ``sources.read_events``; with stitching, no ``identity_map`` snapshot of
            ``features.as_of`` or a missing identifier column.
    """
    identity = cfg.stitching()
    if identity is None:
        return sources.read_events(spark, cfg.input.events, cfg.events_path(), raw=raw)
    keymap = keying.load(spark, cfg, cfg.features.as_of)
    return keying.keyed_source(spark, cfg, identity, keymap, raw=raw)


def clean_events(
    spark: SparkSession, cfg: AppConfig, *, keep: Column | None = None
) -> quality.CleanEvents:
    """``quality.clean_events`` over :func:`events` (``keep`` selects stitched customers),
    staged by :func:`stage`; the caller calls ``release()``."""
    source = events(spark, cfg)
    earliest, latest = quality.bounds(cfg)
    staged = stage(spark, cfg, source, earliest=earliest, latest=latest, keep=keep)
    return quality.cleaned(cfg, staged.rows, staged.counts, source.present, shared=staged.shared)


def customers(spark: SparkSession, cfg: AppConfig) -> DataFrame | None:
    """The customers dimension (``customers.read_customers``), keyed when stitching is on:
    one row per stitched customer."""
    source = cfg.input.customers
    rows = customers_dim.read_customers(spark, source, cfg.customers_path())
    identity = cfg.stitching()
    if rows is None or identity is None:
        return rows
    ids = dimension_identifiers(identity, identity.customers, source.customer_id)
    return _keyed(spark, cfg, rows, ids, id_column=source.customer_id, key="identity.customers")


def survey(spark: SparkSession, cfg: AppConfig) -> DataFrame:
    """The survey (``customers.read_survey``), keyed when stitching is on."""
    source = cfg.attitudes.survey
    rows = customers_dim.read_survey(spark, source, cfg.survey_path())
    identity = cfg.stitching()
    if identity is None:
        return rows
    ids = dimension_identifiers(identity, identity.survey, source.customer_id)
    return _keyed(spark, cfg, rows, ids, id_column=source.customer_id, key="identity.survey")


def planted(spark: SparkSession, cfg: AppConfig, truth: DataFrame | None) -> DataFrame | None:
    """The generator's planted truth per customer (``customer_id``: the sample's CRM id),
    keyed when stitching is on, so it can be compared with the stitched segments."""
    identity = cfg.stitching()
    if truth is None or identity is None:
        return truth
    ids = (Identifier(column="customer_id", type=identity.customer_id_type),)
    return _keyed(spark, cfg, truth, ids, id_column="customer_id", key="identity.customer_id_type")


def _keyed(
    spark: SparkSession,
    cfg: AppConfig,
    rows: DataFrame,
    ids: tuple[Identifier, ...],
    *,
    id_column: str,
    key: str,
) -> DataFrame:
    identity = cfg.stitching()
    assert identity is not None
    keymap = keying.load(spark, cfg, cfg.features.as_of)
    return keying.keyed_rows(rows, ids, identity, keymap, id_column=id_column, key=key)
