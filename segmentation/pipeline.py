"""The jobs' bodies: read inputs, call the pure transforms, write tables, track in MLflow.

This module and ``delta_tables`` / ``tracking`` are the only ones that know table locations
and MLflow; features, clustering and profiling take and return DataFrames.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pyspark
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation import (
    clustering,
    delta_tables,
    explain,
    history,
    matching,
    profiling,
    quality,
    report,
    rulesets,
    sources,
    tracking,
)
from segmentation import features as feat
from segmentation import generator as gen
from segmentation.config import AppConfig, flatten, join_path, to_dict
from segmentation.errors import InputError
from segmentation.evaluation import adjusted_rand_index

log = logging.getLogger(__name__)

EVENTS, CUSTOMERS, TRUTH = "events", "customers", "segment_truth"
FEATURES, MEMBERSHIP, PROFILES = "customer_features", "segment_membership", "segment_profiles"
REJECTED = "rejected_events"
HISTORY, MIGRATION = "segment_membership_history", "segment_migration"
COMPOSITION, RFM_SCORES = "segment_composition", "rfm_scores"
# segment_membership and segment_migration: one partition per segmentation and snapshot date.
SNAPSHOT_PARTITIONS = ("model_name", feat.AS_OF)
REPORTS_DIR = "reports"


# --- generate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateResult:
    skipped: bool
    versions: dict[str, int | None]
    rows: dict[str, int]


def generate(spark: SparkSession, cfg: AppConfig, *, if_absent: bool = False) -> GenerateResult:
    """Write the sample ``events``, ``customers`` and ``segment_truth`` tables.

    Each table is replaced whole. The writes carry one transaction id derived from the
    generator settings, so generating the same sample again commits nothing.

    Args:
        spark: the active session.
        cfg: ``generator`` sizes and seed; ``storage`` for the table locations.
        if_absent: do nothing when the events table already exists.
    """
    storage = cfg.storage
    paths = {name: storage.table_path(name) for name in (EVENTS, CUSTOMERS, TRUTH)}
    if if_absent and delta_tables.exists(spark, paths[EVENTS]):
        log.info("sample events already at %s: not generated again", paths[EVENTS])
        return GenerateResult(
            True, {n: delta_tables.version(spark, p) for n, p in paths.items()}, {}
        )
    g = cfg.generator
    data = gen.generate(
        spark,
        customers=g.customers,
        events=g.events,
        seed=g.seed,
        start_date=g.start_date,
        end_date=g.end_date,
        partitions=g.partitions,
    )
    params = json.dumps(to_dict(g), sort_keys=True)
    key = hashlib.sha256(params.encode()).hexdigest()[:16]
    options = delta_tables.WriteOptions(
        mode="overwrite",
        txn=delta_tables.Txn(f"segmentation:generate:{key}"),
        metadata={"job": "generate", "params": params},
        overwrite_schema=True,
    )
    frames = {EVENTS: data.events, CUSTOMERS: data.customers, TRUTH: data.segment_truth}
    versions = write_tables(
        [(n, _writer(spark, df, paths[n], options)) for n, df in frames.items()]
    )
    rows = {n: delta_tables.read(spark, paths[n], version=v).count() for n, v in versions.items()}
    return GenerateResult(False, dict(versions), rows)


# --- features -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FeaturesResult:
    as_of: dt.date
    customers: int
    version: int
    events_path: str
    events_version: int | None
    input_rows: int
    rejected: dict[str, int]
    feature_columns: tuple[str, ...]
    run_id: str


def check_inputs(cfg: AppConfig) -> None:
    """Fail before any Spark work if the events path or a mapped column is missing."""
    sources.check_source(cfg.input.events, cfg.events_path())


@dataclass
class FeatureSnapshot:
    """A feature snapshot and its quarantined rows, computed and persisted, not yet written."""

    features: DataFrame
    rejected: DataFrame
    customers: int
    rejected_counts: dict[str, int]
    input_rows: int
    events_path: str
    events_version: int | None
    feature_columns: tuple[str, ...]
    levels: dict[str, tuple[str, ...]]
    """The category, channel and device levels the features use (configured or discovered)."""

    def writes(
        self, spark: SparkSession, cfg: AppConfig, *, job: str, run_id: str
    ) -> list[tuple[str, Callable[[], int]]]:
        """The two snapshot writes, quarantine first (see ``write_tables``)."""
        options = _snapshot_options(
            cfg, job=job, run_id=run_id, partition_by=(feat.AS_OF,),
            snapshot={feat.AS_OF: cfg.features.as_of},
            metadata={"events_path": self.events_path, "events_version": str(self.events_version)},
        )  # fmt: skip
        evolving = dataclasses.replace(options, evolve_schema=True)
        return [
            (REJECTED, _writer(spark, self.rejected, cfg.storage.table_path(REJECTED), options)),
            (FEATURES, _writer(spark, self.features, cfg.storage.table_path(FEATURES), evolving)),
        ]

    def unpersist(self) -> None:
        self.features.unpersist()
        self.rejected.unpersist()


def build_features(spark: SparkSession, cfg: AppConfig) -> FeaturesResult:
    """Quarantine unusable events, compute ``customer_features`` as of ``features.as_of``.

    Both tables' snapshots for ``as_of`` are replaced (``rejected_events`` first), and only if
    the share of rejected input rows is within ``quality.max_reject_share``; otherwise no table
    changes. The run is tracked in MLflow with the counts per reject reason.
    """
    experiment_id = tracking.configure(cfg.tracking)
    as_of = cfg.features.as_of
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"build_features {as_of}"):
        run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
        mlflow.set_tag("job", "build_features")
        snapshot = compute_feature_snapshot(spark, cfg)
        try:
            versions = write_tables(
                snapshot.writes(spark, cfg, job="build_features", run_id=run_id)
            )
        finally:
            snapshot.unpersist()
        for name, v in versions.items():
            mlflow.set_tag(f"output.{name}.version", str(v))
    return FeaturesResult(
        as_of=as_of,
        customers=snapshot.customers,
        version=versions[FEATURES],
        events_path=snapshot.events_path,
        events_version=snapshot.events_version,
        input_rows=snapshot.input_rows,
        rejected=snapshot.rejected_counts,
        feature_columns=snapshot.feature_columns,
        run_id=run_id,
    )


def compute_feature_snapshot(spark: SparkSession, cfg: AppConfig) -> FeatureSnapshot:
    """The ``customer_features`` and ``rejected_events`` rows of ``features.as_of``, persisted.

    Logs params and quality metrics to the active MLflow run. Raises (and writes nothing) when
    too many rows are rejected or no usable event is left.
    """
    fc, q = cfg.features, cfg.quality
    events_path = cfg.events_path()
    source = sources.read_events(spark, cfg.input.events, events_path)
    split = quality.split_events(
        source.events,
        earliest=q.earliest_event_date,
        latest=fc.as_of + dt.timedelta(days=q.max_days_after_as_of),
    )
    events_version = (
        delta_tables.version(spark, events_path) if cfg.input.events.format == "delta" else None
    )
    tracking.log_params(
        {
            "as_of": fc.as_of.isoformat(),
            "input.events.path": events_path,
            "input.events.version": events_version,
            "windows_days": ",".join(map(str, fc.windows_days)),
            "trend_window_days": fc.trend_window_days,
            "max_reject_share": q.max_reject_share,
        }
    )
    rejected_df = split.rejected.select(
        *sources.CANONICAL_SCHEMA.names,
        quality.REASON,
        F.lit(fc.as_of).alias(feat.AS_OF),
        F.lit(mlflow.active_run().info.run_id).alias("run_id"),  # type: ignore[union-attr]
    ).persist(StorageLevel.MEMORY_AND_DISK)
    input_rows = source.events.count()
    rejected = {
        r[quality.REASON]: int(r["count"])
        for r in rejected_df.groupBy(quality.REASON).count().collect()
    }
    n_rejected = sum(rejected.values())
    mlflow.log_metric("input_rows", input_rows)
    mlflow.log_metric("rejected_rows", n_rejected)
    for reason in quality.REASONS:
        mlflow.log_metric(f"rejected_{reason}", rejected.get(reason, 0))
    share = n_rejected / input_rows if input_rows else 0.0
    if share > q.max_reject_share:
        rejected_df.unpersist()
        raise InputError(
            f"{n_rejected} of {input_rows} input events ({share:.1%}) were "
            f"rejected, more than quality.max_reject_share ({q.max_reject_share:.1%}); "
            f"by reason: {_counts(rejected)}. No table was changed: fix the input, or "
            "raise quality.max_reject_share to write them to rejected_events."
        )
    for why, n in sorted(rejected.items()):
        log.warning("%d input event(s) quarantined in rejected_events: %s", n, why)

    configured = {"category": fc.categories, "channel": fc.channels, "device": fc.devices}
    # Levels not configured are discovered, all in one pass over the events: counted over the
    # valid events minus the duplicate copies (from the persisted quarantine), which equals
    # counting the de-duplicated events without de-duplicating twice.
    duplicates = rejected_df.where(F.col(quality.REASON) == quality.DUPLICATE_EVENT)
    levels = feat.discover_all_levels(
        split.valid,
        [c for c, lv in configured.items() if lv is None and c in source.present],
        max_levels=fc.max_levels,
        minus=duplicates,
    )
    for column, lv in configured.items():
        levels.setdefault(column, () if column not in source.present or lv is None else lv)
    features_df = feat.compute_features(
        split.clean,
        as_of=fc.as_of,
        windows_days=fc.windows_days,
        trend_window_days=fc.trend_window_days,
        categories=levels["category"],
        channels=levels["channel"],
        devices=levels["device"],
        with_discount="discount" in source.present,
    ).persist(StorageLevel.MEMORY_AND_DISK)
    customers = features_df.count()
    if customers == 0:
        features_df.unpersist()
        rejected_df.unpersist()
        raise InputError(
            f"no usable events on or before {fc.as_of} in {events_path} "
            f"({input_rows} input rows; rejected by reason: {_counts(rejected)}); "
            "check features.as_of and the input. No table was changed."
        )
    mlflow.log_metric("customers", customers)
    return FeatureSnapshot(
        features=features_df,
        rejected=rejected_df,
        customers=customers,
        rejected_counts=rejected,
        input_rows=input_rows,
        events_path=events_path,
        events_version=events_version,
        feature_columns=tuple(feat.feature_columns(features_df)),
        levels=levels,
    )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


# --- train --------------------------------------------------------------------------------


@dataclass
class SegmentSummary:
    segment_id: int
    name: str
    size: int
    share: float
    means: dict[str, float | None]


@dataclass(frozen=True)
class Champion:
    """The model under the alias, with the segments its training run recorded."""

    version: int
    run_id: str
    segments: tuple[matching.KnownSegment, ...]
    max_segment_id: int
    features: tuple[str, ...]

    @property
    def names(self) -> dict[int, str]:
        return {s.segment_id: s.name for s in self.segments}


def load_champion(cfg: AppConfig) -> Champion | None:
    """The current ``registered_model@alias`` and its segments, or None when there is none."""
    tc = cfg.tracking
    current = tracking.alias_version(tc.registered_model, tc.alias)
    if current is None:
        return None
    info = tracking.load_json(current.run_id, matching.SEGMENTS_ARTIFACT)
    if info is None:
        raise InputError(
            f"model {tc.registered_model} version {current.version} (@{tc.alias}) has no "
            f"{matching.SEGMENTS_ARTIFACT} artifact in run {current.run_id}: it was not trained "
            "by train_segments; train and promote a new version"
        )
    return Champion(
        version=current.version,
        run_id=current.run_id,
        segments=tuple(
            matching.KnownSegment(int(s["segment_id"]), str(s["name"]), s["center"])
            for s in info["segments"]
        ),
        max_segment_id=int(info["max_segment_id"]),
        features=tuple(info["features"]),
    )


@dataclass
class TrainResult:
    as_of: dt.date
    run_id: str
    experiment_id: str
    model_name: str
    model_version: int
    promoted: bool
    selection: clustering.KSelection
    segments: list[SegmentSummary]
    table_versions: dict[str, int]
    customers: int
    matching: matching.Matching
    previous_version: int | None
    publication: Publication | None = None
    ari_vs_truth: float | None = None
    paths: dict[str, str] = field(default_factory=dict)
    explanation: Explained | None = None


def train_segments(spark: SparkSession, cfg: AppConfig) -> TrainResult:
    """Select k, fit on all customers, keep the champion's segment ids, register the model.

    Segment profiles of the new version are always written. With ``tracking.promote`` the
    version is also published (membership, history, migration and drift for ``features.as_of``)
    and the alias moved to it, last.
    """
    t, fc, tc = cfg.training, cfg.features, cfg.tracking
    if tc.promote:
        check_table_layout(spark, cfg)
    features_path = cfg.storage.table_path(FEATURES)
    if not delta_tables.exists(spark, features_path):
        raise InputError(f"no customer_features table at {features_path}: run build_features first")
    features_version = delta_tables.version(spark, features_path)
    features_df = delta_tables.read(
        spark, features_path, version=features_version, partitions={feat.AS_OF: fc.as_of}
    ).cache()
    scored_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    experiment_id = tracking.configure(tc)
    try:
        champion = load_champion(cfg)
    except InputError as exc:
        log.warning("%s; the new model's segments get new ids", exc)
        champion = None
    try:
        n_customers = features_df.count()
        if n_customers == 0:
            raise InputError(
                f"customer_features has no rows for as_of {fc.as_of} (features.as_of): "
                "run build_features for that date first"
            )
        estimator = training_estimator(cfg)
        scaling = estimator.fit_scaling(features_df)
        selection = select_k(cfg, estimator, features_df, scaling)
        log.info("model selection: %s", selection.reason)
        model, final_seed = final_fit(cfg, estimator, features_df, scaling, selection)
        centers, sizes = model.by_cluster()
        matched = matching.match_segments(
            scaling=model.scaling,
            new_centers_scaled=centers,
            new_sizes=sizes,
            previous=champion.segments if champion else (),
            previous_max_id=champion.max_segment_id if champion else 0,
            max_distance=t.match_max_distance,
        )
        model = model.with_segment_ids(matched.cluster_to_segment)
        assigned = model.transform(features_df).cache()
        profiles = profiling.profile_segments(assigned, _numeric_features(features_df))
        names = _stable_names(profiling.name_segments(profiles), matched, champion)
        with mlflow.start_run(experiment_id=experiment_id) as run:
            result = _track_and_write(
                spark,
                cfg,
                run_id=run.info.run_id,
                experiment_id=experiment_id,
                features_version=features_version,
                n_customers=n_customers,
                selection=selection,
                model=model,
                final_seed=final_seed,
                matched=matched,
                champion=champion,
                assigned=assigned,
                features_df=features_df,
                profiles=profiles,
                names=names,
                scored_at=scored_at,
            )
        assigned.unpersist()
        return result
    finally:
        features_df.unpersist()


def training_estimator(cfg: AppConfig) -> clustering.SegmentationKMeans:
    """The unfitted estimator ``training.*`` describes (algorithm, seed, transforms)."""
    t = cfg.training
    return clustering.SegmentationKMeans(
        features=t.features,
        algorithm=t.algorithm,
        seed=t.seed,
        max_iter=t.max_iter,
        transforms=dict(t.transforms),
        default_transform=t.default_transform,
    )


def select_k(
    cfg: AppConfig,
    estimator: clustering.SegmentationKMeans,
    features_df: DataFrame,
    scaling: clustering.Scaling,
) -> clustering.KSelection:
    """Model selection with the ``training.*`` k range, sample, restarts and rules."""
    t = cfg.training
    return clustering.select_k(
        estimator,
        features_df,
        k_values=range(t.k_min, t.k_max + 1),
        scaling=scaling,
        sample_rows=t.selection_sample_rows,
        min_segment_share=t.min_segment_share,
        tolerance=t.silhouette_tolerance,
        n_init=t.n_init,
    )


def final_fit(
    cfg: AppConfig,
    estimator: clustering.SegmentationKMeans,
    features_df: DataFrame,
    scaling: clustering.Scaling,
    selection: clustering.KSelection,
) -> tuple[clustering.SegmentModel, int]:
    """The chosen k fitted on all customers: ``training.n_init`` seeded restarts, lowest cost.

    The sample's winning seed goes first (it wins ties); the other seeds are the restarts'.
    """
    t = cfg.training
    chosen = selection.chosen.seed
    seeds = [chosen, *[s for s in range(t.seed, t.seed + max(1, t.n_init)) if s != chosen]]
    return clustering.fit_best(
        estimator, features_df, k=selection.chosen_k, scaling=scaling, seeds=seeds
    )


def _numeric_features(features_df: DataFrame) -> list[str]:
    """The numeric feature columns of a customer_features frame (not its keys)."""
    return [
        f.name
        for f in features_df.schema.fields
        if f.name not in (feat.CUSTOMER_ID, feat.AS_OF) and isinstance(f.dataType, T.NumericType)
    ]


def _stable_names(
    generated: dict[int, str], matched: matching.Matching, champion: Champion | None
) -> dict[int, str]:
    """Kept segments keep the champion's name; new ones get their generated name (unique)."""
    previous = champion.names if champion else {}
    names = {sid: previous[old] for sid, old in matched.kept.items() if old in previous}
    taken = set(names.values())
    for sid in sorted(generated):
        if sid in names:
            continue
        name = generated[sid] if generated[sid] not in taken else f"{generated[sid]} #{sid}"
        names[sid] = name
        taken.add(name)
    return names


