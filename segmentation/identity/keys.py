"""Stable customer keys across runs: a component keeps the key it had, merges and splits are
recorded.

Members are ordered by age: ``first_seen`` (the earlier of this run's first sighting and the
previous snapshot's, undated last), then identifier type, then identifier. Against the
previous snapshot of ``identity_map``:

* each previous key belongs to the component now holding its **oldest** previous member;
* a component holding several previous keys keeps the one whose oldest member is oldest, and
  the others are recorded as **merged** into it;
* the other parts of a previous key's members (a component that split) get other keys, and
  each is recorded as a **split** from it;
* a component holding no key it owns gets a new one: ``ck_`` and 20 hex digits of the SHA-256
  of its oldest member's type and identifier (salted with ``as_of`` when its members had keys
  before, or when that key was taken before), so the same input gives the same keys.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.errors import InputError
from segmentation.identity.components import COMPONENT
from segmentation.identity.graph import FIRST_SEEN, LAST_SEEN
from segmentation.identity.sightings import KIND, VALUE

KEY = "customer_key"
KEY_PREFIX = "ck_"
MERGE, SPLIT = "merge", "split"
_PREV, _ORDER, _SEP = "_prev_key", "_order", "\u001f"
PREVIOUS_SCHEMA = T.StructType(
    [T.StructField(KIND, T.StringType()), T.StructField(VALUE, T.StringType()),
     T.StructField(KEY, T.StringType()), T.StructField(FIRST_SEEN, T.TimestampType())]
)  # fmt: skip


@dataclass(frozen=True)
class Keyed:
    """The members with their keys, the components, and the recorded changes (persisted:
    call :meth:`unpersist`)."""

    members: DataFrame
    """``identifier_type``, ``identifier``, ``customer_key``, ``first_seen``, ``last_seen``."""
    components: DataFrame
    """``component``, ``customer_key``, ``size``, ``kept`` (the key is a previous one)."""
    changes: DataFrame
    """``change`` (merge/split), ``from_key``, ``to_key``, ``identifiers`` (moved)."""
    _persisted: tuple[DataFrame, ...] = ()

    def unpersist(self) -> None:
        for df in self._persisted:
            df.unpersist()


def new_key(kind: Column, value: Column, *salt: Column) -> Column:
    """``ck_`` + 20 hex digits of SHA-256(type, identifier[, salt])."""
    digest = F.sha2(F.concat_ws(_SEP, kind, value, *salt), 256)
    return F.concat(F.lit(KEY_PREFIX), F.substring(digest, 1, 20))


def assign(members: DataFrame, previous: DataFrame, *, as_of: dt.date) -> Keyed:
    """Keys for this run's components (see the module docstring).

    Args:
        members: ``identifier_type``, ``identifier``, ``first_seen``, ``last_seen``,
            ``component``: every identifier and its component.
        previous: the previous snapshot's ``identifier_type``, ``identifier``,
            ``customer_key``, ``first_seen`` (empty for a first run: :data:`PREVIOUS_SCHEMA`).
        as_of: this run's date (salts the keys of parts that split off).

    Raises:
        InputError: two components would share a key (never silently merged).
    """
    prev = previous.select(KIND, VALUE, F.col(KEY).alias(_PREV), F.col(FIRST_SEEN).alias("_pf"))
    aged = members.join(prev, on=[KIND, VALUE], how="left").withColumn(
        FIRST_SEEN, F.least(F.col(FIRST_SEEN), F.col("_pf"))
    )
    order = F.struct(F.col(FIRST_SEEN).isNull(), F.col(FIRST_SEEN), F.col(KIND), F.col(VALUE))
    m = aged.withColumn(_ORDER, order).drop("_pf").persist(StorageLevel.MEMORY_AND_DISK)
    owners = (
        m.where(F.col(_PREV).isNotNull())
        .groupBy(_PREV)
        .agg(F.min_by(COMPONENT, _ORDER).alias("_owner"), F.min(_ORDER).alias("_owner_order"))
    )
    kept = owners.groupBy("_owner").agg(F.min_by(_PREV, "_owner_order").alias("_kept"))
    components = _component_keys(m, kept, previous, as_of=as_of).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    _check_unique(components)
    keyed = m.join(components.select(COMPONENT, KEY), on=COMPONENT, how="inner").select(
        KIND, VALUE, KEY, FIRST_SEEN, LAST_SEEN
    )
    flows = (
        m.where(F.col(_PREV).isNotNull())
        .groupBy(_PREV, COMPONENT)
        .agg(F.count(F.lit(1)).alias("identifiers"))
    )
    changes = (
        flows.join(owners, on=_PREV, how="inner")
        .join(components.select(COMPONENT, KEY), on=COMPONENT, how="inner")
        .where((F.col(COMPONENT) != F.col("_owner")) | (F.col(KEY) != F.col(_PREV)))
        .select(
            F.when(F.col(COMPONENT) == F.col("_owner"), F.lit(MERGE)).otherwise(F.lit(SPLIT))
            .alias("change"),
            F.col(_PREV).alias("from_key"), F.col(KEY).alias("to_key"), "identifiers",
        )
    )  # fmt: skip
    return Keyed(keyed, components, changes, (m, components))


def _component_keys(
    m: DataFrame, kept: DataFrame, previous: DataFrame, *, as_of: dt.date
) -> DataFrame:
    """Per component: its key (kept, or new), its size, whether the key is a previous one."""
    comps = m.groupBy(COMPONENT).agg(
        F.min_by(F.struct(KIND, VALUE), _ORDER).alias("_oldest"),
        F.max(F.col(_PREV).isNotNull()).alias("_had_key"),
        F.count(F.lit(1)).alias("size"),
    )
    oldest_kind, oldest = F.col("_oldest")[KIND], F.col("_oldest")[VALUE]
    fresh = new_key(oldest_kind, oldest)
    salted = new_key(oldest_kind, oldest, F.lit(as_of.isoformat()))
    taken = previous.select(F.col(KEY).alias("_taken")).distinct()
    candidate = comps.join(kept, comps[COMPONENT] == kept["_owner"], how="left").select(
        COMPONENT, "size", "_kept", "_oldest",
        F.when(F.col("_had_key"), salted).otherwise(fresh).alias("_candidate"),
    )  # fmt: skip
    with_taken = candidate.join(taken, candidate["_candidate"] == taken["_taken"], how="left")
    return with_taken.select(
        COMPONENT,
        F.coalesce(
            F.col("_kept"),
            F.when(F.col("_taken").isNotNull(), salted).otherwise(F.col("_candidate")),
        ).alias(KEY),
        "size",
        F.col("_kept").isNotNull().alias("kept"),
    )


def _check_unique(components: DataFrame) -> None:
    row = components.agg(F.count(F.lit(1)).alias("n"), F.countDistinct(KEY).alias("keys")).first()
    assert row is not None
    if row["n"] != row["keys"]:
        raise InputError(
            f"{row['n'] - row['keys']} customer key(s) would be shared by two components; "
            "nothing was written. Report this with the identity_map snapshots involved."
        )


def empty_previous(spark_df: DataFrame) -> DataFrame:
    """An empty previous snapshot (a first run), from any frame's session."""
    return spark_df.sparkSession.createDataFrame([], PREVIOUS_SCHEMA)
