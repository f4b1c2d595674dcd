"""Attitudinal segments: factor analysis of survey items, then clustering on the factor scores.

The second basis of the product (``attitudes.*``), beside the behavioural one (``train``):

1. read the survey table (``attitudes.survey``), check it against its mapping and exclude
   sparse respondents (``survey.check``: counted, written to ``survey_exclusions``);
2. correlations of the imputed items with Spark, the number of factors by parallel analysis
   (Kaiser's eigenvalue > 1 count reported beside it), extraction and rotation on the driver
   (``factors``);
3. the clustering space in SQL: factor scores, encoded attributes, optional behavioural
   features, with block weights (``attitude_space``);
4. k chosen, fitted, ids kept from the champion, named, profiled and explained exactly as the
   behavioural training does (``train``'s helpers, ``matching``, ``profiling``,
   ``model_report``);
5. one MLflow run; the whole transformation (cleaning, imputation, encoding, factor scores,
   scaling, clustering) registered as one Spark ``PipelineModel`` under
   ``attitudes.model_name``; ``segment_profiles``, ``factor_loadings``, ``survey_exclusions``
   (and composition) written; with ``tracking.promote`` the membership published under
   ``attitudes.model_name`` and the alias moved, last.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import numpy as np
import pyspark
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig, AttitudesConfig, TrackingConfig
from segmentation.errors import InputError
from segmentation.explain import model_report, profiling
from segmentation.features import attitude_space, factors
from segmentation.features import scaling as scaling_mod
from segmentation.features.scaling import Scaling
from segmentation.identity import stitched
from segmentation.inputs import survey
from segmentation.modeling import champion as champions
from segmentation.modeling import clustering, matching, model_selection, training
from segmentation.runtime import tracking
from segmentation.sample import survey_generator
from segmentation.storage import publishing, tables
from segmentation.workflows import attitude_records, records
from segmentation.workflows.attitude_records import Analysis, Fitted

log = logging.getLogger(__name__)
JOB = "train_attitudes"


@dataclass
class AttitudesResult:
    as_of: dt.date
    run_id: str
    model_name: str
    model_version: int
    promoted: bool
    respondents: int
    retained: int
    exclusions: dict[str, int]
    analysis: Analysis
    selection: model_selection.KSelection
    segments: list[records.SegmentSummary]
    table_versions: dict[str, int]
    ari_vs_truth: float | None = None
    congruence: list[float] | None = None
    paths: dict[str, str] = field(default_factory=dict)
    publication: publishing.Publication | None = None
    declined: dict[str, int] = field(default_factory=dict)
    """No-answer labels (``Don't know``...) read as missing answers, by item."""
    invalid_answers: dict[str, int] = field(default_factory=dict)
    """Answers outside the scale or other text read as missing (``invalid_answers: missing``)."""


def tracking_config(cfg: AppConfig) -> TrackingConfig:
    """``tracking.*`` with the attitudinal model's registered name."""
    return cfg.tracking.model_copy(update={"registered_model": cfg.attitudes.model_name})


def run(spark: SparkSession, cfg: AppConfig) -> AttitudesResult:
    """Check the survey, analyse the items, cluster, register, write (and publish).

    Raises:
        InputError: the survey is missing, badly mapped or unusable (the message names the
            column and the config key).
    """
    ac, tc = cfg.attitudes, tracking_config(cfg)
    if tc.promote:
        publishing.check_layout(spark, cfg.storage)
    raw = stitched.survey(spark, cfg)
    experiment_id = tracking.configure(tc)
    try:
        champion = champions.load(tc)
    except InputError as exc:
        log.warning("%s; the new model's segments get new ids", exc)
        champion = None
    behaviour = _behaviour(spark, cfg) if ac.blocks.behaviour > 0 else None
    members = records.champion_members(spark, cfg, ac.model_name, champion)
    fitted = fit(
        ac, raw, champion, behaviour=behaviour, behaviour_features=_behaviour_features(cfg),
        previous_members=members,
    )  # fmt: skip
    try:
        with tracking.run(experiment_id) as run_id:
            return _record_and_write(spark, cfg, fitted, run_id=run_id)
    finally:
        fitted.assigned.unpersist()
        fitted.spaced.unpersist()


def _with_behaviour(checked: survey.Survey, behaviour: DataFrame) -> tuple[DataFrame, int]:
    """The respondents with their behavioural features; those without any are excluded,
    counted and added to ``checked.excluded`` (``survey_exclusions``) with their reason."""
    joined = checked.respondents.join(behaviour, on=tables.CUSTOMER_ID, how="inner")
    missing = checked.retained - joined.count()
    if missing:
        checked.exclusions[survey.NO_BEHAVIOUR] = missing
        log.info("survey: %d respondent(s) excluded: %s", missing, survey.NO_BEHAVIOUR)
        items = checked.items
        absent = checked.respondents.join(
            behaviour.select(tables.CUSTOMER_ID), on=tables.CUSTOMER_ID, how="left_anti"
        ).select(
            tables.CUSTOMER_ID, F.lit(survey.NO_BEHAVIOUR).alias(tables.REASON),
            sum((F.col(c.name).isNull().cast("int") for c in items), F.lit(0))
            .alias("missing_items"),
            F.lit(len(items)).alias("items"),
        )  # fmt: skip
        checked.excluded = checked.excluded.unionByName(absent)
    return joined, missing


def analyse(respondents: DataFrame, checked: survey.Survey, ac: AttitudesConfig) -> Analysis:
    """Correlations with Spark, redundant items left out, the conditioning checked, the number
    of factors, extraction and rotation, Heywood cases reported, names."""
    fc = ac.factors
    items = tuple(c.name for c in checked.items)
    imputed = respondents.select(
        *[F.coalesce(F.col(f"`{c}`"), F.lit(checked.impute[c])).alias(c) for c in items]
    )
    m = factors.moments(imputed, items, checked.impute)
    redundant = factors.redundant_items(m.corr, items, limit=fc.max_item_correlation)
    notes = [r.note(fc.max_item_correlation) for r in redundant]
    if redundant:
        gone = {r.item for r in redundant}
        keep = [i for i, item in enumerate(items) if item not in gone]
        items, m = tuple(items[i] for i in keep), factors.subset(m, keep)
    factors.check_conditioning(m.corr, items)
    parallel = factors.parallel_analysis(
        m.corr, m.n, iterations=fc.parallel_iterations, percentile=fc.parallel_percentile,
        seed=fc.seed,
    )  # fmt: skip
    n, rule = (
        (fc.n_factors, "attitudes.factors.n_factors") if fc.n_factors is not None
        else (max(1, parallel.n_factors), f"parallel analysis ({fc.parallel_percentile:g}th pct)")
    )  # fmt: skip
    log.info(
        "factors: %d by %s (eigenvalue > 1 would keep %d; eigenvalues %s)", n, rule,
        parallel.kaiser, [round(v, 3) for v in parallel.observed],
    )  # fmt: skip
    solution = factors.extract(m.corr, n, method=fc.method, rotation=fc.rotation)
    heywood = factors.heywood_items(solution, items)
    if heywood:
        notes.append(
            f"Heywood case: communality >= 1 for {', '.join(heywood)} (an impossible solution "
            "for these items): read their loadings with care, or try fewer factors"
        )
    for note in notes:
        log.warning("%s", note)
    names = factors.name_factors(solution.loadings, items, top=fc.name_items)
    return Analysis(items, m, parallel, n, rule, solution, names, notes)


def fit(
    ac: AttitudesConfig,
    raw: DataFrame,
    champion: champions.Champion | None,
    *,
    behaviour: DataFrame | None = None,
    behaviour_features: tuple[str, ...] = (),
    previous_members: DataFrame | None = None,
) -> Fitted:
    """Check, analyse, build the space, choose k, fit, keep ids, profile and name."""
    checked = survey.check(raw, ac)
    respondents, missing = checked.respondents, 0
    if behaviour is not None:
        respondents, missing = _with_behaviour(checked, behaviour)
    respondents = respondents.cache()
    analysis = analyse(respondents, checked, ac)
    # Items left out as redundant are neither cleaned into the space nor scored.
    checked.items = [c for c in checked.items if c.name in analysis.items]
    at = ac.attributes
    levels = {
        c.name: attitude_space.category_levels(respondents, c.name, at.max_levels)
        for c in checked.attributes
        if c.kind == "categorical"
    }
    space = attitude_space.build_space(
        ac, checked, solution=analysis.solution, means=analysis.moments.means,
        stds=analysis.moments.stds, factor_names=analysis.names, levels=levels,
        behaviour=behaviour_features if behaviour is not None else (),
    )  # fmt: skip
    spaced = space.transform(respondents).cache()
    cc = ac.clustering
    est, scaling = _estimator(ac, space, spaced)
    m = training.fit_matched(cc, est, spaced, scaling, champion, previous_members)
    respondents.unpersist()
    profiles = profiling.profile_segments(m.assigned, profile_features(checked, space))
    generated = attitude_records.name_segments(profiles, space.factors, analysis.names)
    names = matching.stable_names(generated, m.matched.kept, champion.names if champion else {})
    return Fitted(
        checked=checked, analysis=analysis, space=space, spaced=spaced, selection=m.selection,
        model=m.model, final_seed=m.final_seed, matched=m.matched, champion=champion,
        assigned=m.assigned, profiles=profiles, names=names, behaviour_missing=missing,
    )  # fmt: skip


def _estimator(
    ac: AttitudesConfig, space: attitude_space.Space, spaced: DataFrame
) -> tuple[clustering.SegmentationKMeans, Scaling]:
    """The clustering estimator on the space's columns (near-constant ones left out, with a
    warning) and its block-weighted scaling."""
    cc, at = ac.clustering, ac.attributes
    transforms = {**{f: "log1p" for f in space.behaviour}, **dict(at.transforms)}
    est = clustering.SegmentationKMeans(
        features=space.columns, algorithm=cc.algorithm, seed=cc.seed, max_iter=cc.max_iter,
        transforms=transforms, default_transform="none", scaling=cc.scaling, clip=cc.clip,
    )  # fmt: skip
    plain = est.fit_scaling(spaced)
    variances = dict(zip(plain.features, (s * s for s in plain.sds), strict=True))
    dropped = scaling_mod.near_constant(spaced, space.columns, share=cc.near_constant_share)
    key = f"attitudes.clustering.near_constant_share ({cc.near_constant_share})"
    for n in dropped:
        log.warning("%s", n.note(key))
    kept = [c for c in space.columns if c not in {n.feature for n in dropped}]
    if len(kept) < len(space.columns):
        est = est.copy(k=est.k, features=kept)
        plain = plain.subset(kept)
    return est, attitude_space.weighted_scaling(ac, space, plain, variances)


def profile_features(checked: survey.Survey, space: attitude_space.Space) -> list[str]:
    """Profiled in original units: item answers on their scale, factor scores, numeric and
    boolean attributes (a boolean's mean is its share of true), category shares, behaviour."""
    plain = [c.name for c in checked.attributes if c.kind != "categorical"]
    dummies = [d for ds in space.dummies.values() for d in ds]
    return [*(c.name for c in checked.items), *space.factors, *plain, *dummies, *space.behaviour]


def _behaviour_features(cfg: AppConfig) -> tuple[str, ...]:
    return cfg.attitudes.blocks.behaviour_features or cfg.training.features


def _behaviour(spark: SparkSession, cfg: AppConfig) -> DataFrame:
    """The behavioural features of ``features.as_of`` (``attitudes.blocks.behaviour > 0``)."""
    wanted = _behaviour_features(cfg)
    snapshot = tables.read_snapshot(
        spark, cfg.storage, tables.FEATURES, cfg.features.as_of, key="features.as_of"
    )
    absent = [f for f in wanted if f not in snapshot.columns]
    if absent:
        raise InputError(
            f"attitudes.blocks.behaviour_features {absent} are not columns of customer_features"
        )
    return snapshot.select(tables.CUSTOMER_ID, *wanted)


def _record_and_write(
    spark: SparkSession, cfg: AppConfig, fitted: Fitted, *, run_id: str
) -> AttitudesResult:
    """Inside the MLflow run: record, explain, register, write, publish, report."""
    ac, tc = cfg.attitudes, tracking_config(cfg)
    tracking.set_tags({"job": JOB})
    truth = _planted(spark, cfg)
    congruence = (
        factors.matched_congruence(np.array(survey_generator.planted_loadings()),
                                   fitted.analysis.solution.loadings)
        if truth is not None and fitted.analysis.items == survey_generator.ITEM_NAMES
        else None
    )  # fmt: skip
    attitude_records.record_training(cfg, fitted, congruence)
    explained = _explain(spark, cfg, fitted)
    records.record_segments(cfg.features.as_of, fitted)
    model_uri, version = tracking.log_spark_model(
        fitted.pipeline, registered_model=ac.model_name, pyspark_version=pyspark.__version__
    )
    tracking.set_tags({"model_version": version})
    lineage = tables.Lineage(cfg.features.as_of, ac.model_name, version, run_id)
    writes = attitude_records.version_writes(spark, cfg, fitted, explained, lineage, job=JOB)
    scored = records.scored_now(fitted.assigned, fitted.spaced, fitted.names,
                                fitted.space.columns, lineage)  # fmt: skip
    versions, publication = records.publish_or_write(spark, cfg, tc, scored, writes, job=JOB)
    ari = records.ari_vs_truth(fitted.assigned, truth)
    paths = {"model_uri": model_uri}
    if cfg.explain.report:
        paths["report"] = model_report.write_report(
            cfg.storage, cfg.explain, explained,
            model_report.ReportContext(ac.model_name, version, run_id, cfg.features.as_of,
                                       fitted.checked.retained - fitted.behaviour_missing),
            selection=fitted.selection, features=fitted.space.columns,
            profiles=fitted.profiles, names=fitted.names,
        )  # fmt: skip
    return AttitudesResult(
        as_of=cfg.features.as_of, run_id=run_id, model_name=ac.model_name,
        model_version=version, promoted=tc.promote, respondents=fitted.checked.read,
        retained=sum(s.size for s in fitted.profiles.segments),
        exclusions=dict(fitted.checked.exclusions), analysis=fitted.analysis,
        selection=fitted.selection,
        segments=records.segment_summaries(fitted.profiles, fitted.names, fitted.space.factors),
        table_versions=versions, ari_vs_truth=ari, congruence=congruence, paths=paths,
        publication=publication, declined=dict(fitted.checked.declined),
        invalid_answers=dict(fitted.checked.invalid_answers),
    )  # fmt: skip


def _explain(spark: SparkSession, cfg: AppConfig, fitted: Fitted) -> model_report.Explained:
    """Rules, composition and pictures (with the scree plot and loadings), logged."""
    customers = stitched.customers(spark, cfg)
    explained = model_report.explain_model(
        spark, cfg.explain, customers=customers, model=fitted.model, assigned=fitted.assigned,
        profiles=fitted.profiles, names=fitted.names, selection=fitted.selection,
        seed=cfg.attitudes.clustering.seed,
    )  # fmt: skip
    explained.pictures.update(attitude_records.pictures(fitted.analysis))
    explained.notes.insert(0, attitude_records.factor_note(fitted.analysis))
    model_report.log_explanation(explained, cfg.explain)
    return explained


def _planted(spark: SparkSession, cfg: AppConfig) -> DataFrame | None:
    """The generator's planted attitudinal segments, when the survey is the generator's."""
    if cfg.attitudes.survey.path is not None:
        return None
    if not tables.exists(spark, cfg.storage, tables.ATTITUDE_TRUTH):
        return None
    return stitched.planted(spark, cfg, tables.read(spark, cfg.storage, tables.ATTITUDE_TRUTH))