def _track_and_write(
    spark: SparkSession,
    cfg: AppConfig,
    *,
    run_id: str,
    experiment_id: str,
    features_version: int | None,
    n_customers: int,
    selection: clustering.KSelection,
    model: clustering.SegmentModel,
    final_seed: int,
    matched: matching.Matching,
    champion: Champion | None,
    assigned: DataFrame,
    features_df: DataFrame,
    profiles: profiling.Profiles,
    names: dict[int, str],
    scored_at: dt.datetime,
) -> TrainResult:
    t, fc, tc = cfg.training, cfg.features, cfg.tracking
    mlflow.set_tag("job", "train_segments")
    tracking.log_params(
        {
            "algorithm": t.algorithm,
            "k_min": t.k_min,
            "k_max": t.k_max,
            "seed": t.seed,
            "max_iter": t.max_iter,
            "n_init": t.n_init,
            "selection_seed": selection.chosen.seed,
            "final_fit_seed": final_seed,
            "features": ",".join(t.features),
            "transforms": ",".join(f"{f}:{model.scaling.transforms[i]}" for i, f in
                                   enumerate(model.scaling.features)),
            "selection_sample_rows": selection.sample_rows,
            "min_segment_share": t.min_segment_share,
            "silhouette_tolerance": t.silhouette_tolerance,
            "match_max_distance": t.match_max_distance,
            "previous_model_version": champion.version if champion else "none",
            "as_of": fc.as_of.isoformat(),
            "input.customer_features.path": cfg.storage.table_path(FEATURES),
            "input.customer_features.version": features_version,
        }
    )  # fmt: skip
    tracking.log_json(flatten(to_dict(cfg)), "config/resolved_config.json")
    for c in selection.candidates:
        mlflow.log_metric("silhouette", c.silhouette, step=c.k)
        mlflow.log_metric("cost", c.cost, step=c.k)
        mlflow.log_metric("min_segment_share", c.min_share, step=c.k)
        mlflow.log_metrics({f"silhouette_k{c.k}": c.silhouette, f"cost_k{c.k}": c.cost})
    mlflow.log_metric("chosen_k", selection.chosen_k)
    mlflow.log_metric("customers", n_customers)
    mlflow.set_tag("k_selection_reason", selection.reason)
    for seg in profiles.segments:
        mlflow.log_metric(f"segment_size_{seg.segment_id}", seg.size)
        mlflow.log_metric(f"segment_share_{seg.segment_id}", seg.share)
    tracking.log_json(
        {
            "chosen_k": selection.chosen_k,
            "reason": selection.reason,
            "candidates": [
                dataclasses.asdict(c) | {"min_share": c.min_share} for c in selection.candidates
            ],
        },
        "k_selection.json",
    )
    explained = _explain(spark, cfg, model=model, assigned=assigned,
                         profiles=profiles, names=names, selection=selection)  # fmt: skip
    _log_explanation(explained, cfg)
    mlflow.log_metrics(
        {
            "segments_kept": len(matched.kept),
            "segments_new": len(matched.pairs) - len(matched.kept),
            "segments_retired": len(matched.retired),
        }
    )
    tracking.log_json(
        {"previous_model_version": champion.version if champion else None, **matched.as_dict()},
        "segments/matching.json",
    )
    centers = model.centers_original()
    tracking.log_json(
        {
            "as_of": fc.as_of.isoformat(),
            "features": list(model.scaling.features),
            "max_segment_id": matched.max_segment_id,
            "previous_model_version": champion.version if champion else None,
            "segments": [
                {
                    "segment_id": seg.segment_id,
                    "name": names[seg.segment_id],
                    "size": seg.size,
                    "share": seg.share,
                    "center": dict(zip(model.scaling.features, centers[seg.segment_id],
                                       strict=True)),
                }
                for seg in profiles.segments
            ],
        },
        matching.SEGMENTS_ARTIFACT,
    )  # fmt: skip
    model_uri, version = tracking.log_spark_model(
        model.pipeline, registered_model=tc.registered_model, pyspark_version=pyspark.__version__
    )
    mlflow.set_tag("model_version", str(version))
    profile_df = spark.createDataFrame(
        profiling.profile_rows(profiles, names), profiling.PROFILE_SCHEMA
    ).select(
        F.lit(fc.as_of).alias(feat.AS_OF),
        F.lit(tc.registered_model).alias("model_name"),
        F.lit(version).cast("int").alias("model_version"),
        F.lit(run_id).alias("run_id"),
        "*",
    )
    tracking.log_json(
        [dict(zip(profile_df.columns, r, strict=True)) for r in profile_df.collect()],
        "profiles/segment_profiles.json",
    )
    tracking.log_json({str(k): v for k, v in names.items()}, "profiles/segment_names.json")
    per_version = _snapshot_options(
        cfg, job="train_segments", run_id=run_id, partition_by=("model_name", "model_version"),
        snapshot={"model_name": tc.registered_model, "model_version": version},
    )  # fmt: skip
    version_writes = [
        (PROFILES, _writer(spark, profile_df, cfg.storage.table_path(PROFILES), per_version))
    ]
    if explained.composition is not None:
        composition_df = _composition_df(spark, explained.composition, names).select(
            F.lit(fc.as_of).alias(feat.AS_OF),
            F.lit(tc.registered_model).alias("model_name"),
            F.lit(version).cast("int").alias("model_version"),
            F.lit(run_id).alias("run_id"),
            "*",
        )
        version_writes.append(
            (COMPOSITION,
             _writer(spark, composition_df, cfg.storage.table_path(COMPOSITION), per_version))
        )  # fmt: skip
    publication = None
    if tc.promote:
        publication = publish(
            spark,
            cfg,
            job="train_segments",
            run_id=run_id,
            assigned=assigned,
            features_df=features_df,
            model_version=version,
            model_features=model.scaling.features,
            names=names,
            scored_at=scored_at,
            first=version_writes,
        )
        versions = publication.table_versions
        tracking.promote(
            tc.registered_model, tc.alias, version,
            reason=f"train_segments run {run_id} with tracking.promote=true",
        )  # fmt: skip
        mlflow.set_tag("promoted_to", tc.alias)
    else:
        versions = write_tables(version_writes)
    for name, v in versions.items():
        mlflow.set_tag(f"output.{name}.version", str(v))
    ari = _ari_vs_truth(spark, cfg, assigned)
    if ari is not None:
        mlflow.log_metric("ari_vs_truth", ari)
    report_path = None
    if cfg.explain.report:
        report_path = _write_report(
            cfg, explained, run_id=run_id, version=version, selection=selection,
            model=model, profiles=profiles, names=names, customers=n_customers,
        )  # fmt: skip
    segments = [
        SegmentSummary(
            segment_id=seg.segment_id,
            name=names[seg.segment_id],
            size=seg.size,
            share=seg.share,
            means={f: seg.stats[f].mean for f in profiles.features},
        )
        for seg in profiles.segments
    ]
    return TrainResult(
        as_of=fc.as_of,
        run_id=run_id,
        experiment_id=experiment_id,
        model_name=tc.registered_model,
        model_version=version,
        promoted=tc.promote,
        selection=selection,
        segments=segments,
        table_versions=versions,
        customers=n_customers,
        matching=matched,
        previous_version=champion.version if champion else None,
        publication=publication,
        ari_vs_truth=ari,
        paths={PROFILES: cfg.storage.table_path(PROFILES), "model_uri": model_uri}
        | ({"report": report_path} if report_path else {}),
        explanation=explained,
    )


