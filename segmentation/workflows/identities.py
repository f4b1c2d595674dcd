"""Identity stitching as of a date: ``identity_map``, ``identity_changes``, ``identity_guards``.

Every identifier seen up to ``features.as_of`` in the configured inputs is normalised
(``identity.normalise``); identifiers seen on one row are linked, except through identifiers
the guard holds back (``identity.graph``); the connected components (``identity.components``:
large-star / small-star) are the customers, and each keeps the key it had in the previous
snapshot (``identity.keys``). One MLflow run records the counts, the rounds and convergence.

Publishing order: ``identity_guards``, ``identity_changes``, then ``identity_map`` (what the
other jobs read): a failure between writes leaves the previous map in use, and a re-run of the
same ``as_of`` replaces all three (its previous snapshot is the latest one *before* ``as_of``,
so a re-run gives the same keys).

Carried forward (``run(unchanged_since=...)``, ``make run``'s second date, whose inputs are
those of its first): when no event and no dated edge was seen on a day after the earlier
snapshot, up to ``as_of``, and that snapshot is the latest before ``as_of``, the stitching
would read the same sightings, find the same components and keep every key. The snapshot's
map and guards are then written again under ``as_of``, with no changes, instead.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig, IdentityConfig
from segmentation.errors import InputError
from segmentation.identity import components, graph, keys, sightings
from segmentation.identity.sightings import KIND, VALUE
from segmentation.runtime import timing, tracking
from segmentation.storage import tables

log = logging.getLogger(__name__)
JOB = "stitch_identities"
EXAMPLES = 10


@dataclass(frozen=True)
class Shared:
    """An identifier the guard held back."""

    identifier_type: str
    identifier: str
    linked_type: str
    degree: int
    limit: int


@dataclass
class IdentityResult:
    as_of: dt.date
    previous_as_of: dt.date | None
    run_id: str
    counts: tuple[sightings.ColumnCounts, ...]
    identifiers: int
    edges: int
    customers: int
    iterations: int
    converged: bool
    edges_per_iteration: tuple[int, ...]
    driver_edges: int = 0
    """Open edges whose components were finished on the driver (identity.driver_max_edges)."""
    kept_keys: int = 0
    new_keys: int = 0
    merges: int = 0
    splits: int = 0
    shared: int = 0
    shared_examples: tuple[Shared, ...] = ()
    large: int = 0
    large_examples: tuple[tuple[str, int], ...] = ()
    sizes: dict[str, int] = field(default_factory=dict)
    """Customers by number of identifiers (``1``, ``2``, ``3-5``, ``6-10``, ``> 10``)."""
    versions: dict[str, int] = field(default_factory=dict)
    carried_from: dt.date | None = None
    """The snapshot carried forward (see the module docstring); None: stitched."""


def run(
    spark: SparkSession, cfg: AppConfig, *, unchanged_since: IdentityResult | None = None
) -> IdentityResult:
    """Stitch the identifiers seen up to ``features.as_of`` and write the three tables.

    Args:
        unchanged_since: an earlier date's result, written in this application from the same
            inputs and configuration: carried forward when nothing was seen since (module
            docstring).

    Raises:
        InputError: stitching is not configured, an input or identifier column is missing,
            or the graph did not converge within ``identity.max_iterations`` (nothing is
            written).
    """
    identity = cfg.stitching()
    if identity is None:
        raise InputError(
            "identity stitching is not configured: set identity.enabled=true and list the "
            "events' identifier columns in identity.identifiers (docs/identity.md)"
        )
    experiment_id = tracking.configure(cfg.tracking)
    as_of = cfg.features.as_of
    with tracking.run(experiment_id, f"{JOB} {as_of}") as run_id:
        tracking.set_tags({"job": JOB})
        _log_params(cfg, identity)
        result = None
        if unchanged_since is not None:
            result = _carried(spark, cfg, identity, unchanged_since, run_id=run_id)
        if result is None:
            result = _stitched(spark, cfg, identity, run_id=run_id)
        tracking.log_metrics(_metrics(result))
        tracking.set_tags({f"output.{n}.version": v for n, v in result.versions.items()})
        if result.carried_from is not None:
            tracking.set_tags({"carried_from": result.carried_from.isoformat()})
    return result


def _stitched(
    spark: SparkSession, cfg: AppConfig, identity: IdentityConfig, *, run_id: str
) -> IdentityResult:
    """Read the sightings, stitch them and write the three tables."""
    with timing.stage("identities: read and normalise the inputs"):
        seen = sightings.read(spark, cfg, identity)
    persisted: list[DataFrame] = []
    try:
        result, writes = _stitch(spark, cfg, identity, seen, persisted, run_id=run_id)
        with timing.stage("identities: write tables (Delta)"):
            result.versions = tables.write_in_order(writes)
    finally:
        seen.unpersist()
        for df in persisted:
            df.unpersist()
    return result


def _carried(
    spark: SparkSession,
    cfg: AppConfig,
    identity: IdentityConfig,
    since: IdentityResult,
    *,
    run_id: str,
) -> IdentityResult | None:
    """``since``'s snapshot written again under ``features.as_of`` (module docstring), or
    None when the stitching must run: another snapshot lies between, or a row was seen."""
    as_of = cfg.features.as_of
    if since.as_of >= as_of or _latest_before(spark, cfg) != since.as_of:
        return None
    with timing.stage("identities: rows seen since the previous snapshot"):
        where = sightings.seen_after(spark, cfg, identity, since.as_of)
    if where is not None:
        log.info("identities: %s seen after %s: stitching %s", where, since.as_of, as_of)
        return None
    result = dataclasses.replace(
        since, as_of=as_of, previous_as_of=since.as_of, run_id=run_id, kept_keys=since.customers,
        new_keys=0, merges=0, splits=0, versions={}, carried_from=since.as_of,
    )  # fmt: skip
    storage, at = cfg.storage, {tables.AS_OF: since.as_of}
    mapped = tables.read(spark, storage, tables.IDENTITY_MAP, partitions=at)
    guards = tables.read(spark, storage, tables.IDENTITY_GUARDS, partitions=at)
    changes = spark.createDataFrame([], tables.IDENTITY_CHANGES_SCHEMA)
    with timing.stage("identities: write tables (Delta)"):
        result.versions = tables.write_in_order(_snapshot_writes(
            spark, cfg, as_of=as_of, run_id=run_id, guards=guards.drop(tables.AS_OF, tables.RUN_ID),
            changes=changes.drop(tables.AS_OF, tables.RUN_ID, "previous_as_of"),
            previous_as_of=since.as_of, mapped=mapped.drop(tables.AS_OF),
        ))  # fmt: skip
    return result


def _stitch(
    spark: SparkSession,
    cfg: AppConfig,
    identity: IdentityConfig,
    seen: sightings.Sightings,
    persisted: list[DataFrame],
    *,
    run_id: str,
) -> tuple[IdentityResult, list[tables.Write]]:
    """The graph, its components and keys; the result and the three writes."""
    as_of = cfg.features.as_of
    with timing.stage("identities: graph and guard"):
        nodes = graph.nodes(seen.rows).persist(StorageLevel.MEMORY_AND_DISK)
        pair_rows = graph.pairs(seen.rows).persist(StorageLevel.MEMORY_AND_DISK)
        shared = graph.Guard(identity.max_degree).shared(pair_rows).cache()
        persisted += [nodes, pair_rows, shared]
        counted = nodes.agg(F.count(F.lit(1)).alias("identifiers"),
                            F.countDistinct(graph.NODE).alias("ids")).first()  # fmt: skip
        assert counted is not None
        graph.check_ids(counted.asDict())
        edges = graph.edges(pair_rows, shared)
    with timing.stage("identities: connected components"):
        found = components.connected_components(
            nodes, edges, max_iterations=identity.max_iterations,
            checkpoint_dir=identity.checkpoint_dir, driver_max_edges=identity.driver_max_edges,
        )  # fmt: skip
    members = nodes.join(found.labels, on=graph.NODE, how="inner").drop(graph.NODE)
    previous, previous_as_of = _previous(spark, cfg, nodes)
    with timing.stage("identities: stable keys"):
        keyed = keys.assign(members, previous, as_of=as_of)
    persisted += [*keyed._persisted, found.labels]
    result = IdentityResult(
        as_of=as_of, previous_as_of=previous_as_of, run_id=run_id, counts=seen.counts,
        identifiers=int(counted["identifiers"]),
        edges=found.edges,
        customers=0, iterations=found.iterations, converged=found.converged,
        edges_per_iteration=found.edges_per_iteration, driver_edges=found.driver_edges,
    )  # fmt: skip
    for step, n in enumerate(found.edges_per_iteration, start=1):
        tracking.log_metrics({"identity_round_edges": n}, step=step)
    # Persisted until the write: the summary's counts and examples read it too.
    guards = _guard_rows(keyed, shared, identity).cache()
    persisted.append(guards)
    _summarise(result, keyed, guards)
    return result, _writes(spark, cfg, keyed, guards, result, run_id=run_id)


def _latest_before(spark: SparkSession, cfg: AppConfig) -> dt.date | None:
    """The date of the latest ``identity_map`` snapshot before ``features.as_of`` (None:
    none)."""
    if not tables.exists(spark, cfg.storage, tables.IDENTITY_MAP):
        return None
    snapshots = tables.read(spark, cfg.storage, tables.IDENTITY_MAP)
    before = snapshots.where(F.col(tables.AS_OF) < F.lit(cfg.features.as_of))
    row = before.agg(F.max(tables.AS_OF)).first()
    return None if row is None else row[0]


def _previous(
    spark: SparkSession, cfg: AppConfig, any_frame: DataFrame
) -> tuple[DataFrame, dt.date | None]:
    """The latest ``identity_map`` snapshot before ``features.as_of`` (empty: none)."""
    latest = _latest_before(spark, cfg)
    if latest is None:
        return keys.empty_previous(any_frame), None
    rows = tables.read(spark, cfg.storage, tables.IDENTITY_MAP, partitions={tables.AS_OF: latest})
    return rows.select(KIND, VALUE, keys.KEY, graph.FIRST_SEEN), latest


def _guard_rows(keyed: keys.Keyed, shared: DataFrame, identity: IdentityConfig) -> DataFrame:
    """``identity_guards`` (without ``as_of`` and ``run_id``): identifiers held back, and
    components above the size limit."""
    held = shared.join(keyed.members.select(KIND, VALUE, keys.KEY), on=[KIND, VALUE])
    by_degree = held.select(
        F.lit("max_degree").alias(tables.REASON), keys.KEY, KIND, VALUE, graph.LINKED_TYPE,
        graph.DEGREE, graph.LIMIT, F.lit(None).cast("long").alias("component_size"),
    )  # fmt: skip
    large = keyed.components.where(F.col("size") > identity.max_component_size).select(
        F.lit("max_component_size").alias(tables.REASON), keys.KEY,
        *[F.lit(None).cast(t).alias(c) for c, t in ((KIND, "string"), (VALUE, "string"),
          (graph.LINKED_TYPE, "string"), (graph.DEGREE, "long"))],
        F.lit(identity.max_component_size).cast("long").alias(graph.LIMIT),
        F.col("size").cast("long").alias("component_size"),
    )  # fmt: skip
    return by_degree.unionByName(large)


_SIZE_BANDS = (("1", 1, 1), ("2", 2, 2), ("3-5", 3, 5), ("6-10", 6, 10), ("> 10", 11, None))


def _band(lo: int, hi: int | None) -> Column:
    size = F.col("size")
    return (size >= lo) if hi is None else size.between(lo, hi)


def _summarise(result: IdentityResult, keyed: keys.Keyed, guards: DataFrame) -> None:
    """Fill the result's counts (a few small aggregations)."""
    comps = keyed.components
    bands = [F.count(F.when(_band(lo, hi), 1)).alias(name) for name, lo, hi in _SIZE_BANDS]
    row = comps.agg(F.count(F.lit(1)).alias("n"), F.count(F.when(F.col("kept"), 1)).alias("kept"),
                    *bands).first()  # fmt: skip
    assert row is not None
    result.customers, result.kept_keys = int(row["n"]), int(row["kept"])
    result.new_keys = result.customers - result.kept_keys
    result.sizes = {name: int(row[name]) for name, _, _ in _SIZE_BANDS}
    changes = {
        r["change"]: int(r["count"]) for r in keyed.changes.groupBy("change").count().collect()
    }
    result.merges, result.splits = changes.get(keys.MERGE, 0), changes.get(keys.SPLIT, 0)
    by_reason = {r[tables.REASON]: int(r["count"])
                 for r in guards.groupBy(tables.REASON).count().collect()}  # fmt: skip
    result.shared, result.large = (
        by_reason.get("max_degree", 0),
        by_reason.get("max_component_size", 0),
    )
    top = (
        guards.where(F.col(tables.REASON) == "max_degree")
        .orderBy(F.desc(graph.DEGREE), KIND, VALUE)
        .limit(EXAMPLES)
        .collect()
    )
    result.shared_examples = tuple(
        Shared(r[KIND], r[VALUE], r[graph.LINKED_TYPE], int(r[graph.DEGREE]), int(r[graph.LIMIT]))
        for r in top
    )
    big = (
        guards.where(F.col(tables.REASON) == "max_component_size")
        .orderBy(F.desc("component_size"), keys.KEY)
        .limit(EXAMPLES)
        .collect()
    )
    result.large_examples = tuple((r[keys.KEY], int(r["component_size"])) for r in big)
    for shared in result.shared_examples:
        log.warning("identifier held back (identity.max_degree): %s", shared)
    if result.large:
        log.warning("%d customer(s) above identity.max_component_size (%s): %s", result.large,
                    "see identity_guards", result.large_examples)  # fmt: skip


