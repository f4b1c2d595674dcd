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

import pyspark
from pyspark.sql import DataFrame, SparkSession

from segmentation.config import (
    AppConfig,
    NamingConfig,
    TrainingConfig,
)
from segmentation.errors import InputError
from segmentation.explain import model_report, pictures, profiling
from segmentation.features import behaviour as feat
from segmentation.features import scaling as scaling_mod
from segmentation.features.levels import LevelLabel, display_name, level_labels
from segmentation.identity import stitched
from segmentation.inputs import customers as customers_dim
from segmentation.modeling import champion as champions
from segmentation.modeling import matching, model_selection, model_validation, training
from segmentation.modeling.validation import Validation
from segmentation.runtime import timing, tracking
from segmentation.storage import drift, publishing, tables
from segmentation.value import segments as value_segments
from segmentation.workflows import records, train_records, value
from segmentation.workflows.train_records import Fitted

log = logging.getLogger(__name__)
JOB = "train_segments"


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
    segments: list[records.SegmentSummary]
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
    value: list[value_segments.SegmentValue] | None = None
    """Each segment's customer value (None: no customer_value for this date)."""


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


def without_near_constant(cfg: AppConfig, features: DataFrame) -> tuple[AppConfig, list[str]]:
    """``training.features`` without those one value dominates (``near_constant_share``), and a
    note for each: scaled, such a feature's few other customers would shape the segments.

    Raises:
        InputError: every clustering feature is near-constant.
    """
    tc = cfg.training
    found = scaling_mod.near_constant(features, tc.features, share=tc.near_constant_share)
    if not found:
        return cfg, []
    notes = [n.note(f"training.near_constant_share ({tc.near_constant_share})") for n in found]
    for note in notes:
        log.warning("%s", note)
    kept = tuple(f for f in tc.features if f not in {n.feature for n in found})
    if not kept:
        raise InputError(f"every clustering feature is near-constant: {'; '.join(notes)}")
    return cfg.model_copy(update={"training": tc.model_copy(update={"features": kept})}), notes


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
    cfg, dropped = without_near_constant(cfg, features)
    notes += dropped
    experiment_id = tracking.configure(cfg.tracking)
    try:
        champion = champions.load(cfg.tracking)
    except InputError as exc:
        log.warning("%s; the new model's segments get new ids", exc)
        champion = None
    values = value.values(spark, cfg)
    members = records.champion_members(spark, cfg, cfg.tracking.registered_model, champion)
    try:
        with timing.stage("train: select k, fit, profile"):
            fitted = fit(cfg.training, features, champion, cfg.naming, values=values,
                         at_risk_p_alive=cfg.value.at_risk_p_alive,
                         previous_members=members)  # fmt: skip
        fitted.features_version = version
        if cfg.validation.enabled:
            with timing.stage("train: segment validation"):
                fitted.validation = model_validation.validate(
                    spark, cfg, sample=fitted.sample, estimator=fitted.estimator,
                    model=fitted.model, features=features,
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
        if members is not None:
            members.unpersist()


def fit(
    tc: TrainingConfig,
    features: DataFrame,
    champion: champions.Champion | None,
    naming: NamingConfig | None = None,
    *,
    values: DataFrame | None = None,
    at_risk_p_alive: float | None = None,
    previous_members: DataFrame | None = None,
) -> Fitted:
    """Choose k on a sample, fit on all customers, number segments as the champion did.

    ``values``: the customers' value (``customer_value`` of the same date, when there is one):
    profiled with the features and shown per segment; names may then say "At risk".
    ``previous_members``: the champion's membership, for the matching's member overlap.
    """
    naming = naming or NamingConfig()
    customers = features.count()
    est = training.estimator(tc)
    scaling = est.fit_scaling(features)
    m = training.fit_matched(tc, est, features, scaling, champion, previous_members)
    profiled, columns = m.assigned, drift.numeric_features(features)
    if values is not None:
        profiled = m.assigned.join(values, on=tables.CUSTOMER_ID, how="left")
        columns = [*columns, *value_segments.VALUE_COLUMNS]
    profiles = profiling.profile_segments(
        profiled, columns, percentiles=(naming.high_value_percentile,)
    )
    rules = profiling.NamingRules(**naming.model_dump(), at_risk_p_alive=at_risk_p_alive)
    names = matching.stable_names(
        profiling.name_segments(profiles, rules), m.matched.kept, champion.names if champion else {}
    )
    by_value = None
    if values is not None:
        by_value = value_segments.segment_values(m.assigned, names, "training", values)
    return Fitted(
        features=features, features_version=None, customers=customers, selection=m.selection,
        model=m.model, final_seed=m.final_seed, matched=m.matched, champion=champion,
        assigned=m.assigned, profiles=profiles, names=names, estimator=est, sample=m.sample,
        value=by_value,
    )  # fmt: skip


def _record_and_write(
    spark: SparkSession, cfg: AppConfig, fitted: Fitted, *, run_id: str, experiment_id: str
) -> TrainResult:
    """Inside the training's MLflow run: record, explain, register, write, publish, report."""
    tc, fc = cfg.tracking, cfg.features
    tracking.set_tags({"job": JOB})
    train_records.record_training(cfg, fitted)
    customers, dimension = _customers(spark, cfg, fitted.features)
    labels = level_labels(fitted.features)
    tracking.log_json({c: dataclasses.asdict(lv) for c, lv in labels.items()},
                      "features/levels.json")  # fmt: skip
    explained = _explain(spark, cfg, fitted, customers)
    records.record_segments(cfg.features.as_of, fitted)
    train_records.record_matching(fitted)
    with timing.stage("train: log and register the model"):
        model_uri, version = tracking.log_spark_model(
            fitted.model.pipeline, registered_model=tc.registered_model,
            pyspark_version=pyspark.__version__,
        )  # fmt: skip
    tracking.set_tags({"model_version": version})
    lineage = tables.Lineage(fc.as_of, tc.registered_model, version, run_id)
    writes = _version_writes(spark, cfg, fitted, explained, lineage)
    scored = records.scored_now(fitted.assigned, fitted.features, fitted.names,
                                fitted.model.scaling.features, lineage)  # fmt: skip
    with timing.stage("train: write tables (Delta)"):
        versions, publication = records.publish_or_write(spark, cfg, tc, scored, writes, job=JOB)
    ari = records.ari_vs_truth(fitted.assigned, _truth(spark, cfg))
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
        selection=fitted.selection, table_versions=versions, customers=fitted.customers,
        segments=records.segment_summaries(fitted.profiles, fitted.names,
                                           fitted.profiles.features),
        matching=fitted.matched,
        previous_version=fitted.champion.version if fitted.champion else None,
        publication=publication, ari_vs_truth=ari, paths=paths, explanation=explained,
        validation=fitted.validation, dimension=dimension, value=fitted.value,
    )  # fmt: skip