def _ari_vs_truth(spark: SparkSession, cfg: AppConfig, assigned: DataFrame) -> float | None:
    """ARI against the generator's planted archetypes, when that table exists."""
    truth_path = cfg.storage.table_path(TRUTH)
    if cfg.input.events.path is not None or not delta_tables.exists(spark, truth_path):
        return None
    truth = delta_tables.read(spark, truth_path)
    joined = assigned.select(feat.CUSTOMER_ID, clustering.SEGMENT_ID).join(
        truth, on=feat.CUSTOMER_ID, how="inner"
    )
    return adjusted_rand_index(joined, "true_segment", clustering.SEGMENT_ID)


@dataclass
class Explained:
    """What explains a trained model: rules, composition and pictures (PNG bytes)."""

    rules: explain.RuleExplanation
    composition: explain.Composition | None
    pictures: dict[str, bytes]
    notes: list[str] = field(default_factory=list)


def _explain(
    spark: SparkSession,
    cfg: AppConfig,
    *,
    model: clustering.SegmentModel,
    assigned: DataFrame,
    profiles: profiling.Profiles,
    names: Mapping[int, str],
    selection: clustering.KSelection,
) -> Explained:
    ec = cfg.explain
    features = model.scaling.features
    explain.check_not_sensitive(features, ec.sensitive_attributes)
    rules = explain.explain_with_rules(
        assigned,
        features,
        [s.segment_id for s in profiles.segments],
        max_depth=ec.rules_max_depth,
        seed=cfg.training.seed,
    )
    notes = []
    if rules.fidelity < ec.min_rule_fidelity:
        notes.append(
            f"The rules reproduce only {rules.fidelity:.1%} of customers' segments (below "
            f"explain.min_rule_fidelity {ec.min_rule_fidelity:.0%}): read them as hints."
        )
        log.warning(notes[-1])
    customers = sources.read_customers(spark, cfg.input.customers, cfg.customers_path())
    composition = None
    if customers is None:
        notes.append("No customers dimension (input.customers): composition not reported.")
        log.info(notes[-1])
    else:
        composition = explain.composition(
            assigned,
            customers,
            ec.composition_attributes,
            sensitive=ec.sensitive_attributes,
            bins=ec.bins,
            max_levels=ec.max_levels,
        )
    projection = report.pca_projection(
        assigned, model.scaling, sample_rows=ec.plot_sample_rows, seed=cfg.training.seed
    )
    pictures = {
        "k_selection": report.k_selection_png(selection),
        "segment_sizes": report.sizes_png(profiles, names),
        "profile_heatmap": report.heatmap_png(profiles, names, profiles.features),
        "pca": report.pca_png(projection, names),
    }
    return Explained(rules=rules, composition=composition, pictures=pictures, notes=notes)


