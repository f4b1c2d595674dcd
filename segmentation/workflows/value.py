"""Customer value: the BTYD summary, the fits, the backtest, every customer scored.

From the same events, mapping, time zone, quarantine and duplicate rules as the feature job
(``quality.clean_events``): the BTYD summary as of ``features.as_of`` (``value.summary``), the
purchase-count model (``value.model``: BG/NBD or MBG/NBD) and Gamma-Gamma fitted on the driver
(``value.fitting``), the calibration/holdout backtest (``value.backtest``), every customer
scored in Spark (``value.scoring``). One MLflow run; the value model registered under
``value.model_name`` (a pyfunc whose ``predict`` scores a pandas frame) and, with
``tracking.promote``, its rows written to ``customer_value`` and the alias moved to it, last.
With ``score_only`` the version under the alias scores the date, without refitting.
"""

from __future__ import annotations

import functools
import logging

from pyspark.sql import DataFrame, SparkSession

from segmentation.config import AppConfig, TrackingConfig
from segmentation.errors import InputError
from segmentation.identity import stitched
from segmentation.runtime import timing, tracking
from segmentation.storage import tables
from segmentation.value import backtest, fitting, scoring, segments, summary
from segmentation.workflows import value_records
from segmentation.workflows.value_records import ValueResult

log = logging.getLogger(__name__)
JOB = "customer_value"
MODEL_JSON = "value/model.json"


def tracking_config(cfg: AppConfig) -> TrackingConfig:
    """``tracking.*`` with the value model's registered name."""
    return cfg.tracking.model_copy(update={"registered_model": cfg.value.model_name})


def run(spark: SparkSession, cfg: AppConfig, *, score_only: bool = False) -> ValueResult:
    """Fit (unless ``score_only``) and score ``features.as_of``; write and register.

    Raises:
        InputError: unusable events, too few customers or repeat buyers, a fit that does not
            converge, ``q <= 1``, or (``score_only``) no value model under the alias.
    """
    tc, as_of = tracking_config(cfg), cfg.features.as_of
    experiment_id = tracking.configure(tc)
    champion = _champion(tc) if score_only else None
    events = stitched.clean_events(spark, cfg)
    days = summary.purchase_days(events.clean, time_zone=cfg.input.events.time_zone).cache()
    try:
        snapshot = summary.summarise(
            days, as_of=as_of, unit=cfg.value.time_unit, net=cfg.value.spend == "net"
        ).cache()
        with tracking.run(experiment_id, f"{JOB} {as_of}") as run_id:
            tracking.set_tags({"job": JOB, "mode": "score" if score_only else "fit"})
            if champion is None:
                return _fit_and_score(spark, cfg, days, snapshot, run_id=run_id)
            return _score(spark, cfg, snapshot, champion, run_id=run_id)
    finally:
        days.unpersist()
        events.release()


def _fit_and_score(
    spark: SparkSession, cfg: AppConfig, days: DataFrame, snapshot: DataFrame, *, run_id: str
) -> ValueResult:
    vc, tc, as_of = cfg.value, tracking_config(cfg), cfg.features.as_of
    with timing.stage("value: fit"):
        fitted = fitting.fit(snapshot, vc)
    with timing.stage("value: backtest"):
        checked = backtest.run(days, vc, as_of=as_of)
    value_records.record_fit(cfg, fitted, checked)
    tracking.log_text(fitted.model.to_json(), MODEL_JSON)
    _, version = tracking.log_python_model(
        functools.partial(scoring.predict, fitted.model), registered_model=vc.model_name,
        requirements=value_records.REQUIREMENTS,
    )  # fmt: skip
    tracking.set_tags({"model_version": version})
    lineage = tables.Lineage(as_of, vc.model_name, version, run_id)
    scored = _scored(snapshot, fitted.model, lineage)
    writes = [value_records.parameters_write(spark, cfg, fitted, lineage, job=JOB)]
    if tc.promote:
        writes.append(value_records.scores_write(spark, cfg, scored, lineage, job=JOB))
    with timing.stage("value: write tables (Delta)"):
        versions = tables.write_in_order(writes)
        if tc.promote:
            reason = f"{JOB} run {run_id} with tracking.promote=true"
            tracking.promote(vc.model_name, tc.alias, version, reason=reason)
            tracking.set_tags({"promoted_to": tc.alias})
    tracking.set_tags({f"output.{name}.version": v for name, v in versions.items()})
    result = _result(spark, cfg, scored, lineage, promoted=tc.promote, versions=versions)
    result.fitted, result.backtest = fitted, checked
    result.notes = list(fitted.notes)
    result.paths = {"model_uri": f"models:/{vc.model_name}/{version}",
                    **value_records.report(cfg, result)}  # fmt: skip
    return result


