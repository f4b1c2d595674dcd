"""Connected components of the identity graph, distributed: the alternating large-star /
small-star algorithm of Kiveris, Lattanzi, Mirrokni, Rastogi and Vassilvitskii, "Connected
Components in MapReduce and Beyond" (SoCC 2014), in DataFrame operations.

Every node ends up pointing at the smallest node id of its component. Each round is

* large-star: every node ``u`` links each neighbour ``v > u`` to ``m(u)``, the smallest of
  ``u`` and its neighbours;
* small-star: every node ``u`` links each neighbour ``v <= u``, and itself, to the smallest of
  them.

Both keep the components and shrink their diameter; the paper proves ``O(log^2 n)`` rounds
(``O(log n)`` in practice, also on long chains, where label propagation needs ``n``). The loop
stops when the edges form stars: no node has two parents and no parent has a parent. Each
step's edges are checkpointed (``localCheckpoint``, or ``checkpoint`` into
``identity.checkpoint_dir``), so the plan does not grow with the rounds.

A graph, or what stays open of it after a round, of at most ``driver_max_edges`` edges is
finished on the driver instead (``identity.driver_max_edges``): its edges are collected (Arrow)
and labelled by ``scipy.sparse.csgraph.connected_components`` (a breadth-first search), the
same labels in one pass instead of a few rounds of distributed shuffles, each a fixed cost of
several seconds whatever the graph's size.

GraphFrames implements the same algorithm (its ``two_phase`` connected components), but no
GraphFrames build for Spark 4 / Scala 2.13 is served by Maven Central where this project
resolves its jars (``make setup``), so the project does not depend on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from scipy.sparse import coo_matrix, csgraph

from segmentation.errors import InputError
from segmentation.identity.graph import DST, NODE, SRC

log = logging.getLogger(__name__)
COMPONENT = "component"


@dataclass(frozen=True)
class Components:
    """Each node's component (its smallest node id) and how the algorithm got there."""

    labels: DataFrame
    """``node``, ``component`` for every node (isolated ones label themselves)."""
    iterations: int
    """Rounds of large-star + small-star."""
    converged: bool
    edges: int = 0
    """The graph's edges."""
    edges_per_iteration: tuple[int, ...] = field(default=())
    """Edges still open after each round (those of components not settled yet: 0 at the
    end). A component leaves the loop as soon as it is a star."""
    driver_edges: int = 0
    """Open edges whose components were finished on the driver (0: none)."""


def _large_star(edges: DataFrame) -> DataFrame:
    both = edges.select(F.col(SRC).alias("u"), F.col(DST).alias("v")).unionByName(
        edges.select(F.col(DST).alias("u"), F.col(SRC).alias("v"))
    )
    smallest = F.least(F.min("v").over(Window.partitionBy("u")), F.col("u"))
    return (
        both.select("u", "v", smallest.alias("m"))
        .where(F.col("v") > F.col("u"))
        .select(F.col("v").alias(SRC), F.col("m").alias(DST))
        .distinct()
    )


def _small_star(edges: DataFrame) -> DataFrame:
    # Edges point from the larger node to the smaller (src > dst): each src's neighbours that
    # are smaller than it are its dsts, and the smallest of them is its new parent.
    linked = edges.select(SRC, DST, F.min(DST).over(Window.partitionBy(SRC)).alias("m"))
    to_parent = linked.select(F.col(SRC), F.col("m").alias(DST))
    siblings = linked.where(F.col(DST) != F.col("m")).select(
        F.col(DST).alias(SRC), F.col("m").alias(DST)
    )
    return to_parent.unionByName(siblings).distinct()


def _settled(edges: DataFrame) -> DataFrame:
    """The edges with ``open``: false on every edge of a finished star, a whole component.

    A node is unsettled with two parents, or with a parent while it is a parent itself. A star
    whose root and members are all settled is a connected component on its own (any other edge
    would unsettle one of them): its edges leave the loop.
    """
    ends = edges.select(F.col(SRC).alias("n"), F.lit(1).alias("out"), F.lit(0).alias("in_"))
    ends = ends.unionByName(edges.select(F.col(DST).alias("n"), F.lit(0).alias("out"),
                                         F.lit(1).alias("in_")))  # fmt: skip
    per_node = ends.groupBy("n").agg(F.sum("out").alias("out"), F.sum("in_").alias("in_"))
    unsettled = per_node.select(
        "n", ((F.col("out") > 1) | ((F.col("out") >= 1) & (F.col("in_") >= 1))).alias("u")
    )
    flagged = edges.join(unsettled.withColumnRenamed("n", SRC).withColumnRenamed("u", "u_src"),
                         on=SRC, how="inner")  # fmt: skip
    flagged = flagged.join(unsettled.withColumnRenamed("n", DST).withColumnRenamed("u", "u_dst"),
                           on=DST, how="inner")  # fmt: skip
    star_open = F.max(F.col("u_src") | F.col("u_dst")).over(Window.partitionBy(DST))
    return flagged.select(SRC, DST, star_open.alias("open"))


def _counted(flagged: DataFrame) -> tuple[int, int]:
    """Edges still open, and edges of finished stars."""
    counts = {r["open"]: int(r["count"]) for r in flagged.groupBy("open").count().collect()}
    return counts.get(True, 0), counts.get(False, 0)