def _log_explanation(explained: Explained, cfg: AppConfig) -> None:
    ec, rules = cfg.explain, explained.rules
    mlflow.log_metric("rules_fidelity", rules.fidelity)
    mlflow.set_tag("rules_fidelity_ok", str(rules.fidelity >= ec.min_rule_fidelity).lower())
    mlflow.log_metrics({f"rules_fidelity_{sid}": v for sid, v in rules.segment_fidelity.items()})
    mlflow.log_metrics({f"feature_importance_{f}": v for f, v in rules.importances.items()})
    tracking.log_json(rules.as_dict(ec.rules_per_segment), "explain/rules.json")
    tracking.log_json(
        {"feature_importances": rules.importances, "features": list(rules.features)},
        "explain/feature_importances.json",
    )
    mlflow.log_text(rules.tree, "explain/decision_tree.txt")
    comp = explained.composition
    if comp is not None:
        tracking.log_json(
            {
                "attributes": list(comp.attributes),
                "sensitive": list(comp.sensitive),
                "not_in_customers_dimension": list(comp.missing),
                "rows": [dict(zip(explain.COMPOSITION_SCHEMA.names, r, strict=True))
                         for r in comp.rows],
            },
            "explain/composition.json",
        )  # fmt: skip
        for attribute in comp.sensitive:
            mlflow.log_metric(f"sensitive_max_gap_{attribute}", comp.max_gap(attribute))
    with tempfile.TemporaryDirectory() as tmp:
        for name, png in explained.pictures.items():
            path = Path(tmp) / f"{name}.png"
            path.write_bytes(png)
            mlflow.log_artifact(str(path), "plots")


def _composition_df(
    spark: SparkSession, comp: explain.Composition, names: Mapping[int, str]
) -> DataFrame:
    rows = [(r[0], names[r[0]], *r[1:]) for r in comp.rows]
    schema = T.StructType(
        [explain.COMPOSITION_SCHEMA["segment_id"],
         T.StructField("segment_name", T.StringType(), False),
         *explain.COMPOSITION_SCHEMA.fields[1:]]
    )  # fmt: skip
    return spark.createDataFrame(rows, schema)


def _write_report(
    cfg: AppConfig,
    explained: Explained,
    *,
    run_id: str,
    version: int,
    selection: clustering.KSelection,
    model: clustering.SegmentModel,
    profiles: profiling.Profiles,
    names: Mapping[int, str],
    customers: int,
) -> str:
    """The HTML report, logged to MLflow and written under ``<warehouse>/reports/``."""
    tc, fc = cfg.tracking, cfg.features
    html = report.render_html(
        report.ReportData(
            model_name=tc.registered_model,
            model_version=version,
            run_id=run_id,
            as_of=fc.as_of,
            customers=customers,
            chosen_k=selection.chosen_k,
            k_reason=selection.reason,
            features=model.scaling.features,
            profiles=profiles,
            names=names,
            rules=explained.rules,
            rules_per_segment=cfg.explain.rules_per_segment,
            composition=explained.composition,
            pictures=explained.pictures,
            created_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
            notes=explained.notes,
        )
    )
    name = f"segment_report_{tc.registered_model}_v{version}_{fc.as_of.isoformat()}.html"
    mlflow.log_text(html, f"report/{name}")
    path = delta_tables.write_file(
        join_path(cfg.storage.table_path(REPORTS_DIR), name), html.encode("utf-8")
    )
    mlflow.set_tag("report_path", path)
    return path


# --- publish: membership, history, migration, drift ---------------------------------------


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
        out = {"stayed": 0, "moved": 0, "entered": 0, "left": 0}
        for r in self.migration:
            if r["from_segment_id"] is None:
                out["entered"] += r["customers"]
            elif r["to_segment_id"] is None:
                out["left"] += r["customers"]
            elif r["from_segment_id"] == r["to_segment_id"]:
                out["stayed"] += r["customers"]
            else:
                out["moved"] += r["customers"]
        return out


