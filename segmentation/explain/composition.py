"""Who is in a segment: its composition on the customers dimension's attributes.

``composition`` reports, per segment, the share of customers in each value (or bin) of the
customers dimension's attributes, next to the population's share; sensitive attributes are
flagged for review (and may never be clustering features: ``check_not_sensitive``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.errors import InputError
from segmentation.inputs import parsing
from segmentation.storage import tables
from segmentation.storage.tables import CUSTOMER_ID, SEGMENT_ID

MISSING = "(missing)"
OTHER = "other"

COMPOSITION_SCHEMA = tables.COMPOSITION_ROWS


@dataclass(frozen=True)
class Composition:
    """Segment composition on the customers dimension's attributes."""

    attributes: tuple[str, ...]
    sensitive: tuple[str, ...]
    missing: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def max_gap(self, attribute: str) -> float:
        """Largest |segment share - population share| of any value of ``attribute``."""
        gaps = [abs(r[4] - r[5]) for r in self.rows if r[1] == attribute]
        return max(gaps, default=0.0)


def composition(
    assigned: DataFrame,
    customers: DataFrame,
    attributes: Sequence[str],
    *,
    sensitive: Sequence[str],
    bins: Mapping[str, Sequence[float]],
    max_levels: int,
) -> Composition:
    """Shares of each attribute value per segment and in the whole population.

    Customers absent from the dimension, and null values, count as ``(missing)``: every
    customer of every segment is counted once per attribute. Numeric attributes are binned
    (configured edges, else the population's quartiles); categorical ones keep their
    ``max_levels`` most frequent values and pool the rest as ``other``.

    Args:
        assigned: ``customer_id`` and ``segment_id`` of every customer.
        customers: the customers dimension (``customer_id`` plus attributes).
        attributes: attributes to report; sensitive ones are always added.
    """
    by_lower = {c.lower(): c for c in customers.columns}
    wanted = list(dict.fromkeys([*attributes, *sensitive]))
    present = [a for a in wanted if a.lower() in by_lower and a.lower() != CUSTOMER_ID]
    missing = tuple(a for a in wanted if a not in present)
    sensitive_set = {s.lower() for s in sensitive}
    if not present:
        return Composition((), tuple(sensitive), missing, ())
    fields = {f.name: f.dataType for f in customers.schema.fields}
    joined = assigned.select(CUSTOMER_ID, SEGMENT_ID).join(
        customers.select(
            CUSTOMER_ID, *[F.col(f"`{by_lower[a.lower()]}`").alias(a) for a in present]
        ),
        on=CUSTOMER_ID,
        how="left",
    )
    numeric = [a for a in present if isinstance(fields[by_lower[a.lower()]], T.NumericType)]
    edges = _edges(joined, numeric, bins)
    labels = [
        F.struct(F.lit(a).alias("attribute"), _value_label(F.col(a), edges.get(a)).alias("value"))
        for a in present
    ]
    stacked = joined.select(SEGMENT_ID, F.explode(F.array(*labels)).alias("kv")).select(
        SEGMENT_ID, "kv.attribute", "kv.value"
    )
    counts = stacked.groupBy(SEGMENT_ID, "attribute", "value").agg(
        F.count(F.lit(1)).alias("customers")
    )
    pooled = _pool_levels(counts, numeric, max_levels).collect()
    return Composition(
        attributes=tuple(present),
        sensitive=tuple(a for a in present if a.lower() in sensitive_set),
        missing=missing,
        rows=_shares(pooled, sensitive_set),
    )


def _edges(
    joined: DataFrame, numeric: Sequence[str], bins: Mapping[str, Sequence[float]]
) -> dict[str, list[float]]:
    """Bin edges of numeric attributes: configured, else the population's quartiles."""
    edges = {a: list(bins[a]) for a in numeric if a in bins}
    unbinned = [a for a in numeric if a not in edges]
    if unbinned:
        q = joined.agg(
            *[
                F.percentile_approx(F.col(a).cast("double"), [0.25, 0.5, 0.75], 10000).alias(a)
                for a in unbinned
            ]
        ).first()
        assert q is not None
        for a in unbinned:
            edges[a] = sorted(set(q[a] or []))
    return edges


def _pool_levels(counts: DataFrame, numeric: Sequence[str], max_levels: int) -> DataFrame:
    """Counts per segment and level: the most frequent values of categorical attributes kept,
    the rest pooled as ``other`` (bins and ``(missing)`` are always kept)."""
    population = counts.groupBy("attribute", "value").agg(F.sum("customers").alias("pop"))
    ranked = population.withColumn(
        "rank", F.row_number().over(Window.partitionBy("attribute").orderBy(F.desc("pop"), "value"))
    )
    kept = ranked.select(
        "attribute",
        "value",
        F.when(
            (F.col("rank") <= max_levels)
            | (F.col("value") == MISSING)
            | F.col("attribute").isin(numeric or [""]),
            F.col("value"),
        )
        .otherwise(F.lit(OTHER))
        .alias("level"),
    )
    return (
        counts.join(kept, on=["attribute", "value"])
        .groupBy(SEGMENT_ID, "attribute", "level")
        .agg(F.sum("customers").alias("customers"))
    )


def _shares(pooled: Sequence[Any], sensitive: set[str]) -> tuple[tuple[Any, ...], ...]:
    """Composition rows: segment, attribute, level, customers, segment and population shares."""
    seg_size: dict[tuple[int, str], int] = {}
    pop_level: dict[tuple[str, str], int] = {}
    pop_size: dict[str, int] = {}
    for r in pooled:
        n = int(r["customers"])
        key = (int(r[SEGMENT_ID]), r["attribute"])
        seg_size[key] = seg_size.get(key, 0) + n
        pop_level[(r["attribute"], r["level"])] = pop_level.get((r["attribute"], r["level"]), 0) + n
        pop_size[r["attribute"]] = pop_size.get(r["attribute"], 0) + n
    return tuple(
        sorted(
            (
                int(r[SEGMENT_ID]),
                r["attribute"],
                r["level"],
                int(r["customers"]),
                int(r["customers"]) / seg_size[(int(r[SEGMENT_ID]), r["attribute"])],
                pop_level[(r["attribute"], r["level"])] / pop_size[r["attribute"]],
                r["attribute"].lower() in sensitive,
            )
            for r in pooled
        )
    )


def _value_label(value: Column, edges: Sequence[float] | None) -> Column:
    """The value as a string; numeric values as their bin, e.g. ``25-35``, ``<25``, ``>=65``."""
    if edges is None:
        text = parsing.blank_is_null(value)
        return F.when(text.isNull(), F.lit(MISSING)).otherwise(text)
    x = value.cast("double")
    if not edges:
        return F.when(x.isNull(), F.lit(MISSING)).otherwise(F.lit("all"))
    expr = F.when(x.isNull(), F.lit(MISSING)).when(x < edges[0], F.lit(f"<{_num(edges[0])}"))
    for lo, hi in itertools.pairwise(edges):
        expr = expr.when(x < hi, F.lit(f"{_num(lo)}-{_num(hi)}"))
    return expr.otherwise(F.lit(f">={_num(edges[-1])}"))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def check_not_sensitive(features: Sequence[str], sensitive: Sequence[str]) -> None:
    """A model's feature list must not contain a sensitive attribute (case-insensitive)."""
    used = sorted(f for f in features if f.lower() in {s.lower() for s in sensitive})
    if used:
        raise InputError(
            f"the model's features {used} are sensitive attributes (explain.sensitive_attributes)"
        )