def _explain(
    spark: SparkSession, cfg: AppConfig, fitted: Fitted, customers: DataFrame | None
) -> model_report.Explained:
    """Rules, composition and pictures of the model (and of its validation), logged."""
    with timing.stage("train: explain (rules, composition, pictures)"):
        explained = model_report.explain_model(
            spark, cfg.explain, customers=customers, model=fitted.model,
            assigned=fitted.assigned, profiles=fitted.profiles, names=fitted.names,
            selection=fitted.selection, seed=cfg.training.seed,
        )  # fmt: skip
    if fitted.validation is not None:
        explained.pictures["validation"] = pictures.validation_png(fitted.validation, fitted.names)
        model_validation.log_validation(fitted.validation)
    model_report.log_explanation(explained, cfg.explain)
    return explained


def _report(
    cfg: AppConfig,
    fitted: Fitted,
    explained: model_report.Explained,
    run_id: str,
    version: int,
    labels: dict[str, LevelLabel],
) -> str:
    """Write the model's HTML report; returns its path."""
    tc = cfg.tracking
    return model_report.write_report(
        cfg.storage, cfg.explain, explained,
        model_report.ReportContext(tc.registered_model, version, run_id, cfg.features.as_of,
                                   fitted.customers),
        selection=fitted.selection, features=fitted.model.scaling.features,
        profiles=fitted.profiles, names=fitted.names, validation=fitted.validation,
        labels=labels, value=fitted.value,
    )  # fmt: skip


def _customers(
    spark: SparkSession, cfg: AppConfig, features: DataFrame
) -> tuple[DataFrame | None, customers_dim.DimensionMatch | None]:
    """The customers dimension (for composition) and the share of customers it holds."""
    customers = stitched.customers(spark, cfg)
    if customers is None:
        return None, None
    match = customers_dim.match_dimension(
        features, customers, min_share=cfg.input.customers.min_match_share
    )
    tracking.log_metrics({"customers_dimension_match_share": match.share})
    return customers, match


def _version_writes(
    spark: SparkSession,
    cfg: AppConfig,
    fitted: Fitted,
    explained: model_report.Explained,
    lineage: tables.Lineage,
) -> list[tables.Write]:
    """The new version's profiles, validation (and composition), logged and ready to write."""
    labels = level_labels(fitted.features)
    profiles = records.profile_rows(
        spark, fitted.profiles, fitted.names, lineage,
        label=lambda f: display_name(f, labels),
    )  # fmt: skip
    frames = [(tables.PROFILES, profiles)]
    if fitted.validation is not None:
        frames.append((tables.VALIDATION, model_validation.rows(spark, fitted.validation, lineage)))
    return records.version_writes(spark, cfg, frames, explained, fitted.names, lineage, job=JOB)


def _truth(spark: SparkSession, cfg: AppConfig) -> DataFrame | None:
    """The generator's planted archetypes, when the events are the generator's."""
    if cfg.input.events.path is not None or not tables.exists(spark, cfg.storage, tables.TRUTH):
        return None
    return stitched.planted(spark, cfg, tables.read(spark, cfg.storage, tables.TRUTH))