def publish(
    spark: SparkSession,
    cfg: AppConfig,
    *,
    job: str,
    run_id: str,
    assigned: DataFrame,
    features_df: DataFrame,
    model_version: int,
    model_features: Sequence[str],
    names: Mapping[int, str],
    scored_at: dt.datetime,
    first: Sequence[tuple[str, Callable[[], int]]] = (),
    model_name: str | None = None,
) -> Publication:
    """Write one model's membership snapshot for ``features.as_of`` with its consequences.

    Computes everything first: the ``segment_membership`` snapshot, the MERGE into the SCD2
    ``segment_membership_history`` (or its rebuild for a backfill), ``segment_migration`` from
    the baseline snapshot, and PSI for segment shares and ``model_features``. Only then it
    writes, in this order: ``first`` (the job's own tables), membership, history, migration,
    and logs it all to the active MLflow run. A failure before the writes changes no table; a
    failure between two writes leaves the earlier ones written, and a re-run of the same
    ``as_of`` repairs the rest (see README "Publishing order").

    ``model_name`` (default ``tracking.registered_model``) names the segmentation: snapshots,
    history and migration of other segmentations (e.g. ``rfm``) are never touched.
    """
    fc, dc = cfg.features, cfg.drift
    as_of, model_name = fc.as_of, model_name or cfg.tracking.registered_model
    sizes = history.segment_counts(assigned)
    unknown = sorted(set(sizes) - set(names))
    if unknown:
        raise InputError(
            f"model {model_name} v{model_version} has no name for segment(s) {unknown}"
        )
    name_map = F.create_map(
        *[x for sid, nm in sorted(names.items()) for x in (F.lit(sid), F.lit(nm))]
    )
    membership = assigned.select(
        feat.CUSTOMER_ID,
        F.lit(as_of).cast("date").alias(feat.AS_OF),
        F.col(clustering.SEGMENT_ID).cast("int").alias("segment_id"),
        F.element_at(name_map, F.col(clustering.SEGMENT_ID)).alias("segment_name"),
        F.col(clustering.DISTANCE).cast("double").alias("distance"),
        F.lit(model_name).alias("model_name"),
        F.lit(model_version).cast("int").alias("model_version"),
        F.lit(run_id).alias("run_id"),
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
    )
    paths = {n: cfg.storage.table_path(n) for n in (MEMBERSHIP, HISTORY, MIGRATION)}
    check_table_layout(spark, cfg)
    existing = (
        delta_tables.read(spark, paths[MEMBERSHIP]).where(F.col("model_name") == model_name)
        if delta_tables.exists(spark, paths[MEMBERSHIP])
        else None
    )
    snapshots = (
        sorted(r[0] for r in existing.select(feat.AS_OF).distinct().collect())
        if existing is not None
        else []
    )
    baseline = _baseline(dc.baseline_as_of, snapshots, as_of)
    snapshot_opts = _snapshot_options(
        cfg, job=job, run_id=run_id, partition_by=SNAPSHOT_PARTITIONS,
        snapshot={"model_name": model_name, feat.AS_OF: as_of},
        metadata={"model_version": str(model_version)}, txn_extra={"v": model_version},
    )  # fmt: skip
    history_write = _HistoryWrite(
        spark, paths[HISTORY], existing, snapshots, membership, as_of=as_of,
        model_name=model_name, txn=snapshot_opts.txn, metadata=snapshot_opts.metadata,
    )  # fmt: skip
    writes: list[Write] = [
        *first,
        (MEMBERSHIP, _writer(spark, membership, paths[MEMBERSHIP], snapshot_opts)),
        (HISTORY, history_write),
    ]
    migration_rows: list[dict[str, Any]] = []
    previous = None
    if baseline is not None and existing is not None:
        previous = existing.where(F.col(feat.AS_OF) == F.lit(baseline).cast("date"))
        migration_df = history.migration_matrix(
            previous, membership, as_of=as_of, previous_as_of=baseline, model_name=model_name
        )
        collected = migration_df.collect()
        migration_rows = [r.asDict() for r in collected]
        # At most (k + 1)^2 rows: written from the driver rather than computed twice.
        migration = spark.createDataFrame(collected, migration_df.schema)
        writes.append((MIGRATION, _writer(spark, migration, paths[MIGRATION], snapshot_opts)))
    pub = Publication(
        as_of=as_of,
        model_name=model_name,
        model_version=model_version,
        customers=sum(sizes.values()),
        sizes=sizes,
        names=dict(names),
        table_versions={},
        history_mode="",
        baseline_as_of=baseline,
        migration=migration_rows,
    )
    if previous is not None:
        _drift(spark, cfg, pub, previous, features_df, model_features)
    pub.table_versions = write_tables(writes)
    pub.history_mode = history_write.mode
    _log_publication(pub, dc.psi_threshold)
    return pub


def _outdated_tables(spark: SparkSession, cfg: AppConfig) -> dict[str, list[str]]:
    """Snapshot tables written before they were partitioned by model_name (name -> layout)."""
    out = {}
    for name in (MEMBERSHIP, MIGRATION):
        parts = delta_tables.partition_columns(spark, cfg.storage.table_path(name))
        if parts is not None and parts != list(SNAPSHOT_PARTITIONS):
            out[name] = parts
    return out


def check_table_layout(spark: SparkSession, cfg: AppConfig) -> None:
    """Fail before any work when a snapshot table has the layout of an older release."""
    outdated = _outdated_tables(spark, cfg)
    if outdated:
        detail = ", ".join(f"{n} by {parts}" for n, parts in outdated.items())
        raise InputError(
            f"tables written by an older release are partitioned differently ({detail}; now "
            f"{list(SNAPSHOT_PARTITIONS)}, so several segmentations can share them): run "
            "`make upgrade-tables` (jobs/maintain_tables.py --upgrade) once"
        )


def upgrade_tables(spark: SparkSession, cfg: AppConfig) -> dict[str, int]:
    """Repartition outdated snapshot tables by ``SNAPSHOT_PARTITIONS`` (one version each)."""
    return {
        name: delta_tables.repartition(
            spark,
            cfg.storage.table_path(name),
            SNAPSHOT_PARTITIONS,
            metadata={"job": "maintain_tables", "upgrade": f"repartitioned from {parts}"},
        )
        for name, parts in _outdated_tables(spark, cfg).items()
    }


def _baseline(
    configured: dt.date | None, snapshots: Sequence[dt.date], as_of: dt.date
) -> dt.date | None:
    if configured is not None:
        if configured not in snapshots:
            raise InputError(
                f"drift.baseline_as_of {configured} has no segment_membership snapshot; "
                f"available: {', '.join(map(str, snapshots)) or 'none'}"
            )
        return configured
    earlier = [d for d in snapshots if d < as_of]
    return max(earlier) if earlier else None


@dataclass
class _HistoryWrite:
    """The history write: created with the first snapshot, then one MERGE per snapshot.

    Forward (``as_of`` on or after every date the history holds): MERGE
    ``history.merge_source``. Backfill (an older ``as_of``): MERGE this model's history rebuilt
    from every snapshot, deleting its rows the rebuild no longer has. ``mode`` says which ran.
    """

    spark: SparkSession
    path: str
    existing: DataFrame | None
    snapshots: Sequence[dt.date]
    membership: DataFrame
    as_of: dt.date
    model_name: str
    txn: delta_tables.Txn | None
    metadata: Mapping[str, str]
    mode: str = "not written"

    def __call__(self) -> int:
        spark, as_of, model_name = self.spark, self.as_of, self.model_name
        if not delta_tables.exists(spark, self.path):
            rows = history.apply_snapshot(None, self.membership, as_of=as_of, model_name=model_name)
            options = delta_tables.WriteOptions(mode="append", txn=self.txn, metadata=self.metadata)
            self.mode = "created"
            return delta_tables.write(spark, rows, self.path, options).version
        current = delta_tables.read(spark, self.path)
        latest = history.latest_change(current, model_name)
        mine = f"t.model_name = {delta_tables.sql_literal(model_name)}"
        if latest is None or latest <= as_of:
            source = history.merge_source(
                current, self.membership, as_of=as_of, model_name=model_name
            )
            delete = f"{mine} AND t.valid_from = {delta_tables.sql_literal(as_of)}"
            self.mode = "merged"
        else:
            log.warning(
                "as_of %s is before the latest snapshot in segment_membership_history (%s): "
                "rebuilding that model's history from all membership snapshots",
                as_of,
                latest,
            )
            assert self.existing is not None
            all_snapshots = self.existing.where(
                F.col(feat.AS_OF) != F.lit(as_of).cast("date")
            ).unionByName(self.membership.select(*self.existing.columns))
            source = history.rebuild(
                all_snapshots, model_name=model_name, snapshots=[*self.snapshots, as_of]
            )
            delete = mine
            self.mode = "rebuilt"
        return delta_tables.merge(
            spark, source, self.path, keys=(feat.CUSTOMER_ID, "model_name", "valid_from"),
            delete_unmatched=delete, txn=self.txn, metadata=self.metadata,
        ).version  # fmt: skip


