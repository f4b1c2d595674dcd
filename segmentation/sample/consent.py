"""The sample's consent records and suppression list (``consent``, ``suppression``), so
``make run`` builds an audience with consent as a real one would.

Per customer and channel (email, sms, ads): an opt-in at a day between the generator's start
and end (email 85% of customers, sms 45%, ads 70%); a tenth of those opt out again later (a
second, later record); 5% of customers have only an opt-out for the channel; the rest no
record. 1% of customers are on the suppression list (complaint, legal_hold or staff).
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from segmentation.sample.generator import _uniform

OPT_IN_SHARE = {"email": 0.85, "sms": 0.45, "ads": 0.70}
LATER_OPT_OUT_SHARE = 0.1
ONLY_OPT_OUT_SHARE = 0.05
SUPPRESSED_SHARE = 0.01
REASONS = ("complaint", "legal_hold", "staff")


def _instant(seed: int, purpose: str, start: dt.date, days: int, cid: Column) -> Column:
    offset = F.floor(_uniform(seed, purpose, cid) * days).cast("int")
    seconds = F.floor(_uniform(seed, purpose + ":s", cid) * 86_400).cast("int")
    day = F.date_add(F.lit(start), offset)
    return (F.unix_timestamp(day.cast("timestamp")) + seconds).cast("timestamp")


def consent(customers: DataFrame, seed: int, start: dt.date, end: dt.date) -> DataFrame:
    """``customer_id``, ``channel``, ``status``, ``updated_at``: the consent records."""
    cid, days = F.col("customer_id"), max((end - start).days, 2)
    frames = []
    for channel, share in OPT_IN_SHARE.items():
        u = _uniform(seed, f"consent:{channel}", cid)
        opted_in = u < share
        later_out = opted_in & (_uniform(seed, f"consent:{channel}:out", cid) < LATER_OPT_OUT_SHARE)
        only_out = (u >= share) & (u < share + ONLY_OPT_OUT_SHARE)
        first = _instant(seed, f"consent:{channel}:t", start, days // 2, cid)
        later = _instant(seed, f"consent:{channel}:t2", start + dt.timedelta(days=days // 2),
                         days - days // 2, cid)  # fmt: skip
        base = customers.select(cid)
        frames += [
            base.where(opted_in).select(cid, F.lit(channel).alias("channel"),
                                        F.lit("opt_in").alias("status"), first.alias("updated_at")),
            base.where(later_out | only_out).select(
                cid, F.lit(channel).alias("channel"), F.lit("opt_out").alias("status"),
                later.alias("updated_at")),
        ]  # fmt: skip
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


def suppression(customers: DataFrame, seed: int) -> DataFrame:
    """``customer_id``, ``reason``: customers never to contact."""
    cid = F.col("customer_id")
    pick = F.floor(_uniform(seed, "suppression:reason", cid) * len(REASONS)).cast("int")
    reason = F.element_at(F.array(*[F.lit(r) for r in REASONS]), pick + 1)
    return customers.where(_uniform(seed, "suppression", cid) < SUPPRESSED_SHARE).select(
        cid, reason.alias("reason")
    )
