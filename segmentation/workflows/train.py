"""Training: choose k, fit on all customers, keep the champion's segment ids, register, explain.

Segment profiles (and composition) of the new version are always written. With
``tracking.promote`` the version is also published (membership, history, migration, drift for
``features.as_of``) and the alias moved to it, last.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass, field

import numpy as np
import pyspark
from pyspark.sql import DataFrame, SparkSession

from segmentation import (
    champion as champions,
)
from segmentation import (
    clustering,
    drift,
    matching,
    model_report,
    model_selection,
    model_validation,
    profiling,
    publishing,
    report,
    tables,
    timing,
    tracking,
)
from segmentation import customers as customers_dim
from segmentation import features as feat
from segmentation.config import (
    AppConfig,
    ClusteringConfig,
    NamingConfig,
    TrainingConfig,
)
from segmentation.errors import InputError
from segmentation.evaluation import adjusted_rand_index
from segmentation.validation import Validation
from segmentation.workflows import train_records

log = logging.getLogger(__name__)
JOB = "train_segments"


@dataclass
class SegmentSummary:
    segment_id: int
    name: str
    size: int
    share: float
    means: dict[str, float | None]


@dataclass
class Fitted:
    """A fitted model on one snapshot, before anything is recorded or written."""

    features: DataFrame
    features_version: int | None
    customers: int
    selection: model_selection.KSelection
    model: clustering.SegmentModel
    final_seed: int | None
    """The kept restart's seed; None: the selection sample's centres refined."""
    matched: matching.Matching
    champion: champions.Champion | None
    assigned: DataFrame
    profiles: profiling.Profiles
    names: dict[int, str]
    estimator: clustering.SegmentationKMeans
    sample: np.ndarray
    """The k-selection sample (scaled features): the validation's ground."""
    validation: Validation | None = None


@dataclass
class TrainResult:
    """What a training did (printed by ``summaries.training``)."""

    as_of: dt.date
    run_id: str
    experiment_id: str
    model_name: str
    model_version: int
    promoted: bool
    selection: model_selection.KSelection
    segments: list[SegmentSummary]
    table_versions: dict[str, int]
    customers: int
    matching: matching.Matching
    previous_version: int | None
    publication: publishing.Publication | None = None
    ari_vs_truth: float | None = None
    paths: dict[str, str] = field(default_factory=dict)
    explanation: model_report.Explained | None = None
    validation: Validation | None = None
    notes: list[str] = field(default_factory=list)
    """Adjustments the run made and says so (e.g. features left out)."""
    dimension: customers_dim.DimensionMatch | None = None


def estimator(tc: TrainingConfig) -> clustering.SegmentationKMeans:
    """The unfitted estimator ``training.*`` describes (algorithm, seed, transforms)."""
    return clustering.SegmentationKMeans(
        features=tc.features, algorithm=tc.algorithm, seed=tc.seed, max_iter=tc.max_iter,
        transforms=dict(tc.transforms), default_transform=tc.default_transform,
    )  # fmt: skip


def selection_sample(
    tc: ClusteringConfig, features: DataFrame, scaling: clustering.Scaling
) -> np.ndarray:
    """The seeded k-selection sample (``training.selection_sample_rows``), scaled, collected."""
    return model_selection.sample_matrix(
        scaling.stage().transform(features), scaling.scaled_columns,
        sample_rows=tc.selection_sample_rows, seed=tc.seed,
    )  # fmt: skip


def select_k(tc: ClusteringConfig, sample: np.ndarray) -> model_selection.KSelection:
    """Model selection on the sample with the ``training.*`` k range, restarts and rules."""
    return model_selection.select_k(
        sample, k_values=tc.k_values, algorithm=tc.algorithm, seed=tc.seed, n_init=tc.n_init,
        max_iter=tc.max_iter, rule=selection_rule(tc),
    )  # fmt: skip


def selection_rule(tc: ClusteringConfig) -> model_selection.SelectionRule:
    """The k rule ``training.*`` describes."""
    return model_selection.SelectionRule(
        rule=tc.k_rule, min_segment_share=tc.min_segment_share,
        tolerance=tc.silhouette_tolerance, stable_jaccard=tc.stable_jaccard,
        stability_samples=tc.selection_bootstrap_samples, stability_rows=tc.stability_rows,
    )  # fmt: skip