def _drift(
    spark: SparkSession,
    cfg: AppConfig,
    pub: Publication,
    previous: DataFrame,
    features_df: DataFrame,
    model_features: Sequence[str],
) -> None:
    """PSI of segment shares and of each clustering feature against the baseline snapshot."""
    dc = cfg.drift
    assert pub.baseline_as_of is not None
    pub.segment_psi = history.psi(history.segment_counts(previous), pub.sizes)
    if pub.segment_psi > dc.psi_threshold:
        pub.retrain_reasons.append(
            f"segment shares moved: PSI {pub.segment_psi:.3f} > drift.psi_threshold "
            f"{dc.psi_threshold}"
        )
    base_features = delta_tables.read(
        spark, cfg.storage.table_path(FEATURES), partitions={feat.AS_OF: pub.baseline_as_of}
    )
    if base_features.isEmpty():
        log.warning("no customer_features snapshot for %s: no feature PSI", pub.baseline_as_of)
        return
    # Every numeric feature is measured (and logged); the clustering features decide.
    numeric = [f for f in _numeric_features(features_df) if f in base_features.columns]
    measured = [*model_features, *[f for f in numeric if f not in model_features]]
    for d in history.feature_psi(base_features, features_df, measured, bins=dc.psi_bins):
        if d.feature not in model_features:
            pub.other_feature_psi[d.feature] = d.psi
            continue
        pub.feature_psi[d.feature] = d.psi
        if d.psi > dc.psi_threshold:
            pub.retrain_reasons.append(
                f"feature {d.feature} drifted: PSI {d.psi:.3f} > drift.psi_threshold "
                f"{dc.psi_threshold}"
            )


def _log_publication(pub: Publication, threshold: float) -> None:
    for name, v in pub.table_versions.items():
        mlflow.set_tag(f"output.{name}.version", str(v))
    mlflow.set_tag("history_update", pub.history_mode)
    mlflow.log_metric("membership_customers", pub.customers)
    if pub.baseline_as_of is None:
        mlflow.set_tag("retrain_recommended", "unknown (no earlier snapshot)")
        return
    mlflow.set_tag("drift_baseline_as_of", pub.baseline_as_of.isoformat())
    mlflow.set_tag("retrain_recommended", str(pub.retrain_recommended).lower())
    if pub.retrain_reasons:
        mlflow.set_tag("retrain_reasons", "; ".join(pub.retrain_reasons)[:5000])
    moves = pub.moves()
    mlflow.log_metrics({f"migration_{k}": v for k, v in moves.items()})
    if pub.segment_psi is not None:
        mlflow.log_metric("psi_segments", pub.segment_psi)
    for f, value in {**pub.feature_psi, **pub.other_feature_psi}.items():
        mlflow.log_metric(f"psi_feature_{f}", value)
    tracking.log_json(pub.migration, "drift/migration_matrix.json")
    header = ["from_segment_id", "from_segment_name", "to_segment_id", "to_segment_name",
              "customers", "share_of_from"]  # fmt: skip
    lines = [",".join(header)] + [
        ",".join(_csv(r[h]) for h in header) for r in sorted(pub.migration, key=_migration_key)
    ]
    mlflow.log_text("\n".join(lines) + "\n", "drift/migration_matrix.csv")
    tracking.log_json(
        {
            "baseline_as_of": pub.baseline_as_of,
            "as_of": pub.as_of,
            "psi_threshold": threshold,
            "segment_shares": pub.segment_psi,
            "features": pub.feature_psi,
            "other_features": pub.other_feature_psi,
            "retrain_recommended": pub.retrain_recommended,
            "reasons": pub.retrain_reasons,
        },
        "drift/psi.json",
    )


def _migration_key(r: Mapping[str, Any]) -> tuple[int, int]:
    return (r["from_segment_id"] or 0, r["to_segment_id"] or 0)


def _csv(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    return f'"{text}"' if "," in text or '"' in text else text


# --- assign -------------------------------------------------------------------------------


@dataclass
class AssignResult:
    run_id: str
    model_name: str
    model_version: int
    features_reused: bool
    publication: Publication
    rejected: dict[str, int] = field(default_factory=dict)


def assign_segments(spark: SparkSession, cfg: AppConfig) -> AssignResult:
    """Score ``features.as_of`` with the model under the alias, without retraining.

    Computes that date's features (or reuses the stored snapshot with
    ``assign.reuse_features``), assigns every customer with the registered pipeline, and
    publishes membership, history, migration and drift; the features and quarantined events
    commit with them, so a failure changes no table.
    """
    tc, as_of = cfg.tracking, cfg.features.as_of
    check_table_layout(spark, cfg)
    experiment_id = tracking.configure(tc)
    champion = load_champion(cfg)
    if champion is None:
        raise InputError(
            f"no model under {tc.registered_model}@{tc.alias} (tracking.registered_model, "
            "tracking.alias): train one with tracking.promote=true, or promote a trained "
            "version with `make promote VERSION=<n>`"
        )
    model = tracking.load_model(tc.registered_model, champion.version)
    scored_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"assign_segments {as_of}"):
        run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
        mlflow.set_tag("job", "assign_segments")
        mlflow.set_tag("model_version", str(champion.version))
        tracking.log_params(
            {
                "model_name": tc.registered_model,
                "alias": tc.alias,
                "model_version": champion.version,
                "model_run_id": champion.run_id,
                "reuse_features": cfg.assign.reuse_features,
                "drift.baseline_as_of": cfg.drift.baseline_as_of,
                "drift.psi_threshold": cfg.drift.psi_threshold,
            }
        )
        computed: FeatureSnapshot | None = None
        features_df = None
        if cfg.assign.reuse_features and delta_tables.exists(
            spark, cfg.storage.table_path(FEATURES)
        ):
            features_df = delta_tables.read(
                spark, cfg.storage.table_path(FEATURES), partitions={feat.AS_OF: as_of}
            )
            if features_df.isEmpty():
                features_df = None
        if features_df is None:
            computed = compute_feature_snapshot(spark, cfg)
            features_df = computed.features
        first = (
            computed.writes(spark, cfg, job="assign_segments", run_id=run_id) if computed else []
        )
        features_df = features_df.cache()
        assigned = clustering.assign(model, features_df).cache()
        try:
            pub = publish(
                spark,
                cfg,
                job="assign_segments",
                run_id=run_id,
                assigned=assigned,
                features_df=features_df,
                model_version=champion.version,
                model_features=champion.features,
                names=champion.names,
                scored_at=scored_at,
                first=first,
            )
        finally:
            assigned.unpersist()
            features_df.unpersist()
            if computed is not None:
                computed.unpersist()
    return AssignResult(
        run_id=run_id,
        model_name=tc.registered_model,
        model_version=champion.version,
        features_reused=computed is None,
        publication=pub,
        rejected=computed.rejected_counts if computed else {},
    )


# --- rule-based segmentations -------------------------------------------------------------


@dataclass
class RuleSegmentsResult:
    run_id: str
    as_of: dt.date
    publications: dict[str, Publication] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    rfm_cuts: rulesets.RfmCuts | None = None


