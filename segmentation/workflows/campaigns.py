"""Measure a campaign (``jobs/measure_campaign.py``, ``make measure``): per segment of an
audience, treatment against holdout over the days after the launch (``activation.measurement``),
written to ``campaign_results``, MLflow and an HTML page."""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.activation import campaign_page, measurement
from segmentation.activation.groups import expected_holdout_share
from segmentation.config import AppConfig, join_path
from segmentation.errors import InputError
from segmentation.identity import stitched
from segmentation.inputs import parsing
from segmentation.runtime import timing, tracking
from segmentation.storage import files, tables
from segmentation.storage.tables import AUDIENCE

log = logging.getLogger(__name__)
JOB = "measure_campaign"


CampaignResult = measurement.Campaign


def parse_launch(text: str | dt.date) -> dt.date:
    if isinstance(text, dt.date):
        return text
    try:
        return dt.date.fromisoformat(str(text).strip())
    except ValueError as exc:
        raise InputError(f"--launch {text!r} (LAUNCH) is not a date YYYY-MM-DD") from exc


def run(
    spark: SparkSession, cfg: AppConfig, *, audience: str, launch: str | dt.date, days: int
) -> CampaignResult:
    """Measure the campaign launched on ``launch`` to ``audience`` over ``days`` days.

    Raises:
        InputError: an audience that was never built, no build on or before the launch, no
            events after the launch, ``days`` < 1.
    """
    launch_day = parse_launch(launch)
    if days < 1:
        raise InputError(f"--days {days} (DAYS) must be at least 1")
    defined = cfg.audiences.named(audience)
    if defined is None:
        names = [a.name for a in cfg.audiences.definitions]
        raise InputError(f"--audience {audience!r} (AUDIENCE) is not in audiences.definitions "
                         f"{names}")  # fmt: skip
    groups, scored = _groups(spark, cfg, audience, launch_day)
    end = launch_day + dt.timedelta(days=days)
    clean_cfg = _cleaning(cfg, scored, end)
    events = stitched.clean_events(spark, clean_cfg)
    try:
        zone = cfg.input.events.time_zone
        last = _last_day(events.clean, zone)
        if last is None or last <= launch_day:
            raise InputError(
                f"no events after the launch date {launch_day} (LAUNCH) in {cfg.events_path()}: "
                f"the events end on {last}; measure once the campaign's days are in the data"
            )
        outcome = measurement.outcomes(events.clean, time_zone=zone, launch=launch_day, end=end)
        with timing.stage("campaign: outcomes per segment and arm"):
            rows = measurement.arms(groups, outcome)
    finally:
        events.release()
        groups.unpersist()
    share = expected_holdout_share(defined.holdout_share, cfg.audiences.global_holdout_share)
    results = measurement.compare(rows, expected_holdout=share, mc=cfg.audiences.measurement)
    experiment_id = tracking.configure(cfg.tracking)
    with tracking.run(experiment_id, f"{JOB} {audience} {launch_day}") as run_id:
        result = CampaignResult(audience, launch_day, days, scored, run_id, results, share, last)
        if end > last:
            result.warnings.append(
                f"the window ends on {end}, after the last event day {last}: its last "
                f"{(end - last).days} day(s) are not in the data yet"
            )
        _record(spark, cfg, result)
    return result


def _groups(
    spark: SparkSession, cfg: AppConfig, audience: str, launch: dt.date
) -> tuple[DataFrame, dt.date]:
    """The audience's groups at launch and the build date they come from."""
    history = None
    if tables.exists(spark, cfg.storage, tables.AUDIENCE_HISTORY):
        history = tables.read(spark, cfg.storage, tables.AUDIENCE_HISTORY)
    mine = None if history is None else history.where(F.col(AUDIENCE) == audience)
    built = None if mine is None else mine.agg(
        F.max(F.when(F.col("valid_from") <= F.lit(launch), F.col("valid_from")))
    ).first()  # fmt: skip
    if mine is None or built is None or built[0] is None:
        raise InputError(
            f"audience {audience} (AUDIENCE) has no build on or before the launch {launch} "
            "in audience_history: build it first (make audiences, or make run) for a date "
            "on or before the launch"
        )
    return measurement.at_launch(mine, audience, launch).cache(), built[0]


def _cleaning(cfg: AppConfig, scored: dt.date, end: dt.date) -> AppConfig:
    """The config that reads the events through ``end`` keyed as on the build date."""
    quality = cfg.quality.model_copy(
        update={
            "max_days_after_as_of": max(cfg.quality.max_days_after_as_of, (end - scored).days + 1)
        }
    )
    features = cfg.features.model_copy(update={"as_of": scored})
    return cfg.model_copy(update={"quality": quality, "features": features})


def _last_day(clean: DataFrame, zone: str) -> dt.date | None:
    """The last local day with any usable event (an order, a return or a visit)."""
    row = clean.agg(F.max(parsing.local_date(F.col("event_time"), zone))).first()
    return None if row is None else row[0]


def _record(spark: SparkSession, cfg: AppConfig, result: CampaignResult) -> None:
    """The rows into ``campaign_results``, the metrics and page into MLflow and the reports."""
    tracking.set_tags({"job": JOB, AUDIENCE: result.audience})
    tracking.log_params({AUDIENCE: result.audience, "launch_date": result.launch,
                         "days": result.days, "audience_built_as_of": result.scored_as_of,
                         "expected_holdout_share": result.expected_holdout})  # fmt: skip
    metrics: dict[str, float] = {}
    for r in result.results:
        label = "all" if r.segment_id is None else f"segment_{r.segment_id}"
        for lift in (r.conversion, r.revenue):
            for name in ("absolute", "absolute_lower", "absolute_upper", "relative"):
                value = getattr(lift, name)
                if value == value:  # not NaN
                    metrics[f"{label}.{lift.metric}.{name}"] = value
        metrics[f"{label}.n_treatment"], metrics[f"{label}.n_holdout"] = (
            r.treatment.n, r.holdout.n)  # fmt: skip
    tracking.log_metrics(metrics)
    df = spark.createDataFrame(campaign_page.rows(result), schema=_row_schema())
    snapshot = {AUDIENCE: result.audience, "launch_date": result.launch}
    write = tables.snapshot_write(spark, cfg.storage, tables.CAMPAIGN_RESULTS, df, job=JOB,
                                  run_id=result.run_id, snapshot=snapshot)  # fmt: skip
    with timing.stage("campaign: write campaign_results (Delta)"):
        result.versions = tables.write_in_order([write])
    html = campaign_page.render(result)
    name = f"campaign_{result.audience}_{result.launch}_{result.days}d.html"
    tracking.log_text(html, f"report/{name}")
    location = join_path(cfg.storage.table_path(tables.REPORTS_DIR), name)
    result.paths["page"] = files.write_file(location, html.encode("utf-8"))


def _row_schema() -> T.StructType:
    schema = tables.CAMPAIGN_RESULTS.schema
    assert schema is not None
    return schema
