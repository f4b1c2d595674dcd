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
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pyspark
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation import clustering, delta_tables, profiling, quality, sources, tracking
from segmentation import features as feat
from segmentation import generator as gen
from segmentation.config import AppConfig, flatten, to_dict
from segmentation.errors import InputError
from segmentation.evaluation import adjusted_rand_index

log = logging.getLogger(__name__)

EVENTS, CUSTOMERS, TRUTH = "events", "customers", "segment_truth"
FEATURES, MEMBERSHIP, PROFILES = "customer_features", "segment_membership", "segment_profiles"
REJECTED = "rejected_events"


# --- generate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateResult:
    skipped: bool
    versions: dict[str, int | None]
    rows: dict[str, int]


def generate(spark: SparkSession, cfg: AppConfig, *, if_absent: bool = False) -> GenerateResult:
    """Write the sample ``events``, ``customers`` and ``segment_truth`` tables.

    Args:
        spark: the active session.
        cfg: ``generator`` sizes and seed; ``storage`` for the table locations.
        if_absent: do nothing when the events table already exists.
    """
    storage = cfg.storage
    paths = {name: storage.table_path(name) for name in (EVENTS, CUSTOMERS, TRUTH)}
    if if_absent and delta_tables.table_exists(paths[EVENTS]):
        log.info("sample events already at %s: not generated again", paths[EVENTS])
        return GenerateResult(
            True, {n: delta_tables.table_version(p) for n, p in paths.items()}, {}
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
    backend = delta_tables.resolve_backend(spark, storage.delta_backend)
    params = json.dumps(to_dict(g), sort_keys=True)
    key = "generate-" + hashlib.sha256(params.encode()).hexdigest()[:16]
    options = delta_tables.WriteOptions(
        mode="overwrite", idempotency_key=key, metadata={"job": "generate", "params": params}
    )
    frames = {EVENTS: data.events, CUSTOMERS: data.customers, TRUTH: data.segment_truth}
    staged = _stage_all(spark, frames, paths, options, backend)
    versions = _commit_all(spark, staged)
    return GenerateResult(False, dict(versions), {n: s.rows for n, s in staged.items()})


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
    backend = delta_tables.configured_backend(cfg.storage.delta_backend, cfg.spark.conf)
    sources.check_source(cfg.input.events, cfg.events_path(), backend=backend)


def build_features(spark: SparkSession, cfg: AppConfig) -> FeaturesResult:
    """Quarantine unusable events, compute ``customer_features`` as of ``features.as_of``.

    Both tables' snapshots for ``as_of`` are replaced together, and only if the share of
    rejected input rows is within ``quality.max_reject_share``; otherwise no table changes.
    The run is tracked in MLflow with the counts per reject reason.
    """
    backend = delta_tables.resolve_backend(spark, cfg.storage.delta_backend)
    fc, q = cfg.features, cfg.quality
    events_path = cfg.events_path()
    source = sources.read_events(spark, cfg.input.events, events_path, backend=backend)
    split = quality.split_events(
        source.events,
        earliest=q.earliest_event_date,
        latest=fc.as_of + dt.timedelta(days=q.max_days_after_as_of),
    )
    events_version = (
        delta_tables.table_version(events_path) if cfg.input.events.format == "delta" else None
    )
    experiment_id = tracking.configure(cfg.tracking)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"build_features {fc.as_of}"):
        run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
        mlflow.set_tag("job", "build_features")
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
        snapshot = delta_tables.WriteOptions(
            mode="overwrite",
            partition_by=(feat.AS_OF,),
            replace_partitions={feat.AS_OF: fc.as_of},
            metadata={
                "job": "build_features",
                "run_id": run_id,
                "as_of": fc.as_of.isoformat(),
                "events_path": events_path,
                "events_version": str(events_version),
            },
        )
        rejected_df = split.rejected.select(
            *sources.CANONICAL_SCHEMA.names,
            quality.REASON,
            F.lit(fc.as_of).alias(feat.AS_OF),
            F.lit(run_id).alias("run_id"),
        )
        staged_rejected = delta_tables.stage(
            spark, rejected_df, cfg.storage.table_path(REJECTED), snapshot, backend=backend
        )
        input_rows = source.events.count()
        rejected = {
            r[quality.REASON]: int(r["count"])
            for r in delta_tables.staged_rows(spark, staged_rejected)
            .groupBy(quality.REASON)
            .count()
            .collect()
        }
        mlflow.log_metric("input_rows", input_rows)
        mlflow.log_metric("rejected_rows", staged_rejected.rows)
        for reason in quality.REASONS:
            mlflow.log_metric(f"rejected_{reason}", rejected.get(reason, 0))
        share = staged_rejected.rows / input_rows if input_rows else 0.0
        if share > q.max_reject_share:
            delta_tables.abort(staged_rejected)
            raise InputError(
                f"{staged_rejected.rows} of {input_rows} input events ({share:.1%}) were "
                f"rejected, more than quality.max_reject_share ({q.max_reject_share:.1%}); "
                f"by reason: {_counts(rejected)}. No table was changed: fix the input, or "
                "raise quality.max_reject_share to write them to rejected_events."
            )
        for why, n in sorted(rejected.items()):
            log.warning("%d input event(s) quarantined in rejected_events: %s", n, why)

        def levels(column: str, configured: tuple[str, ...] | None) -> tuple[str, ...]:
            if column not in source.present:
                return ()
            if configured is not None:
                return configured
            return feat.discover_levels(split.clean, column, max_levels=fc.max_levels)

        features_df = feat.compute_features(
            split.clean,
            as_of=fc.as_of,
            windows_days=fc.windows_days,
            trend_window_days=fc.trend_window_days,
            categories=levels("category", fc.categories),
            channels=levels("channel", fc.channels),
            devices=levels("device", fc.devices),
            with_discount="discount" in source.present,
        )
        staged = delta_tables.stage(
            spark, features_df, cfg.storage.table_path(FEATURES), snapshot, backend=backend
        )
        if staged.rows == 0:
            delta_tables.abort(staged)
            delta_tables.abort(staged_rejected)
            raise InputError(
                f"no usable events on or before {fc.as_of} in {events_path} "
                f"({input_rows} input rows; rejected by reason: {_counts(rejected)}); "
                "check features.as_of and the input. No table was changed."
            )
        version = _commit_all(spark, {REJECTED: staged_rejected, FEATURES: staged})[FEATURES]
        mlflow.log_metric("customers", staged.rows)
        mlflow.set_tag("output.customer_features.version", str(version))
    return FeaturesResult(
        as_of=fc.as_of,
        customers=staged.rows,
        version=version,
        events_path=events_path,
        events_version=events_version,
        input_rows=input_rows,
        rejected=rejected,
        feature_columns=tuple(feat.feature_columns(features_df)),
        run_id=run_id,
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
    ari_vs_truth: float | None = None
    paths: dict[str, str] = field(default_factory=dict)


def train_segments(spark: SparkSession, cfg: AppConfig) -> TrainResult:
    """Select k, fit on all customers, register the model, write membership and profiles."""
    backend = delta_tables.resolve_backend(spark, cfg.storage.delta_backend)
    t, fc, tc = cfg.training, cfg.features, cfg.tracking
    features_path = cfg.storage.table_path(FEATURES)
    if not delta_tables.table_exists(features_path):
        raise InputError(f"no customer_features table at {features_path}: run build_features first")
    features_version = delta_tables.table_version(features_path)
    features_df = delta_tables.read_table(
        spark, features_path, backend=backend, partitions={feat.AS_OF: fc.as_of}
    ).cache()
    scored_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    experiment_id = tracking.configure(tc)
    try:
        n_customers = features_df.count()
        if n_customers == 0:
            raise InputError(
                f"customer_features has no rows for as_of {fc.as_of} (features.as_of): "
                "run build_features for that date first"
            )
        estimator = clustering.SegmentationKMeans(
            features=t.features,
            algorithm=t.algorithm,
            seed=t.seed,
            max_iter=t.max_iter,
            transforms=dict(t.transforms),
            default_transform=t.default_transform,
        )
        scaling = estimator.fit_scaling(features_df)
        selection = clustering.select_k(
            estimator,
            features_df,
            k_values=range(t.k_min, t.k_max + 1),
            scaling=scaling,
            sample_rows=t.selection_sample_rows,
            min_segment_share=t.min_segment_share,
            tolerance=t.silhouette_tolerance,
            n_init=t.n_init,
        )
        log.info("model selection: %s", selection.reason)
        model = estimator.copy(k=selection.chosen_k, seed=selection.chosen.seed).fit(
            features_df, scaling=scaling
        )
        assigned = model.transform(features_df).cache()
        profile_features = [
            f.name
            for f in features_df.schema.fields
            if f.name not in (feat.CUSTOMER_ID, feat.AS_OF)
            and isinstance(f.dataType, T.NumericType)
        ]
        profiles = profiling.profile_segments(assigned, profile_features)
        names = profiling.name_segments(profiles)
        with mlflow.start_run(experiment_id=experiment_id) as run:
            run_id = run.info.run_id
            result = _track_and_write(
                spark,
                cfg,
                backend=backend,
                run_id=run_id,
                experiment_id=experiment_id,
                features_version=features_version,
                n_customers=n_customers,
                selection=selection,
                model=model,
                assigned=assigned,
                profiles=profiles,
                names=names,
                scored_at=scored_at,
            )
        assigned.unpersist()
        return result
    finally:
        features_df.unpersist()


def _track_and_write(
    spark: SparkSession,
    cfg: AppConfig,
    *,
    backend: delta_tables.Backend,
    run_id: str,
    experiment_id: str,
    features_version: int | None,
    n_customers: int,
    selection: clustering.KSelection,
    model: clustering.SegmentModel,
    assigned: DataFrame,
    profiles: profiling.Profiles,
    names: dict[int, str],
    scored_at: dt.datetime,
) -> TrainResult:
    t, fc, tc = cfg.training, cfg.features, cfg.tracking
    tracking.log_params(
        {
            "algorithm": t.algorithm,
            "k_min": t.k_min,
            "k_max": t.k_max,
            "seed": t.seed,
            "max_iter": t.max_iter,
            "n_init": t.n_init,
            "final_fit_seed": selection.chosen.seed,
            "features": ",".join(t.features),
            "transforms": ",".join(f"{f}:{model.scaling.transforms[i]}" for i, f in
                                   enumerate(model.scaling.features)),
            "selection_sample_rows": selection.sample_rows,
            "min_segment_share": t.min_segment_share,
            "silhouette_tolerance": t.silhouette_tolerance,
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
    _log_k_plot(selection)
    model_uri, version = tracking.log_spark_model(
        model.pipeline, registered_model=tc.registered_model, pyspark_version=pyspark.__version__
    )
    mlflow.set_tag("model_version", str(version))
    name_map = F.create_map(
        *[x for sid, nm in sorted(names.items()) for x in (F.lit(sid), F.lit(nm))]
    )
    membership = assigned.select(
        feat.CUSTOMER_ID,
        F.lit(fc.as_of).alias(feat.AS_OF),
        F.col(clustering.SEGMENT_ID).cast("int").alias("segment_id"),
        F.element_at(name_map, F.col(clustering.SEGMENT_ID)).alias("segment_name"),
        F.col(clustering.DISTANCE).cast("double").alias("distance"),
        F.lit(tc.registered_model).alias("model_name"),
        F.lit(version).cast("int").alias("model_version"),
        F.lit(run_id).alias("run_id"),
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
    )  # fmt: skip
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
    paths = {n: cfg.storage.table_path(n) for n in (MEMBERSHIP, PROFILES)}
    metadata = {"job": "train_segments", "run_id": run_id, "model_version": str(version)}
    staged = _stage_all(
        spark,
        {MEMBERSHIP: membership, PROFILES: profile_df},
        paths,
        delta_tables.WriteOptions(
            mode="overwrite",
            partition_by=(feat.AS_OF,),
            replace_partitions={feat.AS_OF: fc.as_of},
            idempotency_key=f"train-{run_id}",
            metadata=metadata,
        ),
        backend,
    )
    versions = _commit_all(spark, staged)
    for name, v in versions.items():
        mlflow.set_tag(f"output.{name}.version", str(v))
    ari = _ari_vs_truth(spark, cfg, membership, backend)
    if ari is not None:
        mlflow.log_metric("ari_vs_truth", ari)
    if tc.promote:
        tracking.promote(tc.registered_model, tc.alias, version)
        mlflow.set_tag("promoted_to", tc.alias)
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
        ari_vs_truth=ari,
        paths={**paths, "model_uri": model_uri},
    )


def _ari_vs_truth(
    spark: SparkSession, cfg: AppConfig, membership: DataFrame, backend: delta_tables.Backend
) -> float | None:
    """ARI against the generator's planted archetypes, when that table exists."""
    truth_path = cfg.storage.table_path(TRUTH)
    if cfg.input.events.path is not None or not delta_tables.table_exists(truth_path):
        return None
    truth = delta_tables.read_table(spark, truth_path, backend=backend)
    joined = membership.join(truth, on=feat.CUSTOMER_ID, how="inner")
    return adjusted_rand_index(joined, "true_segment", "segment_id")


def _log_k_plot(selection: clustering.KSelection) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [c.k for c in selection.candidates]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(ks, [c.silhouette for c in selection.candidates], marker="o")
    left.set(title="Silhouette by k", xlabel="k", ylabel="silhouette")
    right.plot(ks, [c.cost for c in selection.candidates], marker="o", color="tab:orange")
    right.set(title="Cost (within-cluster SSE) by k", xlabel="k", ylabel="cost")
    for ax in (left, right):
        ax.axvline(selection.chosen_k, color="grey", linestyle="--")
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k_selection.png"
        fig.savefig(path, dpi=100)
        mlflow.log_artifact(str(path), "plots")
    plt.close(fig)


def _commit_all(spark: SparkSession, staged: dict[str, delta_tables.StagedWrite]) -> dict[str, int]:
    """Commit staged tables back to back, after every table of the job was staged.

    Each commit is atomic; a job killed before this point changes no table. Delta has no
    multi-table transaction: a kill in the instant between two commits leaves the first
    committed (each table stays consistent, and rows carry their run id).
    """
    _fault_point("before-commit")
    return {name: delta_tables.commit(spark, s) for name, s in staged.items()}


def _fault_point(name: str) -> None:
    """Crash tests' hook: with SEGMENTATION_FAULT_POINT=name, signal and wait to be killed."""
    if os.environ.get("SEGMENTATION_FAULT_POINT") != name:
        return
    marker = os.environ.get("SEGMENTATION_FAULT_MARKER")
    if marker:
        Path(marker).write_text(name)
    time.sleep(600)


def _stage_all(
    spark: SparkSession,
    frames: dict[str, DataFrame],
    paths: dict[str, str],
    options: delta_tables.WriteOptions,
    backend: delta_tables.Backend,
) -> dict[str, delta_tables.StagedWrite]:
    """Stage every table before committing any: a failure leaves all tables as they were."""
    staged: dict[str, delta_tables.StagedWrite] = {}
    try:
        for name, df in frames.items():
            staged[name] = delta_tables.stage(spark, df, paths[name], options, backend=backend)
    except BaseException:
        for s in staged.values():
            delta_tables.abort(s)
        raise
    return staged


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
    lines += [
        "",
        f"Tables (Delta) under {cfg.storage.warehouse}/:",
        *[f"  {n:<20} version {v}" for n, v in result.table_versions.items()],
        f"MLflow: run {result.run_id} in experiment '{cfg.tracking.experiment}' "
        f"({cfg.tracking.tracking_uri})",
        f"  model {result.model_name} version {result.model_version}"
        + (f" is now @{cfg.tracking.alias}" if result.promoted else " (alias not moved)"),
    ]
    if cfg.tracking.tracking_uri.startswith("sqlite:"):
        lines.append(
            f"  open the UI: make mlflow-ui  (or: .venv/bin/mlflow ui --backend-store-uri "
            f"{cfg.tracking.tracking_uri}), then http://127.0.0.1:5000"
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if abs(value) < 1e6 else f"{value:,.0f}"