def rule_segments(spark: SparkSession, cfg: AppConfig) -> RuleSegmentsResult:
    """RFM segments and B2B tiers of ``features.as_of``, each published like a model.

    Reads the stored ``customer_features`` snapshot of that date. Both segmentations are
    computed and checked before either is written; each is then published (membership,
    history, migration, drift) under its own ``model_name`` in a nested MLflow run, RFM with its
    per-customer scores (``rfm_scores``).
    """
    as_of, rc, bc = cfg.features.as_of, cfg.rfm, cfg.b2b
    check_table_layout(spark, cfg)
    features_path = cfg.storage.table_path(FEATURES)
    features_df = (
        delta_tables.read(spark, features_path, partitions={feat.AS_OF: as_of})
        if delta_tables.exists(spark, features_path)
        else None
    )
    if features_df is None or features_df.isEmpty():
        raise InputError(
            f"no customer_features snapshot for {as_of} (features.as_of) at {features_path}: "
            "run build_features for that date first"
        )
    features_df = features_df.cache()
    experiment_id = tracking.configure(cfg.tracking)
    scored_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cached: list[DataFrame] = [features_df]
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"rule_segments {as_of}") as run:
        result = RuleSegmentsResult(run_id=run.info.run_id, as_of=as_of)
        mlflow.set_tag("job", "rule_segments")
        tracking.log_params({"as_of": as_of.isoformat(), "rfm.enabled": rc.enabled,
                             "b2b.enabled": bc.enabled})  # fmt: skip
        # (model name, assignment, names, version, features, extra frames): all computed first.
        todo: list[tuple[str, DataFrame, dict[int, str], int, tuple[str, ...], DataFrame | None]]
        todo = []
        try:
            if rc.enabled:
                result.rfm_cuts = rulesets.rfm_cuts(features_df, rc)
                scored = rulesets.score_rfm(features_df, rc, result.rfm_cuts).cache()
                cached.append(scored)
                scores = scored.select(
                    F.lit(as_of).cast("date").alias(feat.AS_OF),
                    F.lit(rc.model_name).alias("model_name"),
                    F.lit(rc.version).cast("int").alias("model_version"),
                    feat.CUSTOMER_ID, rulesets.R_SCORE, rulesets.F_SCORE, rulesets.M_SCORE,
                    F.concat_ws("", rulesets.R_SCORE, rulesets.F_SCORE, rulesets.M_SCORE)
                    .alias("rfm_cell"),
                    F.col(clustering.SEGMENT_ID).alias("segment_id"), "segment_name",
                    F.lit(result.run_id).alias("run_id"),
                )  # fmt: skip
                names = rulesets.segment_names([s.name for s in rc.segments])
                rfm_features = (rc.recency_feature, rc.frequency_feature, rc.monetary_feature)
                todo.append((rc.model_name, scored, names, rc.version, rfm_features, scores))
            else:
                result.skipped[rc.model_name] = "rfm.enabled is false"
            if bc.enabled:
                customers = sources.read_customers(spark, cfg.input.customers, cfg.customers_path())
                if customers is None:
                    result.skipped[bc.model_name] = "no customers dimension (input.customers)"
                else:
                    tiers = rulesets.b2b_tiers(features_df, customers, bc).cache()
                    cached.append(tiers)
                    if tiers.isEmpty():
                        result.skipped[bc.model_name] = (
                            f"no business accounts ({bc.business_column} is never true)"
                        )
                    else:
                        names = rulesets.segment_names([t.name for t in bc.tiers])
                        todo.append((bc.model_name, tiers, names, bc.version,
                                     (bc.spend_feature,), None))  # fmt: skip
            else:
                result.skipped[bc.model_name] = "b2b.enabled is false"
            for model_name, reason in result.skipped.items():
                log.info("%s skipped: %s", model_name, reason)
                mlflow.set_tag(f"skipped.{model_name}", reason)
            for model_name, assigned, names, version, model_features, extra_rows in todo:
                with mlflow.start_run(
                    experiment_id=experiment_id, run_name=f"{model_name} {as_of}", nested=True
                ) as child:
                    mlflow.set_tags({"job": "rule_segments", "segmentation": model_name})
                    first = []
                    if extra_rows is not None:
                        options = _snapshot_options(
                            cfg, job="rule_segments", run_id=child.info.run_id,
                            partition_by=(feat.AS_OF,), snapshot={feat.AS_OF: as_of},
                        )  # fmt: skip
                        path = cfg.storage.table_path(RFM_SCORES)
                        first.append((RFM_SCORES, _writer(spark, extra_rows, path, options)))
                    if model_name == rc.model_name and result.rfm_cuts is not None:
                        tracking.log_json(dataclasses.asdict(result.rfm_cuts), "rfm/cuts.json")
                    result.publications[model_name] = publish(
                        spark, cfg, job="rule_segments", run_id=child.info.run_id,
                        assigned=rulesets.as_assignment(assigned), features_df=features_df,
                        model_version=version, model_features=model_features,
                        names=names, scored_at=scored_at, first=first, model_name=model_name,
                    )  # fmt: skip
                    for sid, n in result.publications[model_name].sizes.items():
                        mlflow.log_metric(f"segment_size_{sid}", n)
        finally:
            for df in cached:
                df.unpersist()
    return result


# --- promote ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromoteResult:
    model_name: str
    alias: str
    version: int
    previous_version: int | None
    run_id: str


def promote_model(cfg: AppConfig, version: int | None) -> PromoteResult:
    """Move ``tracking.alias`` to ``version`` (None: the latest registered), logged in MLflow."""
    tc = cfg.tracking
    experiment_id = tracking.configure(tc)
    if version is None:
        version = tracking.latest_version(tc.registered_model)
        if version is None:
            raise InputError(f"model {tc.registered_model} has no registered version to promote")
    training_run = tracking.version_run_id(tc.registered_model, version)
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"promote {tc.registered_model} v{version}"
    ) as run:
        mlflow.set_tag("job", "promote_model")
        previous = tracking.promote(
            tc.registered_model, tc.alias, version, reason=f"promote_model run {run.info.run_id}"
        )
        tracking.log_params(
            {
                "model_name": tc.registered_model,
                "alias": tc.alias,
                "version": version,
                "previous_version": previous if previous is not None else "none",
                "training_run_id": training_run,
            }
        )
    return PromoteResult(tc.registered_model, tc.alias, version, previous, run.info.run_id)


# --- writing ------------------------------------------------------------------------------


Write = tuple[str, Callable[[], int]]
"""A table name and the call that writes it (returns the table version holding the rows)."""


def _txn(cfg: AppConfig, *, job: str, run_id: str, parts: Mapping[str, Any]) -> delta_tables.Txn:
    """The write's Delta transaction id: job, run key (storage.run_key, else the MLflow run
    id), snapshot values and model version. A retry with the same run key commits nothing
    twice; a new run key, or new content (another model version), writes again."""
    key = cfg.storage.run_key or run_id
    values = ",".join(f"{k}={_txn_value(v)}" for k, v in sorted(parts.items()))
    return delta_tables.Txn(f"segmentation:{job}:{key}:{values}")


