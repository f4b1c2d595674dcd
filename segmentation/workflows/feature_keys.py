"""Identity stitching with the incremental feature state (docs/incremental.md).

With stitching, the state's daily rows, event identities and quarantined rows are kept by
``raw_id``, the row's normalised identifiers (``identity.keying.raw_id``), never by the
stitched key, and ``feature_state_keys`` holds each raw id's stitched key as of the state's
day. A run re-keys every raw id with ``identity_map`` of its own ``as_of``, through the same
``keying.with_key`` that keys the full run's rows, so a row takes the key the full run gives
it. The customers whose raw ids moved (a merge, a split, an identifier the guard now holds
back: *moved*, under their old and their new keys) are recomputed from all their daily rows;
every other customer row is advanced as without stitching.

A raw id that gains a key (its rows were quarantined as ``unknown_identifier``, or as
``unknown_identifier_after_as_of``: an event after an earlier ``as_of`` from identifiers new
then) has its quarantined rows checked again with the new day's rows
(``feature_increment``), as the full run checks them. What re-keying alone cannot answer makes
the run rebuild, naming it:

* a raw id that loses its key (its rows would be quarantined now);
* a merge that joins two copies of one event counted under two customers (the full run keeps
  one);
* a split that separates a copy quarantined as ``duplicate_event`` from the copy kept (the
  full run keeps both).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig, IdentityConfig
from segmentation.identity import keying
from segmentation.identity.keying import RAW_ID
from segmentation.inputs import quality
from segmentation.workflows import feature_state as fs

CUSTOMER_ID = "customer_id"
KEY = "_key"
"""A row's stitched key where ``customer_id`` holds its raw id."""
_OLD = "_old_key"
_MEMORY = StorageLevel.MEMORY_AND_DISK


@dataclass
class Keys:
    """Every known raw id's stitched key as of the new day, and the moved customers."""

    keys: DataFrame
    """``raw_id``, ``customer_id`` (the key at the new day; null: unknown), persisted."""
    old: DataFrame
    """``raw_id``, ``customer_id`` (the key at the state's day), as the state holds them."""
    moved: DataFrame
    """``customer_id``: the keys (old and new) whose raw ids changed, persisted."""
    moved_count: int
    persisted: list[DataFrame]
    """What :meth:`release` unpersists."""

    def release(self) -> None:
        for df in self.persisted:
            df.unpersist()


def rekey(spark: SparkSession, cfg: AppConfig, last: fs.Log, keymap: keying.KeyMap) -> Keys | str:
    """The state's raw ids keyed by ``identity_map`` of the new day, or why the run must
    rebuild (a raw id loses its key). A raw id that gains one moves no customer: its rows
    were all quarantined (``feature_increment`` checks them again)."""
    identity = cfg.stitching()
    assert identity is not None
    old = fs.read_state(spark, cfg, fs.KEYS, last)
    both = _keyed_again(old, identity, keymap).persist(_MEMORY)
    changed = both.where(F.col(_OLD).isNotNull() & ~F.col(_OLD).eqNullSafe(F.col(CUSTOMER_ID)))
    lost = changed.where(F.col(CUSTOMER_ID).isNull()).first()
    if lost is not None:
        both.unpersist()
        return (f"identifiers {lost[RAW_ID]} are no longer in identity_map of {keymap.as_of}: "
                "their events would be quarantined as unknown_identifier now")  # fmt: skip
    moved_old = changed.select(F.col(_OLD).alias(CUSTOMER_ID))
    # Customers whose old key lost or kept members: their raw ids, under the new keys.
    members = both.join(moved_old.withColumnRenamed(CUSTOMER_ID, _OLD), _OLD, "left_semi")
    moved = (
        moved_old.unionByName(changed.select(CUSTOMER_ID))
        .unionByName(members.select(CUSTOMER_ID))
        .distinct()
        .persist(_MEMORY)
    )
    keys = both.select(RAW_ID, CUSTOMER_ID)
    return Keys(keys=keys, old=old, moved=moved, moved_count=moved.count(), persisted=[both, moved])


def _keyed_again(old: DataFrame, identity: IdentityConfig, keymap: keying.KeyMap) -> DataFrame:
    """``old`` (``raw_id``, ``customer_id``) with the old key as :data:`_OLD` and the key of
    ``keymap`` as ``customer_id``."""
    frame, names = keying.raw_columns(old, len(identity.identifiers))
    kinds = [i.type for i in identity.identifiers]
    again = keying.with_key(frame.withColumnRenamed(CUSTOMER_ID, _OLD), names, kinds, keymap)
    return again.select(RAW_ID, _OLD, F.col(keying.STITCHED).alias(CUSTOMER_ID))


