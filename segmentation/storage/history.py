"""Segments over time: SCD2 membership history, migration matrices and drift (PSI).

Pure DataFrame transforms and decisions on plain values; ``publishing`` reads and writes the
tables.

History semantics (``segment_membership_history``, one row per customer and stay in a segment):
``valid_from`` is the ``as_of`` of the first snapshot that put the customer in the segment;
``valid_to`` is the ``as_of`` of the first snapshot where that no longer held (the customer moved
or was absent), exclusive; ``valid_to`` is null and ``is_current`` true for the open row.
``segment_name`` and ``model_version`` are those of the snapshot that opened the row: a retrain
that keeps a customer's (stable) segment id does not open a new row. Rows are kept per
``model_name`` (a segmentation), so several segmentations can share the table.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from segmentation.storage import tables
from segmentation.storage.tables import CUSTOMER_ID

HISTORY_SCHEMA = tables.HISTORY_SCHEMA
# Shares below this are floored in the PSI (an empty bin would make it infinite).
PSI_FLOOR = 1e-4


def _conform(df: DataFrame) -> DataFrame:
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in HISTORY_SCHEMA])


def _stays(df: DataFrame, model_name: str, valid_from: Column, valid_to: Column) -> DataFrame:
    """History rows from ``df``'s customer_id, segment_id, segment_name and model_version."""
    return _conform(
        df.withColumn("model_name", F.lit(model_name))
        .withColumn("valid_from", valid_from)
        .withColumn("valid_to", valid_to)
        .withColumn("is_current", F.col("valid_to").isNull())
    )


def _snapshot_rows(snapshot: DataFrame, model_name: str) -> DataFrame:
    return snapshot.where(F.col("model_name") == model_name).select(
        CUSTOMER_ID, "segment_id", "segment_name", "model_version"
    )


UpdateMode = Literal["created", "merged", "rebuilt"]


def update_mode(*, table_exists: bool, latest: dt.date | None, as_of: dt.date) -> UpdateMode:
    """How a snapshot of ``as_of`` enters the history of one model.

    ``created``: no table yet (the snapshot is its first content). ``merged``: ``as_of`` is on
    or after every date the model's history holds (``latest``; None for a model without rows),
    the forward case, one MERGE of ``merge_source``. ``rebuilt``: a backfill (older than
    ``latest``), the model's history derived again from every snapshot (``rebuild``).
    """
    if not table_exists:
        return "created"
    return "merged" if latest is None or latest <= as_of else "rebuilt"


