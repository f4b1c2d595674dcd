"""Outcome validation of a training: which window, which segments, which events.

``backtest`` (default): the newest ``as_of`` has no future yet, so the same model configuration
is fitted on features as of ``as_of - h`` (computed from the events, never written), its
segments are matched to the trained model's (Hungarian matching of centres, so the ids are the
trained ones) and judged on ``(as_of - h, as_of]``. ``forward``: the trained segments of
``as_of`` judged on ``(as_of, as_of + h]``, once those events exist. The outcome never feeds
the model. Too little history, or no future yet, skips the check with the reason.

Above ``validation.outcome.max_customers`` customers the check runs on a seeded hash sample of
customers (all events of each sampled customer), recorded as the measure
``outcome_customer_share``: the intervals and tests are those of the sample.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig
from segmentation.errors import SegmentationError
from segmentation.features import behaviour as feat
from segmentation.features.levels import resolve_levels
from segmentation.identity import stitched
from segmentation.inputs import parsing
from segmentation.modeling import clustering, matching, outcomes, training
from segmentation.modeling.validation import Measure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutcomeCheck:
    """The outcome measures, or the reason there are none."""

    measures: tuple[Measure, ...] = ()
    window: outcomes.OutcomeWindow | None = None
    skipped: str | None = None


def run(
    spark: SparkSession,
    cfg: AppConfig,
    *,
    estimator: clustering.SegmentationKMeans,
    model: clustering.SegmentModel,
    features: DataFrame,
) -> OutcomeCheck:
    """Outcome measures of the trained ``model`` (``validation.outcome``).

    Args:
        estimator: the training's estimator (the backtest refits its configuration).
        model: the trained model with its final segment ids.
        features: the training snapshot's customer features (forward mode assigns them).
    """
    oc = cfg.validation.outcome
    if oc.mode == "none":
        return OutcomeCheck(skipped="validation.outcome.mode is none")
    share = customer_share(oc.max_customers, features.count())
    keep = sampled(share, cfg.training.seed)
    try:
        events = stitched.clean_events(spark, cfg, keep=keep)
    except SegmentationError as exc:
        return OutcomeCheck(skipped=f"the events cannot be read for the outcome check: {exc}")
    try:
        check = _check(cfg, events.clean, events.present, estimator=estimator, model=model,
                       features=features.where(keep))  # fmt: skip
    finally:
        events.release()
    if share < 1.0 and check.measures:
        log.info(
            "outcome check on a %.1f%% sample of customers (validation.outcome.max_customers %s)",
            100 * share, oc.max_customers,
        )  # fmt: skip
        measure = Measure(None, "outcome_customer_share", share)
        return OutcomeCheck((measure, *check.measures), check.window, check.skipped)
    return check


SAMPLE_BUCKETS = 1_000_000


def customer_share(max_customers: int | None, customers: int) -> float:
    """The share of customers the outcome check samples: ``max_customers / customers``, at most
    1 (None: every customer)."""
    if max_customers is None or customers <= max_customers:
        return 1.0
    return max_customers / customers


def sampled(share: float, seed: int) -> Column:
    """True for the customers of a seeded hash sample of ``share`` (to 1e-6), whatever the
    table's order or partitioning: ``pmod(xxhash64(customer_id, seed), 1e6) < share * 1e6``."""
    if share >= 1.0:
        return F.lit(True)
    bucket = F.pmod(F.xxhash64(F.col("customer_id"), F.lit(seed)), F.lit(SAMPLE_BUCKETS))
    return bucket < F.lit(max(1, round(share * SAMPLE_BUCKETS)))


def _check(
    cfg: AppConfig,
    events: DataFrame,
    present: frozenset[str],
    *,
    estimator: clustering.SegmentationKMeans,
    model: clustering.SegmentModel,
    features: DataFrame,
) -> OutcomeCheck:
    oc, as_of = cfg.validation.outcome, cfg.features.as_of
    first, last = _event_days(events, cfg.input.events.time_zone)
    h = dt.timedelta(days=oc.horizon_days)
    if oc.mode == "forward":
        if last is None or last < as_of + h:
            return OutcomeCheck(
                skipped=f"no complete outcome window yet: events end on {last}, the window "
                f"({as_of}, {as_of + h}] needs them up to {as_of + h}"
            )
        window = outcomes.OutcomeWindow(as_of, as_of + h, "forward")
        assignment = model.transform(features)
    else:
        start = as_of - h
        needed = start - dt.timedelta(days=oc.min_history_days)
        if first is None or first > needed:
            return OutcomeCheck(
                skipped=f"too little history for a backtest: events start on {first}, a model "
                f"as of {start} (as_of - validation.outcome.horizon_days) needs them from "
                f"{needed} (validation.outcome.min_history_days)"
            )
        window = outcomes.OutcomeWindow(start, as_of, "backtest")
        past = _backtest_assignment(cfg, events, present, estimator, model, start)
        if past is None:
            return OutcomeCheck(skipped=f"too few customers as of {start} for {model.k} segments")
        assignment = past
    rows = outcomes.customer_outcomes(
        events, assignment, window, time_zone=cfg.input.events.time_zone
    ).cache()
    try:
        return OutcomeCheck(tuple(outcomes.measures(rows)), window)
    finally:
        rows.unpersist()


def _event_days(events: DataFrame, time_zone: str) -> tuple[dt.date | None, dt.date | None]:
    day = parsing.local_date(F.col("event_time"), time_zone)
    row = events.agg(F.min(day), F.max(day)).first()
    return (row[0], row[1]) if row is not None else (None, None)


def _backtest_assignment(
    cfg: AppConfig,
    events: DataFrame,
    present: frozenset[str],
    estimator: clustering.SegmentationKMeans,
    model: clustering.SegmentModel,
    start: dt.date,
) -> DataFrame | None:
    """Customers as of ``start`` assigned by the same configuration fitted then, with the
    trained model's segment ids (None: fewer customers than segments).

    A backtest cluster takes the id of the trained segment whose members it shares most, the
    trained model assigning the same customers as of ``start`` (``matching.pair_by_members``):
    members, not centres, because the segments at ``start`` may be cut differently (two
    segments merged, another split) and a centre pairing would then give a lapsed group the
    id of an active one."""
    fc = cfg.features
    levels = resolve_levels(events, fc, present)
    past = feat.compute_configured(
        events, fc, as_of=start, levels=levels, present=present,
        time_zone=cfg.input.events.time_zone,
    ).cache()  # fmt: skip
    if past.count() <= model.k:
        past.unpersist()
        return None
    fitted = estimator.copy(k=model.k).fit(past)
    trained = model.transform(past).select("customer_id", "segment_id")
    overlap = training.member_overlap(fitted, past, trained)
    _, sizes = fitted.by_cluster()
    ids = matching.pair_by_members(sizes, sorted(model.centers_scaled), overlap)
    return fitted.with_segment_ids(ids).transform(past)