def copies_moved(keys: Keys, seen: DataFrame, rejected: DataFrame) -> str | None:
    """Why the moved customers' counted events are no longer those the full run counts (a
    merge joins two counted copies, a split parts a quarantined copy from the one kept), or
    None. ``seen``, ``rejected``: the state's event identities and quarantined rows, by raw
    id."""
    if keys.moved_count == 0:
        return None
    moved = keys.moved.withColumnRenamed(CUSTOMER_ID, _OLD)
    # The raw ids of the moved customers: their old key and their new one.
    mine = (
        keys.old.withColumnRenamed(CUSTOMER_ID, _OLD)
        .join(F.broadcast(moved), _OLD, "left_semi")
        .join(keys.keys.withColumnRenamed(CUSTOMER_ID, KEY), RAW_ID)
        .persist(_MEMORY)
    )
    counted = (
        seen.withColumnRenamed(CUSTOMER_ID, RAW_ID)
        .join(F.broadcast(mine), RAW_ID)
        .select(_OLD, KEY, "event_id", _identity(F.col("fingerprint")).alias("_identity"))
        .persist(_MEMORY)
    )
    try:
        merged = (
            counted.groupBy(KEY, "_identity")
            .agg(F.countDistinct(_OLD).alias("_n"), F.first("event_id").alias("event_id"))
            .where(F.col("_n") > 1)
            .first()
        )
        if merged is not None:
            return (f"an identity merge joins copies of event {merged['event_id']} counted "
                    f"under two customers (now {merged[KEY]})")  # fmt: skip
        copies = (
            rejected.where(F.col(quality.REASON) == quality.DUPLICATE_EVENT)
            .join(F.broadcast(mine.withColumnRenamed(KEY, "_copy_key")), RAW_ID)
            .select(_OLD, "_copy_key", "event_id",
                    _identity(quality.fingerprint()).alias("_identity"))
        )  # fmt: skip
        parted = copies.join(counted.drop("event_id"), [_OLD, "_identity"]).where(
            F.col("_copy_key") != F.col(KEY)
        )
        split = parted.select("event_id", "_copy_key").first()
    finally:
        counted.unpersist()
        mine.unpersist()
    if split is None:
        return None
    return (f"an identity split parts event {split['event_id']}, quarantined as "
            f"duplicate_event, from the copy kept (the copy is customer {split['_copy_key']}'s "
            "now)")  # fmt: skip


def _identity(fingerprint: Column) -> Column:
    """What makes two usable events of one customer copies (``quality.stage_events``): the
    id, else the content."""
    content = F.concat(F.lit("content:"), fingerprint.cast("string"))
    return F.when(
        F.col("event_id").isNotNull(), F.concat(F.lit("id:"), F.col("event_id"))
    ).otherwise(content)


def tuples(clean: DataFrame, rejected: DataFrame) -> DataFrame:
    """The raw ids of split rows with their stitched key (null: unknown)."""
    rows = clean.select(RAW_ID, CUSTOMER_ID).unionByName(rejected.select(RAW_ID, CUSTOMER_ID))
    return rows.where(F.col(RAW_ID).isNotNull()).distinct()


def by_key(rows: DataFrame, keys: DataFrame) -> DataFrame:
    """State rows by raw id (``customer_id``) with ``customer_id`` their stitched key (rows of
    raw ids without a key left out: the state has none)."""
    return (
        rows.withColumnRenamed(CUSTOMER_ID, RAW_ID)
        .join(keys.where(F.col(CUSTOMER_ID).isNotNull()), RAW_ID)
        .drop(RAW_ID)
    )


def by_raw_id(rows: DataFrame) -> DataFrame:
    """Keyed rows (``customer_id`` the stitched key, ``raw_id``) with ``customer_id`` their
    raw id, the state's key."""
    return rows.withColumn(CUSTOMER_ID, F.col(RAW_ID)).drop(RAW_ID)


def expanded(mine: DataFrame, keys: DataFrame) -> DataFrame:
    """New event identities (``customer_id`` the stitched key) once per raw id of their
    customer (``customer_id`` the raw id, :data:`KEY` the key): the state's identities are
    by raw id."""
    return (
        keys.where(F.col(CUSTOMER_ID).isNotNull())
        .join(F.broadcast(mine), CUSTOMER_ID)
        .withColumn(KEY, F.col(CUSTOMER_ID))
        .withColumn(CUSTOMER_ID, F.col(RAW_ID))
        .drop(RAW_ID)
    )


def rekeyed_rejected(rejected: DataFrame, keys: DataFrame) -> DataFrame:
    """The state's quarantined rows with the stitched key of the new day (rows without
    identifiers keep their null customer): rows are appended with the key of their own run."""
    new = keys.select(RAW_ID, F.col(CUSTOMER_ID).alias(KEY))
    return (
        rejected.join(new, RAW_ID, "left")
        .withColumn(CUSTOMER_ID, F.when(F.col(RAW_ID).isNull(), F.col(CUSTOMER_ID))
                    .otherwise(F.col(KEY)))
        .drop(KEY)
    )  # fmt: skip