def _score(
    spark: SparkSession,
    cfg: AppConfig,
    snapshot: DataFrame,
    champion: value_records.Champion,
    *,
    run_id: str,
) -> ValueResult:
    vc = cfg.value
    tracking.log_params({"model_name": vc.model_name, "model_version": champion.version,
                         "model_run_id": champion.run_id, "as_of": cfg.features.as_of})  # fmt: skip
    lineage = tables.Lineage(cfg.features.as_of, vc.model_name, champion.version, run_id)
    scored = _scored(snapshot, champion.model, lineage)
    with timing.stage("value: write tables (Delta)"):
        versions = tables.write_in_order(
            [value_records.scores_write(spark, cfg, scored, lineage, job=JOB)]
        )
    return _result(spark, cfg, scored, lineage, promoted=True, versions=versions)


def _scored(snapshot: DataFrame, vm: scoring.ValueModel, lineage: tables.Lineage) -> DataFrame:
    return scoring.score(snapshot, vm).select("*", *lineage.columns()).cache()


def _result(
    spark: SparkSession,
    cfg: AppConfig,
    scored: DataFrame,
    lineage: tables.Lineage,
    *,
    promoted: bool,
    versions: dict[str, int],
) -> ValueResult:
    totals = segments.totals(scored)
    tracking.log_metrics(totals.metrics())
    by_segment = value_records.by_segment(spark, cfg, scored) if promoted else {}
    scored.unpersist()
    return ValueResult(
        as_of=lineage.as_of, run_id=lineage.run_id, model_name=lineage.model_name,
        model_version=lineage.model_version, promoted=promoted, totals=totals,
        by_segment=by_segment, table_versions=versions,
    )  # fmt: skip


def _champion(tc: TrackingConfig) -> value_records.Champion:
    """The value model under the alias (its run's ``value/model.json``)."""
    current = tracking.alias_version(tc.registered_model, tc.alias)
    info = None if current is None else tracking.load_text(current.run_id, MODEL_JSON)
    if current is None or info is None:
        raise InputError(
            f"no value model under {tc.registered_model}@{tc.alias} (value.model_name, "
            "tracking.alias): fit one first (`make value`, or jobs/customer_value.py without "
            "--score-only) with tracking.promote=true, or promote a fitted version"
        )
    return value_records.Champion(current.version, current.run_id,
                                  scoring.ValueModel.from_json(info))  # fmt: skip


def values(spark: SparkSession, cfg: AppConfig) -> DataFrame | None:
    """``customer_value`` rows of ``features.as_of`` for ``value.model_name`` (None: none yet):
    what the segmentations join to show each segment's value."""
    if not tables.exists(spark, cfg.storage, tables.CUSTOMER_VALUE):
        return None
    rows = tables.read(
        spark, cfg.storage, tables.CUSTOMER_VALUE,
        partitions={tables.MODEL_NAME: cfg.value.model_name, tables.AS_OF: cfg.features.as_of},
    )  # fmt: skip
    return None if rows.isEmpty() else rows.select(tables.CUSTOMER_ID, *segments.VALUE_COLUMNS)
