"""The identity graph: identifiers as nodes, an edge between two identifiers seen on one row,
and the guard against identifiers that would merge many customers.

Nodes carry a 64-bit id, the ``xxhash64`` of (type, identifier): the same in every run and on
every partitioning; two identifiers sharing one (about one chance in 10^6 at 10M identifiers)
is detected and refused, never merged.

The guard (``identity.max_degree``): an identifier linked to more distinct identifiers of a
type ``T`` than ``max_degree[T]`` (a family tablet linked to two CRM ids, a store's default
loyalty card linked to hundreds of emails) spans several customers. It keeps its own customer
key but is never used as an edge, and is reported with its degree. Degrees count every pair of
identifiers seen together on a row, before any edge is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from segmentation.errors import InputError
from segmentation.identity.sightings import IDS, KIND, SEEN, VALUE

NODE = "node"
SRC, DST = "src", "dst"
FIRST_SEEN, LAST_SEEN = "first_seen", "last_seen"
LINKED_TYPE, DEGREE, LIMIT = "linked_type", "degree", "limit"


def node_id(kind: Column, value: Column) -> Column:
    """The node id of an identifier: ``xxhash64(type, identifier)``."""
    return F.xxhash64(kind, value)


def nodes(rows: DataFrame) -> DataFrame:
    """One row per identifier: ``identifier_type``, ``identifier``, ``node``, ``first_seen``,
    ``last_seen`` (its earliest and latest dated sighting; null when only undated)."""
    seen = rows.select(F.explode(IDS).alias("i"), SEEN)
    return (
        seen.groupBy(F.col("i")[KIND].alias(KIND), F.col("i")[VALUE].alias(VALUE))
        .agg(F.min(SEEN).alias(FIRST_SEEN), F.max(SEEN).alias(LAST_SEEN))
        .select(KIND, VALUE, node_id(F.col(KIND), F.col(VALUE)).alias(NODE), FIRST_SEEN,
                LAST_SEEN)
    )  # fmt: skip


def check_ids(counted: Mapping[str, int]) -> None:
    """Refuse two identifiers sharing a node id (``identifiers`` and ``ids`` counted).

    Raises:
        InputError: a collision (never silently merged).
    """
    if counted["identifiers"] != counted["ids"]:
        raise InputError(
            f"{counted['identifiers'] - counted['ids']} pair(s) of identifiers share a 64-bit "
            "node id (xxhash64): stitching would merge them, so nothing was written. Report "
            "this; it is expected about once in 10^6 runs at 10M identifiers"
        )


def pairs(rows: DataFrame) -> DataFrame:
    """Every ordered pair of distinct identifiers seen on one row: ``a_type``, ``a``,
    ``a_node``, ``b_type``, ``b``, ``b_node`` (each unordered pair twice, once per order)."""
    linked = rows.where(F.size(IDS) > 1).select(F.explode(IDS).alias("a"), IDS)
    ordered = linked.select("a", F.explode(IDS).alias("b")).where(F.col("a") != F.col("b"))
    return ordered.select(
        F.col("a")[KIND].alias("a_type"), F.col("a")[VALUE].alias("a"),
        F.col("b")[KIND].alias("b_type"), F.col("b")[VALUE].alias("b"),
    ).distinct().select(
        "a_type", "a", node_id(F.col("a_type"), F.col("a")).alias("a_node"),
        "b_type", "b", node_id(F.col("b_type"), F.col("b")).alias("b_node"),
    )  # fmt: skip


@dataclass(frozen=True)
class Guard:
    """The degree limits per linked type (``identity.max_degree``)."""

    max_degree: Mapping[str, int]

    def shared(self, pair_rows: DataFrame) -> DataFrame:
        """Identifiers over a limit: ``identifier_type``, ``identifier``, ``node``,
        ``linked_type``, ``degree``, ``limit`` (the type furthest over its limit, ties by
        name)."""
        if not self.max_degree:
            return pair_rows.select(
                F.col("a_type").alias(KIND), F.col("a").alias(VALUE),
                F.col("a_node").alias(NODE), F.col("b_type").alias(LINKED_TYPE),
                F.lit(0).cast("long").alias(DEGREE), F.lit(0).cast("long").alias(LIMIT),
            ).limit(0)  # fmt: skip
        limits = F.create_map(*[F.lit(x) for kv in sorted(self.max_degree.items()) for x in kv])
        degrees = (
            pair_rows.groupBy("a_type", "a", "a_node", "b_type")
            .agg(F.count(F.lit(1)).alias(DEGREE))
            .withColumn(LIMIT, F.element_at(limits, F.col("b_type")).cast("long"))
            .where(F.col(LIMIT).isNotNull() & (F.col(DEGREE) > F.col(LIMIT)))
        )
        worst = F.struct((F.col(DEGREE) - F.col(LIMIT)).alias("over"), F.col("b_type"),
                         F.col(DEGREE), F.col(LIMIT))  # fmt: skip
        return (
            degrees.groupBy("a_type", "a", "a_node")
            .agg(F.max(worst).alias("w"))
            .select(
                F.col("a_type").alias(KIND), F.col("a").alias(VALUE), F.col("a_node").alias(NODE),
                F.col("w.b_type").alias(LINKED_TYPE), F.col(f"w.{DEGREE}").alias(DEGREE),
                F.col(f"w.{LIMIT}").alias(LIMIT),
            )
        )  # fmt: skip


def edges(pair_rows: DataFrame, shared: DataFrame) -> DataFrame:
    """The graph's undirected edges (``src`` > ``dst``, node ids, distinct) between identifiers
    the guard did not hold back."""
    held = shared.select(NODE)
    kept = (
        pair_rows.where(F.col("a_node") > F.col("b_node"))
        .join(held.withColumnRenamed(NODE, "a_node"), on="a_node", how="left_anti")
        .join(held.withColumnRenamed(NODE, "b_node"), on="b_node", how="left_anti")
    )
    return kept.select(F.col("a_node").alias(SRC), F.col("b_node").alias(DST)).distinct()
