"""Publishing one segmentation's snapshot: membership, SCD2 history, migration, drift.

Every job that assigns customers (train with ``tracking.promote``, assign, rules) publishes
through ``publish``: it computes everything first, then writes in the documented order (the
job's own tables, membership, history, migration), then logs to the active MLflow run.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import DriftConfig, StorageConfig
from segmentation.errors import InputError
from segmentation.runtime import tracking
from segmentation.storage import delta_maintenance, delta_tables, drift, history, tables
from segmentation.storage.tables import AS_OF, CUSTOMER_ID, MODEL_NAME, SEGMENT_ID, Lineage, Write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """A segmentation's assignment of one snapshot, ready to publish.

    Attributes:
        assigned: ``customer_id``, ``segment_id`` and ``distance`` per customer (cached).
        features: the snapshot's customer features (for feature PSI).
        names: segment id -> name, for every segment in ``assigned``.
        model_features: the features the model decides on (their PSI can ask for a retrain).
        lineage: ``as_of``, ``model_name``, ``model_version`` and ``run_id`` of the rows.
        scored_at: when the rows were scored (UTC).
    """

    assigned: DataFrame
    features: DataFrame
    names: Mapping[int, str]
    model_features: Sequence[str]
    lineage: Lineage
    scored_at: dt.datetime


@dataclass
class Publication:
    """What publishing one membership snapshot wrote and found."""

    as_of: dt.date
    model_name: str
    model_version: int
    customers: int
    sizes: dict[int, int]
    names: dict[int, str]
    table_versions: dict[str, int]
    history_mode: str
    baseline_as_of: dt.date | None = None
    migration: list[dict[str, Any]] = field(default_factory=list)
    segment_psi: float | None = None
    feature_psi: dict[str, float] = field(default_factory=dict)
    other_feature_psi: dict[str, float] = field(default_factory=dict)
    retrain_reasons: list[str] = field(default_factory=list)

    @property
    def retrain_recommended(self) -> bool:
        return bool(self.retrain_reasons)

    def moves(self) -> dict[str, int]:
        """Customers who stayed, moved between segments, entered and left since the baseline."""
        return history.moves(self.migration)


def baseline(
    configured: dt.date | None, snapshots: Sequence[dt.date], as_of: dt.date
) -> dt.date | None:
    """The snapshot a new one is compared with: ``drift.baseline_as_of`` when set, else the
    latest snapshot before ``as_of`` (None: the first snapshot, nothing to compare).

    Raises:
        InputError: the configured baseline has no snapshot (the available ones are listed).
    """
    if configured is not None:
        if configured not in snapshots:
            raise InputError(
                f"drift.baseline_as_of {configured} has no segment_membership snapshot; "
                f"available: {', '.join(map(str, snapshots)) or 'none'}"
            )
        return configured
    earlier = [d for d in snapshots if d < as_of]
    return max(earlier) if earlier else None


def membership_rows(scored: Scored) -> DataFrame:
    """The ``segment_membership`` rows of a scored snapshot (the contract's columns)."""
    names = F.create_map(
        *[x for sid, nm in sorted(scored.names.items()) for x in (F.lit(sid), F.lit(nm))]
    )
    rows = scored.assigned.select(
        CUSTOMER_ID,
        SEGMENT_ID,
        F.element_at(names, F.col(SEGMENT_ID)).alias(tables.SEGMENT_NAME),
        "distance",
        *scored.lineage.columns(),
        F.lit(scored.scored_at).cast("timestamp").alias("scored_at"),
    )
    return tables.conform(rows, tables.MEMBERSHIP)


def publish(
    spark: SparkSession,
    storage: StorageConfig,
    dc: DriftConfig,
    scored: Scored,
    *,
    job: str,
    first: Sequence[Write] = (),
    shared_psi: drift.FeaturePsiCache | None = None,
) -> Publication:
    """Write one model's membership snapshot with its consequences, in the publishing order.

    Computes everything first: the membership snapshot, the history MERGE source, the migration
    matrix from the baseline snapshot and drift (PSI). Then writes ``first`` (the job's own
    tables), membership, history, migration, and logs to the active MLflow run. A failure
    before the writes changes no table; a failure between two writes leaves the earlier ones
    written, and a re-run of the same ``as_of`` repairs the rest. Snapshots, history and
    migration of other segmentations (other ``model_name``) are never touched.

    Args:
        shared_psi: feature PSI shared by the publications of one features frame (see
            ``drift.measure``).

    Raises:
        InputError: a segment without a name, an outdated table layout, or a configured
            baseline without a snapshot.
    """
    lineage = scored.lineage
    sizes = history.segment_counts(scored.assigned)
    _check_named(sizes, scored)
    check_layout(spark, storage)
    membership = membership_rows(scored)
    existing, snapshots = _snapshots(spark, storage, lineage.model_name)
    base = baseline(dc.baseline_as_of, snapshots, lineage.as_of)
    pub = Publication(
        as_of=lineage.as_of, model_name=lineage.model_name, model_version=lineage.model_version,
        customers=sum(sizes.values()), sizes=sizes, names=dict(scored.names),
        table_versions={}, history_mode="", baseline_as_of=base,
    )  # fmt: skip

    history_write = HistoryWrite(spark, storage, existing, snapshots, membership, lineage, job=job)
    writes: list[Write] = [
        *first,
        _snapshot_write(spark, storage, tables.MEMBERSHIP, membership, lineage, job),
        Write(tables.HISTORY, history_write, spark, storage),
    ]
    if base is not None and existing is not None:
        previous = existing.where(F.col(AS_OF) == F.lit(base).cast("date"))
        pub.migration = migration_rows(previous, membership, lineage, base)
        # At most (k + 1)^2 rows: written from the driver rather than computed twice.
        migration = spark.createDataFrame(pub.migration, tables.MIGRATION_SCHEMA)
        writes.append(_snapshot_write(spark, storage, tables.MIGRATION, migration, lineage, job))
        _add_drift(spark, storage, dc, pub, scored, history.segment_counts(previous), shared_psi)
    pub.table_versions = tables.write_in_order(writes)
    pub.history_mode = history_write.mode
    log_publication(pub, dc.psi_threshold)
    return pub


def _snapshot_write(
    spark: SparkSession,
    storage: StorageConfig,
    table: tables.Table,
    df: DataFrame,
    lineage: Lineage,
    job: str,
) -> Write:
    """The write replacing this model's snapshot of ``as_of`` in ``table``."""
    return tables.snapshot_write(
        spark, storage, table, df, job=job, run_id=lineage.run_id,
        snapshot={MODEL_NAME: lineage.model_name, AS_OF: lineage.as_of},
        model_version=lineage.model_version,
    )  # fmt: skip


def _check_named(sizes: Mapping[int, int], scored: Scored) -> None:
    """Every assigned segment has a name (raises ``InputError`` naming the others)."""
    unknown = sorted(set(sizes) - set(scored.names))
    if unknown:
        lineage = scored.lineage
        raise InputError(
            f"model {lineage.model_name} v{lineage.model_version} has no name for segment(s) "
            f"{unknown}"
        )


def _snapshots(
    spark: SparkSession, storage: StorageConfig, model_name: str
) -> tuple[DataFrame | None, list[dt.date]]:
    """The membership rows of ``model_name`` (None: no table) and its snapshot dates."""
    if not tables.exists(spark, storage, tables.MEMBERSHIP):
        return None, []
    rows = tables.read(spark, storage, tables.MEMBERSHIP).where(F.col(MODEL_NAME) == model_name)
    return rows, sorted(r[0] for r in rows.select(AS_OF).distinct().collect())


def migration_rows(
    previous: DataFrame, membership: DataFrame, lineage: Lineage, baseline_as_of: dt.date
) -> list[dict[str, Any]]:
    """The migration matrix from the baseline snapshot to this one, collected."""
    matrix = history.migration_matrix(
        previous, membership, as_of=lineage.as_of, previous_as_of=baseline_as_of,
        model_name=lineage.model_name,
    )  # fmt: skip
    return [r.asDict() for r in matrix.collect()]


def _add_drift(
    spark: SparkSession,
    storage: StorageConfig,
    dc: DriftConfig,
    pub: Publication,
    scored: Scored,
    baseline_sizes: Mapping[int, int],
    shared_psi: drift.FeaturePsiCache | None,
) -> None:
    assert pub.baseline_as_of is not None
    measured = drift.measure(
        spark, storage, dc, baseline_as_of=pub.baseline_as_of, baseline_sizes=baseline_sizes,
        sizes=pub.sizes, features=scored.features, model_features=scored.model_features,
        shared=shared_psi,
    )  # fmt: skip
    pub.segment_psi = measured.segment_psi
    pub.feature_psi = measured.feature_psi
    pub.other_feature_psi = measured.other_feature_psi
    pub.retrain_reasons = measured.retrain_reasons


class HistoryWrite:
    """The history write: created with the first snapshot, then one MERGE per snapshot.

    Forward (``history.update_mode`` says ``merged``): MERGE ``history.merge_source``. Backfill
    (``rebuilt``): MERGE this model's history rebuilt from every membership snapshot, deleting
    its rows the rebuild no longer has. ``mode`` says which ran.
    """

    def __init__(
        self,
        spark: SparkSession,
        storage: StorageConfig,
        existing: DataFrame | None,
        snapshots: Sequence[dt.date],
        membership: DataFrame,
        lineage: Lineage,
        *,
        job: str,
    ) -> None:
        self.spark, self.storage, self.existing = spark, storage, existing
        self.snapshots, self.membership, self.lineage = snapshots, membership, lineage
        snapshot = {MODEL_NAME: lineage.model_name, AS_OF: lineage.as_of}
        # The same transaction id as the membership snapshot's: one per snapshot and version.
        self.txn = tables.txn(
            storage.run_key or lineage.run_id,
            job=job,
            parts={**snapshot, "v": lineage.model_version},
        )
        self.metadata = {"job": job, "run_id": lineage.run_id}
        self.mode = "not written"

    def __call__(self) -> int:
        spark, path = self.spark, tables.path(self.storage, tables.HISTORY)
        as_of, model = self.lineage.as_of, self.lineage.model_name
        exists = delta_tables.exists(spark, path)
        current = delta_tables.read(spark, path) if exists else None
        latest = history.latest_change(current, model) if current is not None else None
        self.mode = history.update_mode(table_exists=exists, latest=latest, as_of=as_of)
        if current is None:
            rows = history.apply_snapshot(None, self.membership, as_of=as_of, model_name=model)
            options = delta_tables.WriteOptions(
                mode="append", txn=self.txn, metadata=self.metadata,
                contract=tables.contract(tables.HISTORY, rows),
            )  # fmt: skip
            return delta_tables.write(spark, rows, path, options).version
        mine = f"t.{MODEL_NAME} = {delta_tables.sql_literal(model)}"
        if self.mode == "merged":
            source = history.merge_source(current, self.membership, as_of=as_of, model_name=model)
            delete = f"{mine} AND t.valid_from = {delta_tables.sql_literal(as_of)}"
        else:
            log.warning(
                "as_of %s is before the latest snapshot in segment_membership_history (%s): "
                "rebuilding that model's history from all membership snapshots", as_of, latest,
            )  # fmt: skip
            assert self.existing is not None
            everything = self.existing.where(F.col(AS_OF) != F.lit(as_of).cast("date"))
            source = history.rebuild(
                everything.unionByName(self.membership.select(*self.existing.columns)),
                model_name=model, snapshots=[*self.snapshots, as_of],
            )  # fmt: skip
            delete = mine
        return delta_tables.merge(
            spark, source, path, keys=(CUSTOMER_ID, MODEL_NAME, "valid_from"),
            delete_unmatched=delete, txn=self.txn, metadata=self.metadata,
            contract=tables.contract(tables.HISTORY, source),
        ).version  # fmt: skip


# --- layout --------------------------------------------------------------------------------

SNAPSHOT_TABLES = (tables.MEMBERSHIP, tables.MIGRATION)


_CURRENT_LAYOUT: set[str] = set()
"""Tables found with the current layout in this process: a layout is never downgraded (only
an older release would write the old one), so each is read once per process."""


def outdated_tables(spark: SparkSession, storage: StorageConfig) -> dict[str, list[str]]:
    """Snapshot tables written before they were partitioned by model_name (name -> layout)."""
    out = {}
    for table in SNAPSHOT_TABLES:
        path = delta_tables.absolute(tables.path(storage, table))
        if path in _CURRENT_LAYOUT:
            continue
        parts = delta_tables.partition_columns(spark, path)
        if parts is not None and parts != list(table.partition_by):
            out[table.name] = parts
        elif parts is not None:
            _CURRENT_LAYOUT.add(path)
    return out


def check_layout(spark: SparkSession, storage: StorageConfig) -> None:
    """Fail before any work when a snapshot table has the layout of an older release."""
    outdated = outdated_tables(spark, storage)
    if outdated:
        detail = ", ".join(f"{n} by {parts}" for n, parts in outdated.items())
        raise InputError(
            f"tables written by an older release are partitioned differently ({detail}; now "
            f"{list(tables.MEMBERSHIP.partition_by)}, so several segmentations can share "
            "them): run `make upgrade-tables` (jobs/maintain_tables.py --upgrade) once"
        )


def upgrade_layout(spark: SparkSession, storage: StorageConfig) -> dict[str, int]:
    """Repartition outdated snapshot tables by (model_name, as_of), one version each."""
    return {
        name: delta_maintenance.repartition(
            spark,
            storage.table_path(name),
            tables.MEMBERSHIP.partition_by,
            metadata={"job": "maintain_tables", "upgrade": f"repartitioned from {parts}"},
        )
        for name, parts in outdated_tables(spark, storage).items()
    }


# --- MLflow --------------------------------------------------------------------------------

MIGRATION_CSV = ("from_segment_id", "from_segment_name", "to_segment_id", "to_segment_name",
                 "customers", "share_of_from")  # fmt: skip


def log_publication(pub: Publication, threshold: float) -> None:
    """Table versions, history mode, migration and drift of a publication, to MLflow."""
    tracking.set_tags({f"output.{name}.version": v for name, v in pub.table_versions.items()})
    tracking.set_tags({"history_update": pub.history_mode})
    tracking.log_metrics({"membership_customers": pub.customers})
    if pub.baseline_as_of is None:
        tracking.set_tags({"retrain_recommended": "unknown (no earlier snapshot)"})
        return
    tracking.set_tags(
        {"drift_baseline_as_of": pub.baseline_as_of.isoformat(),
         "retrain_recommended": str(pub.retrain_recommended).lower()}
    )  # fmt: skip
    if pub.retrain_reasons:
        tracking.set_tags({"retrain_reasons": "; ".join(pub.retrain_reasons)[:5000]})
    tracking.log_metrics({f"migration_{k}": v for k, v in pub.moves().items()})
    if pub.segment_psi is not None:
        tracking.log_metrics({"psi_segments": pub.segment_psi})
    psi = {**pub.feature_psi, **pub.other_feature_psi}
    tracking.log_metrics({f"psi_feature_{f}": v for f, v in psi.items()})
    tracking.log_json(pub.migration, "drift/migration_matrix.json")
    tracking.log_text(migration_csv(pub.migration), "drift/migration_matrix.csv")
    tracking.log_json(
        {
            "baseline_as_of": pub.baseline_as_of, "as_of": pub.as_of, "psi_threshold": threshold,
            "segment_shares": pub.segment_psi, "features": pub.feature_psi,
            "other_features": pub.other_feature_psi,
            "retrain_recommended": pub.retrain_recommended, "reasons": pub.retrain_reasons,
        },
        "drift/psi.json",
    )  # fmt: skip


def migration_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The migration matrix as CSV (Python's ``csv``: quotes doubled, nulls empty), ordered by
    (from, to) with entries and exits first."""

    def key(r: Mapping[str, Any]) -> tuple[int, int]:
        return (r["from_segment_id"] or 0, r["to_segment_id"] or 0)

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MIGRATION_CSV)
    writer.writerows(
        [["" if r[h] is None else r[h] for h in MIGRATION_CSV] for r in sorted(rows, key=key)]
    )
    return out.getvalue()