def final_fit(
    tc: ClusteringConfig,
    est: clustering.SegmentationKMeans,
    features: DataFrame,
    scaling: clustering.Scaling,
    selection: model_selection.KSelection,
) -> tuple[clustering.SegmentModel, int | None]:
    """The chosen k fitted on all customers with Spark: k-means from the selection sample's
    centres of the chosen k (the solution whose silhouette and stability chose it) and
    ``training.n_init`` seeded restarts (seeds ``seed, seed + 1, ...``); the lowest cost is
    kept (ties: the sample's centres, then the earliest seed). The seed is None when the
    sample's centres won.

    When the selection sample is every customer, its centres are already the best of
    ``n_init`` restarts on these very rows, so the Spark restarts are skipped (the sample's
    centres refined on all rows, typically one iteration, is the model)."""
    seeds = list(range(tc.seed, tc.seed + max(1, tc.n_init)))
    if (
        selection.chosen.centers
        and tc.algorithm == "kmeans"
        and (selection.sample_rows >= features.count())
    ):
        seeds = []
    return clustering.fit_best(
        est, features, k=selection.chosen_k, scaling=scaling, seeds=seeds,
        init_centers=selection.chosen.centers or None,
    )  # fmt: skip


@dataclass(frozen=True)
class Matched:
    """:func:`fit_matched`'s result: the chosen k, the model numbered like the champion."""

    sample: np.ndarray
    selection: model_selection.KSelection
    model: clustering.SegmentModel
    """With the segment ids of ``matched`` (``SegmentModel.with_segment_ids``)."""
    final_seed: int | None
    """The kept restart's seed; None: the selection sample's centres refined."""
    matched: matching.Matching
    assigned: DataFrame
    """``model.transform(data)``, cached (the caller unpersists it)."""


def fit_matched(
    cc: ClusteringConfig,
    est: clustering.SegmentationKMeans,
    data: DataFrame,
    scaling: clustering.Scaling,
    champion: champions.Champion | None,
) -> Matched:
    """k chosen on the selection sample, the final fit on all rows of ``data``, the segments
    matched to the champion's (stable ids, ``matching.match_segments``), every row assigned.

    The one sequence behavioural (``fit``) and attitudinal training share.
    """
    sample = selection_sample(cc, data, scaling)
    selection = select_k(cc, sample)
    log.info("model selection: %s", selection.reason)
    model, final_seed = final_fit(cc, est, data, scaling, selection)
    centers, sizes = model.by_cluster()
    matched = matching.match_segments(
        scaling=model.scaling, new_centers_scaled=centers, new_sizes=sizes,
        previous=champion.segments if champion else (),
        previous_max_id=champion.max_segment_id if champion else 0,
        max_distance=cc.match_max_distance,
    )  # fmt: skip
    model = model.with_segment_ids(matched.cluster_to_segment)
    assigned = model.transform(data).cache()
    return Matched(sample, selection, model, final_seed, matched, assigned)


def usable_features(cfg: AppConfig) -> tuple[tuple[str, ...], list[str]]:
    """``training.features`` without those needing an unmapped input column, and a note for
    each one left out (``discount_share`` when ``input.events.columns.discount`` is null).

    Raises:
        InputError: every clustering feature needs an unmapped column.
    """
    mapped = cfg.input.events.columns.mapped()
    kept, notes = [], []
    for f in cfg.training.features:
        needs = feat.required_input(f)
        if needs is None or needs in mapped:
            kept.append(f)
        else:
            notes.append(
                f"clustering feature {f} left out: it needs input.events.columns.{needs}, "
                "which is null (map the column, or remove the feature from training.features)"
            )
    if not kept:
        raise InputError(f"every clustering feature is left out: {'; '.join(notes)}")
    return tuple(kept), notes


def run(spark: SparkSession, cfg: AppConfig) -> TrainResult:
    """Select k, fit, match ids, then record, register, write and (optionally) publish.

    Clustering features that need an unmapped input column are left out with a note
    (:func:`usable_features`); a registry error while looking up the champion stops the run
    before anything is written.

    Raises:
        InputError: no feature snapshot for ``features.as_of``, too few customers, or an
            impossible training configuration for this data.
        SegmentationError: the MLflow registry failed (naming the tracking URI).
    """
    used, notes = usable_features(cfg)
    for note in notes:
        log.warning("%s", note)
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"features": used})})
    if cfg.tracking.promote:
        publishing.check_layout(spark, cfg.storage)
    version = tables.version(spark, cfg.storage, tables.FEATURES)
    features = tables.read_snapshot(
        spark, cfg.storage, tables.FEATURES, cfg.features.as_of, key="features.as_of",
        version=version,
    ).cache()  # fmt: skip
    experiment_id = tracking.configure(cfg.tracking)
    try:
        champion = champions.load(cfg.tracking)
    except InputError as exc:
        log.warning("%s; the new model's segments get new ids", exc)
        champion = None
    try:
        with timing.stage("train: select k, fit, profile"):
            fitted = fit(cfg.training, features, champion, cfg.naming)
        fitted.features_version = version
        if cfg.validation.enabled:
            with timing.stage("train: segment validation"):
                fitted.validation = model_validation.validate(
                    spark, cfg, sample=fitted.sample, estimator=fitted.estimator,
                    model=fitted.model, names=fitted.names, features=features,
                )  # fmt: skip
        with tracking.run(experiment_id) as run_id:
            if notes:
                tracking.set_tags({"features_left_out": "; ".join(notes)})
            result = _record_and_write(
                spark, cfg, fitted, run_id=run_id, experiment_id=experiment_id
            )
            result.notes = notes
        fitted.assigned.unpersist()
        return result
    finally:
        features.unpersist()


