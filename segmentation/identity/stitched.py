"""The inputs as every job downstream of the stitching reads them: with identity stitching in
force (``AppConfig.stitching``), ``customer_id`` is the stitched ``customer_key`` of the
``identity_map`` snapshot of ``features.as_of``; without it, the inputs exactly as the
``inputs`` package reads them.

Features, customer value, the outcome backtest, training's composition, the rule-based
segments and the attitudinal segmentation read their inputs here, so every table they write
is keyed alike.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession

from segmentation.config import AppConfig, Identifier
from segmentation.identity import keying
from segmentation.identity.sightings import dimension_identifiers
from segmentation.inputs import customers as customers_dim
from segmentation.inputs import quality, sources


def events(spark: SparkSession, cfg: AppConfig) -> sources.EventSource:
    """The events (``sources.read_events``), keyed when stitching is on.

    Raises:
        InputError: as ``sources.read_events``; with stitching, no ``identity_map`` snapshot of
            ``features.as_of`` or a missing identifier column.
    """
    identity = cfg.stitching()
    if identity is None:
        return sources.read_events(spark, cfg.input.events, cfg.events_path())
    keymap = keying.load(spark, cfg, cfg.features.as_of)
    return keying.keyed_source(spark, cfg, identity, keymap)


def clean_events(
    spark: SparkSession, cfg: AppConfig, *, keep: Column | None = None
) -> quality.CleanEvents:
    """``quality.clean_events`` over :func:`events` (``keep`` selects stitched customers)."""
    return quality.clean_events(spark, cfg, keep=keep, source=events(spark, cfg))


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