def _checkpointed(df: DataFrame, reliable: bool) -> DataFrame:
    """The rows materialised and the lineage cut (reliable: into the checkpoint dir)."""
    if reliable:
        return df.checkpoint(eager=True)
    return df.localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)


def on_driver(edges: pa.Table) -> pa.Table:
    """``node``, ``component`` (its smallest node id) for every node of ``edges`` (``src``,
    ``dst``), by ``scipy.sparse.csgraph.connected_components``."""
    if edges.num_rows == 0:
        return pa.table({NODE: pa.array([], pa.int64()), COMPONENT: pa.array([], pa.int64())})
    src = edges.column(SRC).to_numpy()
    dst = edges.column(DST).to_numpy()
    ids, index = np.unique(np.concatenate([src, dst]), return_inverse=True)
    m = len(src)
    adjacency = coo_matrix(
        (np.ones(m, dtype=np.int8), (index[:m], index[m:])), shape=(len(ids), len(ids))
    )
    _, label = csgraph.connected_components(adjacency, directed=False)
    # ``ids`` is sorted: a component's first node in it is its smallest.
    _, first = np.unique(label, return_index=True)
    return pa.table({NODE: ids, COMPONENT: ids[first][label]})


def connected_components(
    nodes: DataFrame,
    edges: DataFrame,
    *,
    max_iterations: int,
    checkpoint_dir: str | None = None,
    driver_max_edges: int = 0,
) -> Components:
    """Label every node with its component's smallest node id.

    Args:
        nodes: a ``node`` column (LONG), one row per node.
        edges: undirected edges ``src`` > ``dst`` (LONG), distinct, no self-loops.
        max_iterations: rounds allowed before giving up (``identity.max_iterations``).
        checkpoint_dir: reliable checkpoints there (set on the SparkContext); None: local
            checkpoints on the executors.
        driver_max_edges: a graph, or what stays open of it after a round, of at most this
            many edges is finished on the driver (:func:`on_driver`); 0: never.

    Raises:
        InputError: not converged within ``max_iterations`` rounds (nothing is labelled).
    """
    spark = edges.sparkSession
    small = _small_graph(nodes, edges, driver_max_edges)
    if small is not None:
        return small
    if checkpoint_dir is not None:
        spark.sparkContext.setCheckpointDir(checkpoint_dir)
    reliable = checkpoint_dir is not None
    flagged = _checkpointed(_settled(edges), reliable)
    active, finished = _counted(flagged)
    n_graph, done = active + finished, [flagged.where(~F.col("open"))]
    counts: list[int] = []
    driver = 0
    while active:
        if active <= driver_max_edges:
            driver, finished_here = _finish_on_driver(flagged.where(F.col("open")))
            done.append(finished_here)
            break
        if len(counts) >= max_iterations:
            raise InputError(
                f"the identity graph's connected components did not converge in "
                f"{max_iterations} rounds (identity.max_iterations); open edges after each "
                f"round: {counts}. Raise identity.max_iterations. Nothing was written."
            )
        current = flagged.where(F.col("open")).select(SRC, DST)
        # One checkpoint per round: the lineage never holds more than one round.
        flagged = _checkpointed(_settled(_small_star(_large_star(current))), reliable)
        active, finished = _counted(flagged)
        done.append(flagged.where(~F.col("open")))
        counts.append(active)
        log.info("identity graph: round %d, %d edges open, %d settled", len(counts), active,
                 finished)  # fmt: skip
    stars = done[0].select(SRC, DST)
    for part in done[1:]:
        stars = stars.unionByName(part.select(SRC, DST))
    parents = stars.select(F.col(SRC).alias(NODE), F.col(DST).alias(COMPONENT))
    labels = _labels(nodes, parents)
    return Components(labels, len(counts), True, n_graph, tuple(counts), driver_edges=driver)


def _small_graph(nodes: DataFrame, edges: DataFrame, driver_max_edges: int) -> Components | None:
    """The components of a graph of at most ``driver_max_edges`` edges, labelled on the
    driver without a distributed round (None: a larger graph)."""
    if driver_max_edges <= 0:
        return None
    head = edges.select(SRC, DST).limit(driver_max_edges + 1).toArrow()
    if head.num_rows > driver_max_edges:
        return None
    local = edges.sparkSession.createDataFrame(on_driver(head))
    return Components(_labels(nodes, local), 0, True, head.num_rows, driver_edges=head.num_rows)


def _finish_on_driver(open_edges: DataFrame) -> tuple[int, DataFrame]:
    """The open edges' components labelled on the driver, as star edges (``src`` -> its
    component's smallest node), and how many edges that was."""
    collected = open_edges.select(SRC, DST).toArrow()
    labels = open_edges.sparkSession.createDataFrame(on_driver(collected))
    log.info("identity graph: %d open edges finished on the driver", collected.num_rows)
    return collected.num_rows, labels.select(F.col(NODE).alias(SRC), F.col(COMPONENT).alias(DST))


def _labels(nodes: DataFrame, parents: DataFrame) -> DataFrame:
    """Each node's component: its parent (``parents``: ``node``, ``component``), or itself."""
    return (
        nodes.select(NODE)
        .join(parents, on=NODE, how="left")
        .select(NODE, F.coalesce(F.col(COMPONENT), F.col(NODE)).alias(COMPONENT))
    )