def _writes(
    spark: SparkSession,
    cfg: AppConfig,
    keyed: keys.Keyed,
    guards: DataFrame,
    result: IdentityResult,
    *,
    run_id: str,
) -> list[tables.Write]:
    return _snapshot_writes(
        spark, cfg, as_of=result.as_of, run_id=run_id, previous_as_of=result.previous_as_of,
        guards=guards, changes=keyed.changes,
        mapped=keyed.members,
    )  # fmt: skip


def _snapshot_writes(
    spark: SparkSession,
    cfg: AppConfig,
    *,
    as_of: dt.date,
    run_id: str,
    previous_as_of: dt.date | None,
    guards: DataFrame,
    changes: DataFrame,
    mapped: DataFrame,
) -> list[tables.Write]:
    """The three snapshot writes of ``as_of``, in publishing order (the frames without their
    ``as_of``, ``run_id`` and ``previous_as_of``)."""
    stamp, run = F.lit(as_of).alias(tables.AS_OF), F.lit(run_id).alias(tables.RUN_ID)
    previous = F.lit(previous_as_of).cast("date").alias("previous_as_of")
    frames = (
        (tables.IDENTITY_GUARDS, guards.select(stamp, "*", run)),
        (tables.IDENTITY_CHANGES, changes.select(stamp, previous, "*", run)),
        (tables.IDENTITY_MAP, mapped.select("*", stamp)),
    )
    snapshot = {tables.AS_OF: as_of}
    return [
        tables.snapshot_write(spark, cfg.storage, table, df, job=JOB, run_id=run_id,
                              snapshot=snapshot)
        for table, df in frames
    ]  # fmt: skip