def moves(migration: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Customers who stayed, moved between segments, entered and left, from migration rows
    (``from_segment_id``/``to_segment_id`` null: entered/left; ``customers``: the count)."""
    out = {"stayed": 0, "moved": 0, "entered": 0, "left": 0}
    for r in migration:
        if r["from_segment_id"] is None:
            out["entered"] += r["customers"]
        elif r["to_segment_id"] is None:
            out["left"] += r["customers"]
        elif r["from_segment_id"] == r["to_segment_id"]:
            out["stayed"] += r["customers"]
        else:
            out["moved"] += r["customers"]
    return out


def latest_change(history: DataFrame, model_name: str) -> dt.date | None:
    """The latest snapshot date the history of ``model_name`` reflects (a from or a to)."""
    row = (
        history.where(F.col("model_name") == model_name)
        .agg(F.greatest(F.max("valid_from"), F.max("valid_to")).alias("d"))
        .first()
    )
    return None if row is None else row["d"]


def apply_snapshot(
    history: DataFrame | None, snapshot: DataFrame, *, as_of: dt.date, model_name: str
) -> DataFrame:
    """The whole history table after merging the membership snapshot of ``as_of``.

    Valid when ``as_of`` is on or after every date the history of ``model_name`` holds (the
    normal, forward case; see ``latest_change``). Re-applying the latest snapshot first undoes
    it (rows it opened are dropped, rows it closed reopened), so a replay is idempotent.
    Earlier snapshots (a backfill) need ``rebuild``.

    Args:
        history: the current table (None when it does not exist yet).
        snapshot: membership rows (customer_id, segment_id, segment_name, model_name,
            model_version) of ``as_of``.
    """
    day = F.lit(as_of).cast("date")
    new = _snapshot_rows(snapshot, model_name).alias("n")
    if history is None:
        return _stays(new, model_name, day, F.lit(None).cast("date"))
    others = history.where(F.col("model_name") != model_name)
    mine = history.where(F.col("model_name") == model_name)
    # Undo an earlier application of this same snapshot (a replay).
    mine = mine.where(F.col("valid_from") != day).withColumn(
        "valid_to", F.when(F.col("valid_to") == day, None).otherwise(F.col("valid_to"))
    )
    closed = mine.where(F.col("valid_to").isNotNull())
    open_rows = mine.where(F.col("valid_to").isNull()).alias("o")
    joined = open_rows.join(new, F.col(f"o.{CUSTOMER_ID}") == F.col(f"n.{CUSTOMER_ID}"), "full")
    same = F.col("o.segment_id") == F.col("n.segment_id")
    # Open rows: kept open when the customer is still in the segment, closed otherwise.
    kept_or_closed = joined.where(F.col(f"o.{CUSTOMER_ID}").isNotNull()).select(
        F.col(f"o.{CUSTOMER_ID}").alias(CUSTOMER_ID),
        F.lit(model_name).alias("model_name"),
        F.col("o.segment_id").alias("segment_id"),
        F.col("o.segment_name").alias("segment_name"),
        F.col("o.valid_from").alias("valid_from"),
        F.when(same, None).otherwise(day).alias("valid_to"),
        F.coalesce(same, F.lit(False)).alias("is_current"),
        F.col("o.model_version").alias("model_version"),
    )
    # New open rows: a customer who moved, or who was not open before.
    opened = _stays(
        joined.where(
            F.col(f"n.{CUSTOMER_ID}").isNotNull() & (F.col(f"o.{CUSTOMER_ID}").isNull() | ~same)
        ).select("n.*"),
        model_name,
        day,
        F.lit(None).cast("date"),
    )
    return (
        _conform(others.withColumn("is_current", F.col("valid_to").isNull()))
        .unionByName(_conform(closed.withColumn("is_current", F.lit(False))))
        .unionByName(_conform(kept_or_closed))
        .unionByName(_conform(opened))
    )


def merge_source(
    history: DataFrame, snapshot: DataFrame, *, as_of: dt.date, model_name: str
) -> DataFrame:
    """The rows of ``model_name``'s history that applying the snapshot of ``as_of`` writes.

    The source of one MERGE on (customer_id, model_name, valid_from): every row
    ``apply_snapshot`` opens, closes, keeps open or re-opens. Rows closed before ``as_of`` are
    untouched and not in it. A target row of ``model_name`` opened on ``as_of`` that is not in
    it (an earlier application of this same snapshot, replayed without that customer) is the
    only row the MERGE deletes; customers who left get their row closed, never deleted.
    """
    day = F.lit(as_of).cast("date")
    applied = apply_snapshot(
        history.where(F.col("model_name") == model_name), snapshot, as_of=as_of,
        model_name=model_name,
    )  # fmt: skip
    touched = F.col("valid_to").isNull() | (F.col("valid_to") == day) | (F.col("valid_from") == day)
    return applied.where(touched)


def rebuild(membership: DataFrame, *, model_name: str, snapshots: Sequence[dt.date]) -> DataFrame:
    """The history of ``model_name`` derived from every membership snapshot (any order).

    Used for backfills (a snapshot older than the latest one) and as the definition the
    incremental ``apply_snapshot`` must agree with.

    Args:
        membership: segment_membership rows (every ``as_of``).
        snapshots: every ``as_of`` of ``model_name`` in ``membership`` (a short list).
    """
    dates = sorted(set(snapshots))
    if not dates:
        return membership.sparkSession.createDataFrame([], HISTORY_SCHEMA)
    index = membership.sparkSession.createDataFrame(
        [(d, i, dates[i + 1] if i + 1 < len(dates) else None) for i, d in enumerate(dates)],
        "as_of date, snap int, next_as_of date",
    )
    rows = (
        membership.where(F.col("model_name") == model_name)
        .select(CUSTOMER_ID, "as_of", "segment_id", "segment_name", "model_version")
        .join(F.broadcast(index), "as_of")
    )
    w = Window.partitionBy(CUSTOMER_ID).orderBy("snap")
    starts = (
        F.lag("snap").over(w).isNull()
        | (F.lag("snap").over(w) != F.col("snap") - 1)
        | (F.lag("segment_id").over(w) != F.col("segment_id"))
    )
    runs = rows.withColumn("start", starts.cast("int")).withColumn(
        "stay", F.sum("start").over(w.rowsBetween(Window.unboundedPreceding, 0))
    )
    stays = runs.groupBy(CUSTOMER_ID, "stay").agg(
        F.min("as_of").alias("valid_from"),
        F.max_by("next_as_of", "snap").alias("valid_to"),
        F.min_by("segment_id", "snap").alias("segment_id"),
        F.min_by("segment_name", "snap").alias("segment_name"),
        F.min_by("model_version", "snap").alias("model_version"),
    )
    return _stays(stays, model_name, F.col("valid_from"), F.col("valid_to"))


def migration_matrix(
    previous: DataFrame, current: DataFrame, *, as_of: dt.date, previous_as_of: dt.date,
    model_name: str,
) -> DataFrame:  # fmt: skip
    """Customers from each segment of ``previous_as_of`` to each segment of ``as_of``.

    A null ``from_segment_id`` counts customers new in ``as_of``; a null ``to_segment_id``
    those no longer present. ``share_of_from`` is the share of the ``from`` segment's customers
    (of all new customers for the null row).
    """
    p = _snapshot_rows(previous, model_name).alias("p")
    c = _snapshot_rows(current, model_name).alias("c")
    joined = p.join(c, F.col(f"p.{CUSTOMER_ID}") == F.col(f"c.{CUSTOMER_ID}"), "full")
    counts = joined.groupBy(
        F.col("p.segment_id").alias("from_segment_id"),
        F.col("p.segment_name").alias("from_segment_name"),
        F.col("c.segment_id").alias("to_segment_id"),
        F.col("c.segment_name").alias("to_segment_name"),
    ).agg(F.count(F.lit(1)).alias("customers"))
    w = Window.partitionBy("from_segment_id")
    return counts.select(
        F.lit(as_of).cast("date").alias("as_of"),
        F.lit(previous_as_of).cast("date").alias("previous_as_of"),
        F.lit(model_name).alias("model_name"),
        F.col("from_segment_id").cast("int"),
        "from_segment_name",
        F.col("to_segment_id").cast("int"),
        "to_segment_name",
        F.col("customers").cast("long"),
        (F.col("customers") / F.sum("customers").over(w)).alias("share_of_from"),
    )


def psi(expected: Mapping[Any, float], actual: Mapping[Any, float]) -> float:
    """Population stability index of two distributions given as counts (or shares) per bin.

    ``sum((a - e) * ln(a / e))`` over the union of bins, shares floored at ``PSI_FLOOR``.
    Common reading: < 0.1 stable, 0.1 to 0.25 moderate shift, > 0.25 significant shift.
    """
    e_total = sum(expected.values()) or 1.0
    a_total = sum(actual.values()) or 1.0
    value = 0.0
    for key in set(expected) | set(actual):
        e = max(expected.get(key, 0.0) / e_total, PSI_FLOOR)
        a = max(actual.get(key, 0.0) / a_total, PSI_FLOOR)
        value += (a - e) * math.log(a / e)
    return value


def segment_counts(snapshot: DataFrame) -> dict[int, int]:
    """Customers per segment id of one membership snapshot."""
    rows = snapshot.groupBy("segment_id").count().collect()
    return {int(r["segment_id"]): int(r["count"]) for r in rows}


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    edges: tuple[float, ...]
    baseline: Mapping[int, int]
    current: Mapping[int, int]


def _below(x: Column) -> Callable[[Column], Column]:
    """``e -> e < x``, for ``F.filter`` (bound here, not in a loop)."""
    return lambda e: e < x


def feature_psi(
    baseline: DataFrame, current: DataFrame, features: Sequence[str], *, bins: int = 10
) -> list[FeatureDrift]:
    """PSI per feature, with bins at the baseline's quantiles (nulls are a bin of their own).

    Three Spark jobs whatever the number of features: the baseline quantiles, then the bin
    counts of each side (every feature's bin in one exploded pass).
    """
    if not features:
        return []
    probs = [i / bins for i in range(1, bins)]
    row = baseline.agg(
        *[
            F.percentile_approx(F.col(f).cast("double"), probs, 10000).alias(f"q{i}")
            for i, f in enumerate(features)
        ]
    ).first()
    edges = {
        f: tuple(sorted({float(x) for x in (row[f"q{i}"] if row else None) or []}))
        for i, f in enumerate(features)
    }

    def counts(df: DataFrame) -> dict[str, dict[int, int]]:
        cells = []
        for f in features:
            x = F.col(f).cast("double")
            # The bin: how many edges lie strictly below x (bins are (e_i, e_i+1]), one
            # higher-order expression per feature, not one comparison per edge.
            edge_array = F.array(*[F.lit(float(e)) for e in edges[f]]).cast("array<double>")
            index = F.size(F.filter(edge_array, _below(x))) if edges[f] else F.lit(0)
            cells.append(
                F.struct(
                    F.lit(f).alias("feature"),
                    F.when(x.isNull() | F.isnan(x), -1).otherwise(index).alias("bin"),
                )
            )
        out: dict[str, dict[int, int]] = {f: {} for f in features}
        exploded = df.select(F.explode(F.array(*cells)).alias("c")).select("c.*")
        for r in exploded.groupBy("feature", "bin").count().collect():
            out[r["feature"]][int(r["bin"])] = int(r["count"])
        return out

    base, cur = counts(baseline), counts(current)
    return [
        FeatureDrift(
            f,
            psi(base[f], cur[f]),
            edges[f],
            base[f],
            cur[f],  # type: ignore[arg-type]
        )
        for f in features
    ]
