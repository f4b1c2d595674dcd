"""What the customers' value says about segments: the base's totals and, per segmentation,
each segment's customers, mean and total expected CLV, mean P(alive) and share of the value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.storage import tables

P_ALIVE = "p_alive"
VALUE_COLUMNS = (P_ALIVE, "expected_purchases", "clv")
"""The ``customer_value`` columns a segmentation profiles and shows per segment."""


@dataclass(frozen=True)
class Totals:
    """The whole base's value."""

    customers: int
    clv: float
    mean_clv: float
    mean_p_alive: float
    expected_purchases: float
    flags: Mapping[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        return {"customers_valued": float(self.customers), "clv_total": self.clv,
                "clv_mean": self.mean_clv, "p_alive_mean": self.mean_p_alive,
                "expected_purchases_total": self.expected_purchases,
                **{f"flagged_{k}": float(v) for k, v in self.flags.items()}}  # fmt: skip


@dataclass(frozen=True)
class SegmentValue:
    """One segment's value (a segmentation's membership of the same date, joined)."""

    segment_id: int
    segment_name: str
    customers: int
    valued: int
    """Customers with a value row (a customer without a purchase up to as_of has none)."""
    mean_clv: float
    total_clv: float
    mean_p_alive: float
    share_of_value: float


def totals(scored: DataFrame) -> Totals:
    """Totals over ``scored`` (one aggregation) and the count of each flag."""
    row = scored.agg(
        F.count(F.lit(1)).alias("n"), F.sum("clv").alias("clv"), F.avg("clv").alias("mean"),
        F.avg("p_alive").alias("p"), F.sum("expected_purchases").alias("e"),
    ).first()  # fmt: skip
    assert row is not None
    flags = {r["flag"]: int(r["count"]) for r in
             scored.where(F.col("flag").isNotNull()).groupBy("flag").count().collect()}  # fmt: skip
    return Totals(int(row["n"]), float(row["clv"] or 0.0), float(row["mean"] or 0.0),
                  float(row["p"] or 0.0), float(row["e"] or 0.0), flags)  # fmt: skip


def by_segment(members: DataFrame, scored: DataFrame) -> dict[str, list[SegmentValue]]:
    """Each segmentation's segments (``members``: ``segment_membership`` rows of one date)
    with their customers' value: mean and total CLV, mean P(alive), the share of the total
    value (one aggregation); a member without a value row (no purchase) counts as unvalued."""
    value = scored.select(tables.CUSTOMER_ID, "clv", "p_alive")
    rows = (
        members.join(value, on=tables.CUSTOMER_ID, how="left")
        .groupBy(tables.MODEL_NAME, tables.SEGMENT_ID, tables.SEGMENT_NAME)
        .agg(F.count(F.lit(1)).alias("n"), F.count("clv").alias("valued"),
             F.avg("clv").alias("mean"), F.sum("clv").alias("total"),
             F.avg("p_alive").alias("p"))
        .collect()
    )  # fmt: skip
    out: dict[str, list[SegmentValue]] = {}
    for model in sorted({r[tables.MODEL_NAME] for r in rows}):
        mine = sorted((r for r in rows if r[tables.MODEL_NAME] == model),
                      key=lambda r: r[tables.SEGMENT_ID])  # fmt: skip
        whole = sum(float(r["total"] or 0.0) for r in mine)
        out[model] = [
            SegmentValue(int(r[tables.SEGMENT_ID]), str(r[tables.SEGMENT_NAME]), int(r["n"]),
                         int(r["valued"]), float(r["mean"] or 0.0), float(r["total"] or 0.0),
                         float(r["p"] or 0.0),
                         float(r["total"] or 0.0) / whole if whole else 0.0)
            for r in mine
        ]  # fmt: skip
    return out


def segment_values(
    assigned: DataFrame, names: Mapping[int, str], model_name: str, scored: DataFrame
) -> list[SegmentValue]:
    """:func:`by_segment` for one segmentation's assignment (``customer_id``, ``segment_id``)
    with its segment names, before (or without) its membership being written."""
    pairs = [x for sid, name in sorted(names.items()) for x in (F.lit(sid), F.lit(name))]
    members = assigned.select(
        tables.CUSTOMER_ID, tables.SEGMENT_ID,
        F.element_at(F.create_map(*pairs), F.col(tables.SEGMENT_ID)).alias(tables.SEGMENT_NAME),
        F.lit(model_name).alias(tables.MODEL_NAME),
    )  # fmt: skip
    return by_segment(members, scored).get(model_name, [])