def fit(
    tc: TrainingConfig,
    features: DataFrame,
    champion: champions.Champion | None,
    naming: NamingConfig | None = None,
) -> Fitted:
    """Choose k on a sample, fit on all customers, number segments as the champion did."""
    naming = naming or NamingConfig()
    customers = features.count()
    est = estimator(tc)
    scaling = est.fit_scaling(features)
    m = fit_matched(tc, est, features, scaling, champion)
    profiles = profiling.profile_segments(
        m.assigned, drift.numeric_features(features), percentiles=(naming.high_value_percentile,)
    )
    rules = profiling.NamingRules(**naming.model_dump())
    names = matching.stable_names(
        profiling.name_segments(profiles, rules), m.matched.kept, champion.names if champion else {}
    )
    return Fitted(
        features=features, features_version=None, customers=customers, selection=m.selection,
        model=m.model, final_seed=m.final_seed, matched=m.matched, champion=champion,
        assigned=m.assigned, profiles=profiles, names=names, estimator=est, sample=m.sample,
    )  # fmt: skip


def _record_and_write(
    spark: SparkSession, cfg: AppConfig, fitted: Fitted, *, run_id: str, experiment_id: str
) -> TrainResult:
    """Inside the training's MLflow run: record, explain, register, write, publish, report."""
    tc, fc = cfg.tracking, cfg.features
    tracking.set_tags({"job": JOB})
    train_records.record_training(cfg, fitted)
    customers, dimension = _customers(spark, cfg, fitted.features)
    labels = feat.level_labels(fitted.features)
    tracking.log_json({c: dataclasses.asdict(lv) for c, lv in labels.items()},
                      "features/levels.json")  # fmt: skip
    with timing.stage("train: explain (rules, composition, pictures)"):
        explained = model_report.explain_model(
            spark, cfg.explain, customers=customers, model=fitted.model,
            assigned=fitted.assigned, profiles=fitted.profiles, names=fitted.names,
            selection=fitted.selection, seed=cfg.training.seed,
        )  # fmt: skip
    if fitted.validation is not None:
        explained.pictures["validation"] = report.validation_png(fitted.validation, fitted.names)
        model_validation.log_validation(fitted.validation)
    model_report.log_explanation(explained, cfg.explain)
    train_records.record_segments(cfg, fitted)
    with timing.stage("train: log and register the model"):
        model_uri, version = tracking.log_spark_model(
            fitted.model.pipeline, registered_model=tc.registered_model,
            pyspark_version=pyspark.__version__,
        )  # fmt: skip
    tracking.set_tags({"model_version": version})
    lineage = tables.Lineage(fc.as_of, tc.registered_model, version, run_id)
    writes = _version_writes(spark, cfg, fitted, explained, lineage)
    publication = None
    with timing.stage("train: write tables (Delta)"):
        if tc.promote:
            publication = publishing.publish(
                spark, cfg.storage, cfg.drift, _scored(fitted, lineage), job=JOB, first=writes
            )
            versions = publication.table_versions
            reason = f"train_segments run {run_id} with tracking.promote=true"
            tracking.promote(tc.registered_model, tc.alias, version, reason=reason)
            tracking.set_tags({"promoted_to": tc.alias})
        else:
            versions = tables.write_in_order(writes)
    tracking.set_tags({f"output.{name}.version": v for name, v in versions.items()})
    ari = _ari_vs_truth(spark, cfg, fitted.assigned)
    if ari is not None:
        tracking.log_metrics({"ari_vs_truth": ari})
    paths = {
        tables.PROFILES.name: tables.path(cfg.storage, tables.PROFILES),
        "model_uri": model_uri,
    }
    if cfg.explain.report:
        with timing.stage("train: HTML report"):
            paths["report"] = _report(cfg, fitted, explained, run_id, version, labels)
    return TrainResult(
        as_of=fc.as_of, run_id=run_id, experiment_id=experiment_id,
        model_name=tc.registered_model, model_version=version, promoted=tc.promote,
        selection=fitted.selection, segments=_summaries(fitted), table_versions=versions,
        customers=fitted.customers, matching=fitted.matched,
        previous_version=fitted.champion.version if fitted.champion else None,
        publication=publication, ari_vs_truth=ari, paths=paths, explanation=explained,
        validation=fitted.validation, dimension=dimension,
    )  # fmt: skip


