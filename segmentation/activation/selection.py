"""Who an audience selects: members of its segments in the segmentation's snapshot of
``features.as_of``, narrowed by its condition, then filtered by consent and suppression.

The condition is a Spark SQL predicate over known columns only: the membership's
``segment_id`` and ``segment_name``, the ``customer_features`` snapshot of the date, and the
``customer_value`` columns of the date when customer value was scored (``p_alive``,
``expected_purchases``, ``clv``...). An unknown column, a predicate that is not true/false or
does not parse is an error naming the audience. A customer whose condition is null (a missing
feature) is not selected, as in SQL's WHERE.

Exclusion reasons, in order: ``suppressed`` (on the suppression list for every channel or the
audience's), ``opted_out`` (the latest consent record for the channel is an opt-out),
``no_consent`` (no consent record for the channel). Without a consent input nobody is excluded
for consent (the summary says so loudly).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.activation import groups
from segmentation.activation.consent import CHANNEL, CONSENTED, Permissions
from segmentation.config import AppConfig, AudienceConfig
from segmentation.errors import InputError
from segmentation.storage import tables
from segmentation.storage.delta_base import first_line
from segmentation.storage.tables import AUDIENCE, CUSTOMER_ID, GROUP, SEGMENT_ID, SEGMENT_NAME

REASON = "reason"
SUPPRESSED, OPTED_OUT, NO_CONSENT = "suppressed", "opted_out", "no_consent"
_QUERY_CONTEXT_LOGGER = "SQLQueryContextLogger"
"""PySpark logs an analysis error's query context (a Java stack) at ERROR on this logger."""
_LINEAGE = ("model_name", "model_version", "run_id", "as_of", "scored_at", "distance")


@dataclass(frozen=True)
class Selected:
    """One audience's candidates before consent: ``customer_id``, ``segment_id``,
    ``segment_name``, ``model_name``, ``model_version``; and the segments it resolved to."""

    audience: AudienceConfig
    model_name: str
    rows: DataFrame
    segments: tuple[tuple[int, str], ...]


def membership(spark: SparkSession, cfg: AppConfig, model_name: str, key: str) -> DataFrame:
    """The segmentation's membership snapshot of ``features.as_of``.

    Raises:
        InputError: no rows for that model and date (naming ``key``).
    """
    as_of = cfg.features.as_of
    rows = None
    if tables.exists(spark, cfg.storage, tables.MEMBERSHIP):
        snapshot = {tables.MODEL_NAME: model_name, tables.AS_OF: as_of}
        rows = tables.read(spark, cfg.storage, tables.MEMBERSHIP, partitions=snapshot)
    if rows is None or rows.isEmpty():
        raise InputError(
            f"no segment_membership rows of {model_name} ({key}) as of {as_of} "
            "(features.as_of): score that date first (make assign / make rules, or make run)"
        )
    return rows


def select(
    spark: SparkSession, cfg: AppConfig, audience: AudienceConfig, columns: DataFrame | None
) -> Selected:
    """The audience's members before consent (a plan; nothing is written).

    Args:
        columns: the features (and value) of the date by ``customer_id``, what conditions
            may name (None: no feature snapshot).

    Raises:
        InputError: a segment that is not in the snapshot, an unusable condition.
    """
    key = f"audiences.definitions[{audience.name}]"
    model = cfg.audience_model(audience)
    members = membership(spark, cfg, model, f"{key}.model_name").drop(*_LINEAGE[2:])
    found = members.select(SEGMENT_ID, SEGMENT_NAME).distinct().collect()
    available = sorted((int(r[SEGMENT_ID]), str(r[SEGMENT_NAME])) for r in found)
    ids = _segment_ids(audience, available, model, cfg.features.as_of, key)
    rows = members.where(F.col(SEGMENT_ID).isin(*ids))
    if audience.condition is not None:
        rows = _narrowed(rows, columns, audience.condition, key)
    chosen = tuple(s for s in available if s[0] in ids)
    return Selected(audience, model, rows.select(CUSTOMER_ID, SEGMENT_ID, SEGMENT_NAME,
                                                 *_LINEAGE[:2]), chosen)  # fmt: skip


