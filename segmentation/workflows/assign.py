"""Scoring a date with the model under the alias, without retraining."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession

from segmentation.config import AppConfig
from segmentation.errors import InputError
from segmentation.modeling import champion as champions
from segmentation.modeling import clustering
from segmentation.runtime import timing, tracking
from segmentation.storage import publishing, tables
from segmentation.value import segments as value_segments
from segmentation.workflows import build_features, value

JOB = "assign_segments"


@dataclass
class AssignResult:
    run_id: str
    model_name: str
    model_version: int
    features_reused: bool
    publication: publishing.Publication
    rejected: dict[str, int] = field(default_factory=dict)
    value: list[value_segments.SegmentValue] | None = None
    """Each segment's customer value (None: no ``customer_value`` of this date)."""


def run(spark: SparkSession, cfg: AppConfig) -> AssignResult:
    """Score ``features.as_of`` with the version under ``tracking.alias``.

    Computes that date's features from the events (or reuses the stored snapshot with
    ``assign.reuse_features``), assigns every customer with the registered pipeline, and
    publishes membership, history, migration and drift; the feature snapshot and quarantined
    events are written first, in the same publishing order.

    Raises:
        InputError: no model under the alias, an outdated table layout, or unusable events.
    """
    tc, as_of = cfg.tracking, cfg.features.as_of
    publishing.check_layout(spark, cfg.storage)
    experiment_id = tracking.configure(tc)
    champion = champions.require(tc)
    model = tracking.load_model(tc.registered_model, champion.version)
    with tracking.run(experiment_id, f"{JOB} {as_of}") as run_id:
        tracking.set_tags({"job": JOB, "model_version": champion.version})
        tracking.log_params(
            {"model_name": tc.registered_model, "alias": tc.alias,
             "model_version": champion.version, "model_run_id": champion.run_id,
             "reuse_features": cfg.assign.reuse_features,
             "drift.baseline_as_of": cfg.drift.baseline_as_of,
             "drift.psi_threshold": cfg.drift.psi_threshold}
        )  # fmt: skip
        features, computed = _features(spark, cfg, run_id=run_id)
        first = [] if computed is None else computed.writes(spark, cfg, job=JOB, run_id=run_id)
        assigned = clustering.assign(model, features).cache()
        scored = publishing.Scored(
            assigned=assigned, features=features, names=champion.names,
            model_features=champion.features,
            lineage=tables.Lineage(as_of, tc.registered_model, champion.version, run_id),
            scored_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
        )  # fmt: skip
        try:
            with timing.stage("assign: write tables (Delta)"):
                pub = publishing.publish(
                    spark, cfg.storage, cfg.drift, scored, job=JOB, first=first
                )
            values = value.values(spark, cfg)
            by_value = None if values is None else value_segments.segment_values(
                assigned, champion.names, tc.registered_model, values)  # fmt: skip
        finally:
            assigned.unpersist()
            features.unpersist()
            if computed is not None:
                computed.unpersist()
    return AssignResult(
        run_id=run_id, model_name=tc.registered_model, model_version=champion.version,
        features_reused=computed is None, publication=pub,
        rejected=computed.rejected_counts if computed else {}, value=by_value,
    )  # fmt: skip


def _features(
    spark: SparkSession, cfg: AppConfig, *, run_id: str
) -> tuple[DataFrame, build_features.FeatureSnapshot | None]:
    """The snapshot's features (cached): the stored ones with ``assign.reuse_features`` when
    they exist, else computed from the events (then also returned, to be written)."""
    if cfg.assign.reuse_features:
        try:
            stored = tables.read_snapshot(
                spark, cfg.storage, tables.FEATURES, cfg.features.as_of, key="features.as_of"
            )
            return stored.cache(), None
        except InputError:
            pass
    with timing.stage("assign: compute features"):
        computed = build_features.compute(spark, cfg, run_id=run_id, keep_state=False)
    return computed.features.cache(), computed
