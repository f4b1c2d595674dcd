"""The stitched key on the inputs: every row's identifiers looked up in ``identity_map`` of
``features.as_of``, and its ``customer_id`` replaced by the stitched ``customer_key``.

A row's identifiers all belong to one component (the row linked them), except identifiers the
guard held back: so a row takes the key of its first identifier, in the order the input lists
its columns, that is in the map and was not held back; with only held-back ones, the key of the
first of them (a shared device alone: its own key). Identifiers seen after the snapshot (an
event after ``as_of``) are not in the map and are skipped. A row with no identifier has no
customer id (``missing_customer_id``, as without stitching); one whose identifiers are all
unknown to the map has none either, and is quarantined as ``unknown_identifier`` (an event
after ``as_of``: ``unknown_identifier_after_as_of``, which the map of its own day keys).

The lookup runs once per distinct combination of identifiers, not per row: the combinations
are looked up, then the rows are joined to them on every identifier column (null-safe).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from segmentation.config import AppConfig, Identifier, IdentityConfig
from segmentation.errors import InputError
from segmentation.identity import sightings
from segmentation.identity.keys import KEY
from segmentation.identity.normalise import Spec, normalised_frame
from segmentation.identity.sightings import KIND, VALUE
from segmentation.inputs import parsing, quality, sources
from segmentation.storage import tables

SHARED = "shared"
STITCHED = "_stitched_key"
RAW_ID = "raw_id"
"""A row's normalised identifiers (:func:`raw_id`)."""


@dataclass(frozen=True)
class KeyMap:
    """One ``identity_map`` snapshot: ``identifier_type``, ``identifier``, ``customer_key``,
    ``shared`` (held back by the guard)."""

    identifiers: DataFrame
    as_of: dt.date


def load(spark: SparkSession, cfg: AppConfig, as_of: dt.date) -> KeyMap:
    """The ``identity_map`` snapshot of ``as_of`` and the identifiers the guard held back.

    Raises:
        InputError: no snapshot of that date (run the stitching for it first).
    """
    storage = cfg.storage
    rows = None
    if tables.exists(spark, storage, tables.IDENTITY_MAP):
        rows = tables.read(spark, storage, tables.IDENTITY_MAP, partitions={tables.AS_OF: as_of})
    if rows is None or rows.isEmpty():
        raise InputError(
            f"identity stitching is on, but there is no identity_map snapshot for {as_of} "
            f"under {storage.warehouse}: run jobs/stitch_identities.py --as-of {as_of} (make "
            "identities) first, or set identity.enabled=false"
        )
    shared = (
        tables.read(spark, storage, tables.IDENTITY_GUARDS, partitions={tables.AS_OF: as_of})
        .where(F.col(tables.REASON) == "max_degree")
        .select(KIND, VALUE, F.lit(True).alias(SHARED))
    )
    keyed = rows.select(KIND, VALUE, KEY).join(shared, on=[KIND, VALUE], how="left")
    return KeyMap(keyed.select(KIND, VALUE, KEY, F.coalesce(SHARED, F.lit(False)).alias(SHARED)),
                  as_of)  # fmt: skip


def with_key(
    frame: DataFrame, columns: Sequence[str], kinds: Sequence[str], keymap: KeyMap
) -> DataFrame:
    """``frame`` with the stitched key of its normalised identifier ``columns`` (of types
    ``kinds``, in priority order) as :data:`STITCHED` (null: none of them is in the map)."""
    combos = frame.select(*columns).where(_any_present(columns)).distinct()
    typed = F.array(*[F.struct(F.lit(k).alias(KIND), F.col(c).alias(VALUE))
                      for c, k in zip(columns, kinds, strict=True)])  # fmt: skip
    exploded = combos.select(*columns, F.posexplode(typed).alias("_pos", "_i")).select(
        *columns, "_pos", F.col("_i")[KIND].alias(KIND), F.col("_i")[VALUE].alias(VALUE)
    )
    found = exploded.join(keymap.identifiers, on=[KIND, VALUE], how="inner")
    picked = found.groupBy(*columns).agg(F.min_by(KEY, F.struct(SHARED, "_pos")).alias(STITCHED))
    renamed = picked.select(*[F.col(c).alias(f"_k{i}") for i, c in enumerate(columns)], STITCHED)
    condition = [frame[c].eqNullSafe(renamed[f"_k{i}"]) for i, c in enumerate(columns)]
    joined = frame.join(renamed, on=condition, how="left")
    return joined.drop(*[f"_k{i}" for i in range(len(columns))])


def _any_present(columns: Sequence[str]) -> Column:
    """Whether any of the (normalised identifier) ``columns`` holds a value."""
    return reduce(Column.__or__, [F.col(c).isNotNull() for c in columns], F.lit(False))