def _txn_value(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def _snapshot_options(
    cfg: AppConfig,
    *,
    job: str,
    run_id: str,
    partition_by: tuple[str, ...],
    snapshot: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
    txn_extra: Mapping[str, Any] | None = None,
) -> delta_tables.WriteOptions:
    """Replace one snapshot (``snapshot``: its partition values) of a table, idempotently."""
    return delta_tables.WriteOptions(
        mode="overwrite",
        partition_by=partition_by,
        replace=dict(snapshot),
        txn=_txn(cfg, job=job, run_id=run_id, parts={**snapshot, **(txn_extra or {})}),
        metadata={
            "job": job,
            "run_id": run_id,
            **{k: _txn_value(v) for k, v in snapshot.items()},
            **(metadata or {}),
        },
    )


def _writer(
    spark: SparkSession, df: DataFrame, path: str, options: delta_tables.WriteOptions
) -> Callable[[], int]:
    return lambda: delta_tables.write(spark, df, path, options).version


def write_tables(writes: Sequence[Write]) -> dict[str, int]:
    """Write tables one after another, in the job's documented order; returns the versions.

    Call it once everything is computed. Each write is atomic; Delta has no multi-table
    transaction, so a failure between two writes leaves the earlier ones written: a re-run of
    the same snapshot replaces them (no duplicates) and writes the rest.
    """
    versions: dict[str, int] = {}
    for i, (name, write) in enumerate(writes):
        if i:
            _fault_point("between-writes")
        versions[name] = write()
    return versions


def _fault_point(name: str) -> None:
    """Crash tests' hook: with SEGMENTATION_FAULT_POINT=name, signal and wait to be killed."""
    if os.environ.get("SEGMENTATION_FAULT_POINT") != name:
        return
    marker = os.environ.get("SEGMENTATION_FAULT_MARKER")
    if marker:
        Path(marker).write_text(name)
    time.sleep(600)


# --- summaries ----------------------------------------------------------------------------

_SUMMARY_FEATURES = (
    feat.RECENCY,
    feat.FREQUENCY,
    feat.MONETARY,
    feat.AOV,
    feat.TENURE,
    feat.DISCOUNT_SHARE,
)


def format_training_summary(result: TrainResult, cfg: AppConfig) -> str:
    """A readable report of a training run for the terminal."""
    shown = [f for f in _SUMMARY_FEATURES if result.segments and f in result.segments[0].means]
    header = f"{'id':>3}  {'segment':<34} {'customers':>9} {'share':>6}  " + "  ".join(
        f"{f:>15}" for f in shown
    )
    lines = [
        "",
        f"Segmentation as of {result.as_of}: {result.customers} customers, "
        f"k = {result.selection.chosen_k}",
        f"  model selection: {result.selection.reason}",
        "",
        header,
        "-" * len(header),
    ]
    for s in result.segments:
        values = "  ".join(f"{_fmt(s.means.get(f)):>15}" for f in shown)
        lines.append(f"{s.segment_id:>3}  {s.name[:34]:<34} {s.size:>9} {s.share:>6.1%}  {values}")
    lines += ["", "(feature columns show segment means in original units)"]
    if result.ari_vs_truth is not None:
        lines.append(f"Adjusted Rand index vs planted archetypes: {result.ari_vs_truth:.3f}")
    ex = result.explanation
    if ex is not None:
        lines.append(
            f"Rules (decision tree, depth {ex.rules.max_depth}) reproduce {ex.rules.fidelity:.1%} "
            "of segments (MLflow artifact explain/rules.json); e.g.:"
        )
        for s in result.segments:
            top = ex.rules.top(s.segment_id, 1)
            if top:
                lines.append(f"  {s.segment_id:>3} {s.name[:30]:<30} {top[0].text()}")
        if ex.composition is not None and ex.composition.sensitive:
            gaps = ", ".join(
                f"{a} {ex.composition.max_gap(a):.1%}" for a in ex.composition.sensitive
            )
            lines.append(f"Sensitive attributes, largest segment-vs-population gap: {gaps}")
    if "report" in result.paths:
        lines.append(f"Report: {result.paths['report']}")
    m = result.matching
    if result.previous_version is None:
        lines.append("Segment ids: first model, numbered by size (1 = largest).")
    else:
        new_ids = [p.segment_id for p in m.pairs if p.previous_id is None]
        lines.append(
            f"Segment ids: {len(m.kept)} kept from version {result.previous_version} (same id "
            f"and name), new: {new_ids or 'none'}, retired: {list(m.retired) or 'none'} "
            "(MLflow artifact segments/matching.json)."
        )
    lines += [
        "",
        f"Tables (Delta) under {cfg.storage.warehouse}/:",
        *[f"  {n:<27} version {v}" for n, v in result.table_versions.items()],
        f"MLflow: run {result.run_id} in experiment '{cfg.tracking.experiment}' "
        f"({cfg.tracking.tracking_uri})",
    ]
    if result.promoted:
        lines.append(
            f"  model {result.model_name} version {result.model_version} is now "
            f"@{cfg.tracking.alias}"
        )
    else:
        lines.append(
            f"  model {result.model_name} version {result.model_version} registered as a "
            f"candidate; @{cfg.tracking.alias} is unchanged (version "
            f"{result.previous_version or 'none'}). Review it, then: make promote "
            f"VERSION={result.model_version} && make assign"
        )
    if result.publication is not None:
        lines += _publication_lines(result.publication, cfg)
    if cfg.tracking.tracking_uri.startswith("sqlite:"):
        lines.append(
            f"  open the UI: make mlflow-ui  (or: .venv/bin/mlflow ui --backend-store-uri "
            f"{cfg.tracking.tracking_uri}), then http://127.0.0.1:5000"
        )
    return "\n".join(lines)


def format_assign_summary(result: AssignResult, cfg: AppConfig) -> str:
    """A readable report of an assignment run for the terminal."""
    pub = result.publication
    features = (
        "reused the stored customer_features snapshot"
        if result.features_reused
        else "computed customer_features from the events (quarantined: "
        + (_counts(result.rejected) if result.rejected else "none")
        + ")"
    )
    lines = [
        "",
        f"Segments as of {pub.as_of}: {pub.customers} customers scored with "
        f"{result.model_name} version {result.model_version} (@{cfg.tracking.alias}); "
        f"{features}",
        "",
        f"{'id':>3}  {'segment':<40} {'customers':>9} {'share':>6}",
    ]
    for sid in sorted(pub.names):
        n = pub.sizes.get(sid, 0)
        share = n / pub.customers if pub.customers else 0.0
        lines.append(f"{sid:>3}  {pub.names[sid][:40]:<40} {n:>9} {share:>6.1%}")
    lines += ["", f"Tables (Delta) under {cfg.storage.warehouse}/:"]
    lines += [f"  {n:<27} version {v}" for n, v in pub.table_versions.items()]
    lines.append(f"MLflow: run {result.run_id} in experiment '{cfg.tracking.experiment}'")
    lines += _publication_lines(pub, cfg)
    return "\n".join(lines)


def format_rules_summary(result: RuleSegmentsResult, cfg: AppConfig) -> str:
    """A readable report of a rule_segments run for the terminal."""
    lines = ["", f"Rule-based segmentations as of {result.as_of}:"]
    if result.rfm_cuts is not None:
        c = result.rfm_cuts
        lines.append(
            f"  RFM quintile cuts: recency {list(c.recency)}, frequency {list(c.frequency)}, "
            f"monetary {[round(v, 2) for v in c.monetary]}"
        )
    for name, pub in result.publications.items():
        lines += ["", f"{name} (version {pub.model_version}): {pub.customers} customers"]
        for sid in sorted(pub.names):
            n = pub.sizes.get(sid, 0)
            share = n / pub.customers if pub.customers else 0.0
            lines.append(f"  {sid:>3}  {pub.names[sid][:32]:<32} {n:>9} {share:>6.1%}")
        if pub.baseline_as_of is not None:
            moves = pub.moves()
            lines.append(
                f"  since {pub.baseline_as_of}: {moves['stayed']} stayed, {moves['moved']} "
                f"moved, {moves['entered']} entered, {moves['left']} left"
            )
    for name, reason in result.skipped.items():
        lines.append(f"{name}: skipped ({reason})")
    lines.append(f"MLflow: run {result.run_id} in experiment '{cfg.tracking.experiment}'")
    return "\n".join(lines)


def _publication_lines(pub: Publication, cfg: AppConfig) -> list[str]:
    lines = [f"History (segment_membership_history): {pub.history_mode}."]
    if pub.baseline_as_of is None:
        lines.append("No earlier snapshot: no migration matrix or drift yet.")
        return lines
    moves = pub.moves()
    lines.append(
        f"Since {pub.baseline_as_of}: {moves['stayed']} stayed, {moves['moved']} moved between "
        f"segments, {moves['entered']} entered, {moves['left']} left (table segment_migration)."
    )
    top = sorted(
        (r for r in pub.migration
         if r["from_segment_id"] is not None and r["to_segment_id"] is not None
         and r["from_segment_id"] != r["to_segment_id"]),
        key=lambda r: -r["customers"],
    )[:5]  # fmt: skip
    for r in top:
        lines.append(
            f"  {r['customers']:>7} from {r['from_segment_id']} {r['from_segment_name']} "
            f"-> {r['to_segment_id']} {r['to_segment_name']} ({r['share_of_from']:.1%})"
        )
    psi_parts = [f"segments {pub.segment_psi:.3f}"] if pub.segment_psi is not None else []
    psi_parts += [f"{f} {v:.3f}" for f, v in sorted(pub.feature_psi.items())]
    lines.append(f"PSI vs {pub.baseline_as_of}: {', '.join(psi_parts)}")
    if pub.retrain_recommended:
        lines.append("RETRAIN RECOMMENDED: " + "; ".join(pub.retrain_reasons))
    else:
        lines.append(
            f"Retrain not needed: every PSI <= drift.psi_threshold ({cfg.drift.psi_threshold})."
        )
    return lines


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if abs(value) < 1e6 else f"{value:,.0f}"
