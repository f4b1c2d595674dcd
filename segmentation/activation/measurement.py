"""Campaign measurement: treatment against holdout per segment, after a launch.

Who was in which group is read from ``audience_history``: the rows valid at the launch date
(``valid_from <= launch < valid_to``), so customers who joined or left the audience later do not
move between arms. Both control groups (the audience's ``holdout`` and the ``global_holdout``)
are the holdout arm: each is a random hash draw, independent of the outcome.

Outcomes, from the clean events (the feature job's reading, quarantine and duplicate rules) of
the local days after the launch up to ``launch + days``: ``conversion`` (an order in the
window) and ``revenue_per_customer`` (order amounts minus returned amounts in the window; zero
for a customer without events, who counts in the denominator). The arms are aggregated in
Spark to sufficient statistics (count, conversions, sum and sum of squares of revenue), and
the intervals computed from them (``stats``): Newcombe's hybrid score interval and Katz's log
ratio for conversion, Welch's t and the delta method for revenue. Each segment's split is
tested for sample-ratio mismatch against the configured shares, and its power to see the
configured relative lift in conversion is reported.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.activation import stats
from segmentation.config import MeasurementConfig
from segmentation.storage.tables import CUSTOMER_ID, GROUP, SEGMENT_ID, SEGMENT_NAME, TREATMENT
from segmentation.value import summary

SRM, UNDERPOWERED, NO_HOLDOUT = "sample_ratio_mismatch", "underpowered", "no_holdout"
ALL = "all"


def at_launch(history: DataFrame, audience: str, launch: dt.date) -> DataFrame:
    """``customer_id``, ``segment_id``, ``segment_name``, ``treated`` of the audience's rows
    valid at ``launch``."""
    day = F.lit(launch).cast("date")
    valid = (F.col("valid_from") <= day) & (F.col("valid_to").isNull() | (F.col("valid_to") > day))
    return history.where((F.col("audience") == audience) & valid).select(
        CUSTOMER_ID, SEGMENT_ID, SEGMENT_NAME, (F.col(GROUP) == TREATMENT).alias("treated")
    )


def outcomes(clean: DataFrame, *, time_zone: str, launch: dt.date, end: dt.date) -> DataFrame:
    """Per customer with an order or return in ``(launch, end]``: ``converted``, ``revenue``."""
    days = summary.purchase_days(clean, time_zone=time_zone)
    window = (F.col(summary.DAY) > F.lit(launch)) & (F.col(summary.DAY) <= F.lit(end))
    return (
        days.where(window)
        .groupBy(CUSTOMER_ID)
        .agg(
            F.max("has_order").alias("converted"),
            F.sum(F.col("order_amount") - F.col("return_amount")).alias("revenue"),
        )
    )


def arms(groups: DataFrame, outcome: DataFrame) -> list[dict[str, object]]:
    """Sufficient statistics per segment and arm (one collect of a few rows)."""
    joined = groups.join(outcome, on=CUSTOMER_ID, how="left")
    converted = F.coalesce(F.col("converted"), F.lit(False))
    revenue = F.coalesce(F.col("revenue"), F.lit(0.0))
    rows = (
        joined.groupBy(SEGMENT_ID, SEGMENT_NAME, "treated")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.count_if(converted).alias("conversions"),
            F.sum(revenue).alias("revenue_sum"),
            F.sum(revenue * revenue).alias("revenue_sum_squares"),
        )
        .collect()
    )
    return [r.asDict() for r in rows]


@dataclass(frozen=True)
class SegmentResult:
    """One segment's (or the whole audience's) comparison."""

    segment_id: int | None
    segment_name: str
    treatment: stats.Arm
    holdout: stats.Arm
    conversion: stats.Lift
    revenue: stats.Lift
    srm_p_value: float
    minimum_detectable: float
    notes: tuple[str, ...] = field(default=())


def compare(
    rows: Sequence[dict[str, object]], *, expected_holdout: float, mc: MeasurementConfig
) -> list[SegmentResult]:
    """Each segment's result, then the whole audience's (``segment_id`` None)."""
    segments: dict[tuple[int | None, str], dict[bool, stats.Arm]] = {}
    for r in rows:
        sid = r[SEGMENT_ID]
        key = (None if sid is None else int(str(sid)), str(r[SEGMENT_NAME]))
        segments.setdefault(key, {})[bool(r["treated"])] = _arm(r)
    ordered = sorted(segments.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0))
    out = [_result(sid, name, arms_.get(True), arms_.get(False), expected_holdout, mc)
           for (sid, name), arms_ in ordered]  # fmt: skip
    total_t = _sum([r.treatment for r in out])
    total_h = _sum([r.holdout for r in out])
    out.append(_result(None, ALL, total_t, total_h, expected_holdout, mc))
    return out


def _arm(r: dict[str, object]) -> stats.Arm:
    return stats.Arm(int(str(r["n"])), int(str(r["conversions"])),
                     float(str(r["revenue_sum"] or 0.0)),
                     float(str(r["revenue_sum_squares"] or 0.0)))  # fmt: skip


def _sum(arms_: Sequence[stats.Arm]) -> stats.Arm:
    return stats.Arm(sum(a.n for a in arms_), sum(a.conversions for a in arms_),
                     sum(a.revenue_sum for a in arms_),
                     sum(a.revenue_sum_squares for a in arms_))  # fmt: skip


def _result(
    segment_id: int | None,
    name: str,
    treatment: stats.Arm | None,
    holdout: stats.Arm | None,
    expected_holdout: float,
    mc: MeasurementConfig,
) -> SegmentResult:
    t = treatment or stats.Arm(0, 0, 0.0, 0.0)
    h = holdout or stats.Arm(0, 0, 0.0, 0.0)
    conversion, revenue = stats.compare(t, h, mc.confidence)
    notes: list[str] = []
    p_srm = math.nan
    if 0 < expected_holdout < 1 and t.n + h.n > 0:
        p_srm = stats.srm(t.n, h.n, expected_holdout)
        if p_srm < stats.SRM_ALPHA:
            notes.append(SRM)
    mde = math.nan
    if h.n == 0:
        notes.append(NO_HOLDOUT)
    else:
        if min(t.n, h.n) >= 2 and 0 < h.rate < 1:
            mde = stats.minimum_detectable_difference(
                h.rate, t.n, h.n, alpha=1 - mc.confidence, power=mc.power
            )
        # No estimate (a group under 2 customers, a holdout rate of 0 or 1) is underpowered too.
        if not mde <= mc.target_relative_lift * h.rate:
            notes.append(UNDERPOWERED)
    return SegmentResult(segment_id, name, t, h, conversion, revenue, p_srm, mde, tuple(notes))


@dataclass
class Campaign:
    """A measured campaign: what ``workflows.campaigns`` computed and wrote."""

    audience: str
    launch: dt.date
    days: int
    scored_as_of: dt.date
    run_id: str
    results: list[SegmentResult]
    expected_holdout: float
    last_event_day: dt.date
    versions: dict[str, int] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