def _log_params(cfg: AppConfig, identity: IdentityConfig) -> None:
    tracking.log_params(
        {"as_of": cfg.features.as_of.isoformat(),
         "identity.identifiers": ",".join(f"{i.column}:{i.type}" for i in identity.identifiers),
         "identity.edges.path": identity.edges.path,
         "identity.max_degree": ",".join(f"{k}={v}" for k, v in
                                         sorted(identity.max_degree.items())),
         "identity.max_component_size": identity.max_component_size,
         "identity.phone_country_code": identity.phone_country_code}
    )  # fmt: skip


def _metrics(result: IdentityResult) -> dict[str, float]:
    metrics = {
        "identifiers": result.identifiers, "edges": result.edges,
        "customers": result.customers, "iterations": result.iterations,
        "driver_edges": result.driver_edges,
        "converged": float(result.converged), "kept_keys": result.kept_keys,
        "new_keys": result.new_keys, "merges": result.merges, "splits": result.splits,
        "shared_identifiers": result.shared, "large_components": result.large,
    }  # fmt: skip
    for c in result.counts:
        prefix = f"{c.source}_{c.column}"
        metrics |= {
            f"{prefix}_identifiers": c.identifiers,
            f"{prefix}_missing": c.missing,
            f"{prefix}_placeholder": c.placeholder,
            f"{prefix}_invalid": c.invalid,
        }
    return {k: float(v) for k, v in metrics.items()}


def counts_by_type(result: IdentityResult) -> dict[str, int]:
    """Identifier values read per type, over every input (for the summary)."""
    totals: dict[str, int] = {}
    for c in result.counts:
        totals[c.kind] = totals.get(c.kind, 0) + c.identifiers
    return totals