def keyed_source(
    spark: SparkSession,
    cfg: AppConfig,
    identity: IdentityConfig,
    keymap: KeyMap,
    *,
    raw: DataFrame | None = None,
) -> sources.EventSource:
    """The events read as the feature job reads them, ``customer_id`` the stitched key, and
    each row's normalised identifiers as :data:`RAW_ID` (``EventSource.extra``: the feature
    state keeps its rows by them). ``raw``: these input rows only (``sources.read_events``)."""
    ev = cfg.input.events
    read = sightings.normalised_events(spark, cfg, identity, raw=raw)
    n = len(identity.identifiers)
    names = [sightings.value_column(i) for i in range(n)]
    kinds = [i.type for i in identity.identifiers]
    keyed = with_key(read.frame, names, kinds, keymap)
    unkeyed = F.col(STITCHED).isNull()
    known = _any_present(names)
    unknown = unknown_reason(keymap.as_of, ev.time_zone)
    keyed = keyed.withColumns({
        # A row no identifier keys is quarantined (unknown_identifier, or missing_customer_id
        # without any): its raw customer id and identifier values stay in its quarantine row.
        sources.RAW: F.when(F.col(sources.RAW).isNull() & unkeyed,
                            _raw_ids(identity, n)).otherwise(F.col(sources.RAW)),
        sources.ISSUE: F.when(unkeyed & known & F.col(sources.ISSUE).isNull(),
                              unknown).otherwise(F.col(sources.ISSUE)),
        tables.CUSTOMER_ID: F.col(STITCHED),
        RAW_ID: raw_id(names),
    }).drop(STITCHED, *names, *[sightings.status_column(i) for i in range(n)],
            *[sources.carried(i) for i in range(n)])  # fmt: skip
    return dataclasses.replace(
        read.source,
        checked=keyed,
        events=keyed.select(*sources.CANONICAL_SCHEMA.names, sources.ISSUE, RAW_ID),
        # A shared read is persisted already (sightings.sharing).
        scanned_twice=None if read.shared else read.frame,
        extra=(RAW_ID,),
    )


def raw_id(columns: Sequence[str]) -> Column:
    """A row's normalised identifier ``columns`` as one value (:data:`RAW_ID`): a JSON array
    of them in ``identity.identifiers`` order, null where none holds a value. Rows with the
    same raw id always take the same stitched key (:func:`with_key` reads only these)."""
    return F.when(_any_present(columns), F.to_json(F.array(*[F.col(c) for c in columns])))


def raw_columns(frame: DataFrame, n: int) -> tuple[DataFrame, list[str]]:
    """``frame`` with its :data:`RAW_ID` split back into the ``n`` identifier columns that
    :func:`with_key` reads, and their names."""
    values = F.from_json(F.col(RAW_ID), "array<string>")
    names = [sightings.value_column(i) for i in range(n)]
    return frame.withColumns({name: values[i] for i, name in enumerate(names)}), names


def unknown_reason(as_of: dt.date, time_zone: str) -> Column:
    """The reason of a row whose identifiers the map of ``as_of`` does not know: an event
    after ``as_of`` (its own day's map will know them) or not."""
    day = parsing.local_date(F.col("event_time"), time_zone)
    return F.when(day > F.lit(as_of), F.lit(quality.UNKNOWN_IDENTIFIER_AFTER_AS_OF)).otherwise(
        F.lit(quality.UNKNOWN_IDENTIFIER)
    )


def _raw_ids(identity: IdentityConfig, n: int) -> Column:
    """The row's raw ``customer_id`` and identifier values as text, keyed by column (never
    ``event_time``: :func:`unkeyed_raw`)."""
    pairs: dict[str, Column] = {tables.CUSTOMER_ID: F.col(tables.CUSTOMER_ID)}
    for i, ident in enumerate(identity.identifiers[:n]):
        pairs.setdefault(ident.column, F.col(sources.carried(i)).cast("string"))
    return F.create_map(*[x for k, v in pairs.items() for x in (F.lit(k), v)])


def unkeyed_raw(raw: Column) -> Column:
    """An unkeyed row's ``raw_values`` as the reader gave them, before :func:`keyed_source`
    filled the empty ones with the row's identifiers: the reader's always hold the
    ``event_time`` column, the identifiers' never do (null: the reader gave none)."""
    return F.when(F.map_contains_key(raw, "event_time"), raw)


def keyed_rows(
    rows: DataFrame,
    identifiers: Sequence[Identifier],
    identity: IdentityConfig,
    keymap: KeyMap,
    *,
    id_column: str,
    key: str,
) -> DataFrame:
    """Per-customer rows (a customers dimension, a survey, planted truth) with ``customer_id``
    the stitched key: one row per key (of several rows of one customer, the one with the
    smallest former ``customer_id``), rows with no identifier in the map left out.

    Args:
        rows: the rows as read, their id column already named ``customer_id``.
        identifiers: the input's identifier columns (its id column by the name ``id_column``
            it has in the input).
        key: the config key of ``identifiers``, named in errors.
    """
    by_lower = {c.lower(): c for c in rows.columns}
    specs = []
    for i, ident in enumerate(identifiers):
        name = ("customer_id" if ident.column.lower() == id_column.lower()
                else by_lower.get(ident.column.lower()))  # fmt: skip
        if name is None:
            raise InputError(f"column '{ident.column}' ({key}[{i}].column) is not in the input")
        specs.append(Spec(name, ident.type, f"{key}[{i}].column", sightings.value_column(i),
                          sightings.status_column(i)))  # fmt: skip
    names, kinds = [s.value for s in specs], [s.kind for s in specs]
    normalised = normalised_frame(rows, specs, identity).drop(*[s.status for s in specs])
    keyed = with_key(normalised, names, kinds, keymap).where(F.col(STITCHED).isNotNull())
    first = Window.partitionBy(STITCHED).orderBy(F.col(tables.CUSTOMER_ID).asc_nulls_last())
    return (
        keyed.withColumn("_row", F.row_number().over(first))
        .where(F.col("_row") == 1)
        .withColumn(tables.CUSTOMER_ID, F.col(STITCHED))
        .drop("_row", STITCHED, *names)
    )