def _segment_ids(
    audience: AudienceConfig,
    available: Sequence[tuple[int, str]],
    model: str,
    as_of: dt.date,
    key: str,
) -> list[int]:
    by_name = {name.strip().lower(): sid for sid, name in available}
    ids: list[int] = []
    unknown: list[int | str] = []
    for wanted in audience.segments:
        if isinstance(wanted, int):
            (ids if wanted in {s for s, _ in available} else unknown).append(wanted)
        elif wanted.strip().lower() in by_name:
            ids.append(by_name[wanted.strip().lower()])
        else:
            unknown.append(wanted)
    if unknown:
        listing = "; ".join(f"{sid} {name}" for sid, name in available)
        raise InputError(
            f"{key}.segments: {unknown} is not a segment of {model} as of {as_of}; its "
            f"segments (id name): {listing}"
        )
    return sorted(set(ids))


def _narrowed(rows: DataFrame, columns: DataFrame | None, condition: str, key: str) -> DataFrame:
    """``rows`` where the condition holds, checked first against the known columns."""
    known = rows if columns is None else rows.join(columns, on=CUSTOMER_ID, how="left")
    quiet = logging.getLogger(_QUERY_CONTEXT_LOGGER)
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the error below says it in one line
    try:
        predicate = F.expr(condition)
        data_type = known.select(predicate.alias("_c")).schema["_c"].dataType
    except (AnalysisException, ParseException) as exc:
        names = ", ".join(c for c in known.columns if not c.startswith("_"))
        raise InputError(
            f"{key}.condition {condition!r} cannot be used: {first_line(exc)}. It may name "
            f"these columns: {names}"
        ) from exc
    finally:
        quiet.setLevel(level)
    if not isinstance(data_type, T.BooleanType):
        raise InputError(
            f"{key}.condition {condition!r} is a {data_type.simpleString()}, not a true/false "
            "predicate (e.g. p_alive > 0.5 AND frequency >= 2)"
        )
    return known.where(predicate).select(*rows.columns)


def decided(
    selected: Selected, permissions: Permissions, *, salt: str, global_share: float
) -> DataFrame:
    """Every candidate with its ``reason`` (null: a member) and ``group`` (null: excluded)."""
    audience = selected.audience
    channel = F.lit(audience.channel.strip().lower())
    rows = selected.rows.withColumn(AUDIENCE, F.lit(audience.name)).withColumn(CHANNEL, channel)
    suppressed, consent = permissions.suppression, permissions.consent
    reason = F.lit(None).cast("string")
    if consent is not None:
        mine = consent.where(F.col(CHANNEL) == channel).select(CUSTOMER_ID, CONSENTED)
        rows = rows.join(mine, on=CUSTOMER_ID, how="left")
        reason = F.when(F.col(CONSENTED).isNull(), F.lit(NO_CONSENT)).when(
            ~F.col(CONSENTED), F.lit(OPTED_OUT)
        )
    if suppressed is not None:
        hit = (
            suppressed.where(F.col(CHANNEL).isNull() | (F.col(CHANNEL) == channel))
            .select(CUSTOMER_ID, F.lit(True).alias("_suppressed"))
            .distinct()
        )
        rows = rows.join(hit, on=CUSTOMER_ID, how="left")
        reason = F.when(F.col("_suppressed"), F.lit(SUPPRESSED)).otherwise(reason)
    group = groups.group(salt, audience.name, audience.holdout_share, global_share)
    return rows.select(
        AUDIENCE, CUSTOMER_ID, SEGMENT_ID, SEGMENT_NAME, CHANNEL, "model_name", "model_version",
        reason.alias(REASON), F.when(reason.isNull(), group).alias(GROUP),
    )  # fmt: skip