def _report(
    cfg: AppConfig,
    fitted: Fitted,
    explained: model_report.Explained,
    run_id: str,
    version: int,
    labels: dict[str, feat.LevelLabel],
) -> str:
    """Write the model's HTML report; returns its path."""
    tc = cfg.tracking
    return model_report.write_report(
        cfg.storage, cfg.explain, explained,
        model_report.ReportContext(tc.registered_model, version, run_id, cfg.features.as_of,
                                   fitted.customers),
        selection=fitted.selection, features=fitted.model.scaling.features,
        profiles=fitted.profiles, names=fitted.names, validation=fitted.validation,
        labels=labels,
    )  # fmt: skip


def _customers(
    spark: SparkSession, cfg: AppConfig, features: DataFrame
) -> tuple[DataFrame | None, customers_dim.DimensionMatch | None]:
    """The customers dimension (for composition) and the share of customers it holds."""
    customers = customers_dim.read_customers(spark, cfg.input.customers, cfg.customers_path())
    if customers is None:
        return None, None
    match = customers_dim.match_dimension(
        features, customers, min_share=cfg.input.customers.min_match_share
    )
    tracking.log_metrics({"customers_dimension_match_share": match.share})
    return customers, match


def _scored(fitted: Fitted, lineage: tables.Lineage) -> publishing.Scored:
    return publishing.Scored(
        assigned=fitted.assigned, features=fitted.features, names=fitted.names,
        model_features=fitted.model.scaling.features, lineage=lineage,
        scored_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
    )  # fmt: skip


def _version_writes(
    spark: SparkSession,
    cfg: AppConfig,
    fitted: Fitted,
    explained: model_report.Explained,
    lineage: tables.Lineage,
) -> list[tables.Write]:
    """The new version's profiles (and composition), logged and ready to write."""
    profile_rows = spark.createDataFrame(
        profiling.profile_rows(fitted.profiles, fitted.names), tables.PROFILE_ROWS
    )
    profiles = tables.with_lineage(profile_rows, lineage, tables.PROFILES)
    labels = feat.level_labels(fitted.features)
    tracking.log_json(
        [
            dict(zip(profiles.columns, r, strict=True))
            | {"feature_label": feat.display_name(r["feature"], labels)}
            for r in profiles.collect()
        ],
        "profiles/segment_profiles.json",
    )
    tracking.log_json({str(k): v for k, v in fitted.names.items()}, "profiles/segment_names.json")
    snapshot = {tables.MODEL_NAME: lineage.model_name, tables.MODEL_VERSION: lineage.model_version}
    frames = [(tables.PROFILES, profiles)]
    if fitted.validation is not None:
        frames.append((tables.VALIDATION, model_validation.rows(spark, fitted.validation, lineage)))
    if explained.composition is not None:
        rows = model_report.composition_rows(spark, explained.composition, fitted.names)
        frames.append((tables.COMPOSITION, tables.with_lineage(rows, lineage, tables.COMPOSITION)))
    return [
        tables.snapshot_write(spark, cfg.storage, table, df, job=JOB, run_id=lineage.run_id,
                              snapshot=snapshot)
        for table, df in frames
    ]  # fmt: skip


def _ari_vs_truth(spark: SparkSession, cfg: AppConfig, assigned: DataFrame) -> float | None:
    """ARI against the generator's planted archetypes, when that table exists."""
    if cfg.input.events.path is not None or not tables.exists(spark, cfg.storage, tables.TRUTH):
        return None
    truth = tables.read(spark, cfg.storage, tables.TRUTH)
    joined = assigned.select(tables.CUSTOMER_ID, clustering.SEGMENT_ID).join(
        truth, on=tables.CUSTOMER_ID, how="inner"
    )
    return adjusted_rand_index(joined, "true_segment", clustering.SEGMENT_ID)


def _summaries(fitted: Fitted) -> list[SegmentSummary]:
    profiles = fitted.profiles
    return [
        SegmentSummary(
            segment_id=seg.segment_id,
            name=fitted.names[seg.segment_id],
            size=seg.size,
            share=seg.share,
            means={f: seg.stats[f].mean for f in profiles.features},
        )
        for seg in profiles.segments
    ]
