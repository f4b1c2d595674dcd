"""Consent and suppression: who may be contacted on which channel, as of a date.

Consent (``audiences.consent``): one row per record of a customer (or an address) giving or
withdrawing consent for a channel. Records after the end of ``features.as_of`` (local day) are
not known yet and are left out. The latest record per subject and channel wins; two records at
the same instant with opposite statuses count as an opt-out. Without identity stitching the
subject is the customer id. With stitching, the subject is the record's identifier (the first
of ``audiences.consent.identifiers`` present on the row, else its customer id as
``identity.customer_id_type``), and a stitched customer is consented for a channel only when
every subject of theirs with a record for it opted in: an opt-in on one address never overrides
an opt-out on another.

Suppression (``audiences.suppression``): customers never to contact, on every channel or on the
row's channel (``audiences.suppression.channel``); with stitching, a suppressed id suppresses
the whole stitched customer.

Statuses are compared trimmed and lower-cased with ``opt_in_values`` / ``opt_out_values``; any
other status, a missing or unreadable time, or an unreadable id is an error naming the column
and examples (consent is never guessed).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from segmentation.config import AppConfig, Identifier, IdentityConfig
from segmentation.errors import InputError
from segmentation.identity import keying
from segmentation.identity.normalise import Spec, normalised_frame
from segmentation.inputs import parsing, sources
from segmentation.inputs.columns import find_column
from segmentation.storage.tables import CUSTOMER_ID

CHANNEL, CONSENTED = "channel", "consented"
SUBJECT = "_subject"


@dataclass(frozen=True)
class Permissions:
    """What the consent and suppression inputs allow.

    Attributes:
        consent: ``customer_id``, ``channel``, ``consented`` (one row per customer and channel
            with a record); None: no consent input configured.
        suppression: ``customer_id``, ``channel`` (null: every channel); None: no list.
        consent_path, suppression_path: where they were read from.
    """

    consent: DataFrame | None
    suppression: DataFrame | None
    consent_path: str | None
    suppression_path: str | None


def permissions(spark: SparkSession, cfg: AppConfig) -> Permissions:
    """The consent and suppression inputs as of ``features.as_of``.

    Raises:
        InputError: ``audiences.require_consent`` without a consent input; an unreadable input,
            a missing column, or a value that cannot be read (naming the key and examples).
    """
    consent_path, suppression_path = _present(cfg.consent_path()), _present(cfg.suppression_path())
    if cfg.audiences.consent.path and consent_path is None:
        raise InputError(f"audiences.consent.path {cfg.audiences.consent.path} does not exist")
    if cfg.audiences.suppression.path and suppression_path is None:
        raise InputError(
            f"audiences.suppression.path {cfg.audiences.suppression.path} does not exist"
        )
    if consent_path is None and cfg.audiences.require_consent:
        raise InputError(
            "audiences.require_consent is true but no consent input is configured: set "
            "audiences.consent.path to your consent records (customer id, channel, status, "
            "updated at)"
        )
    consent = None if consent_path is None else _consent(spark, cfg, consent_path)
    suppression = None if suppression_path is None else _suppression(spark, cfg, suppression_path)
    return Permissions(consent, suppression, consent_path, suppression_path)


def _present(path: str | None) -> str | None:
    if path is None or "://" in path or os.path.exists(path):
        return path
    return None


def _read_id(raw: DataFrame, name: str, key: str, path: str) -> Column:
    """The id column normalised like the events' ids; an unreadable id is an error."""
    parsed = parsing.customer_id(F.col(f"`{name}`"), raw.schema[name].dataType)
    bad = raw.where(parsed.issue.isNotNull()).select(F.col(f"`{name}`")).limit(3).collect()
    if bad:
        raise InputError(
            f"{path}: column {name!r} ({key}) holds ids that are not whole numbers or not "
            f"exact: {', '.join(str(r[0]) for r in bad)}; export them as text or integers"
        )
    return parsed.value


def _consent(spark: SparkSession, cfg: AppConfig, path: str) -> DataFrame:
    source, zone = cfg.audiences.consent, cfg.input.events.time_zone
    raw = sources.read_raw(spark, source, path)
    key = "audiences.consent"
    names = {k: find_column(raw, getattr(source, k), f"{key}.{k}", path)
             for k in (CUSTOMER_ID, CHANNEL, "status", "updated_at")}  # fmt: skip
    status = F.lower(parsing.trim_blank(F.col(f"`{names['status']}`")))
    ins = [F.lower(parsing.trim_blank(F.lit(v))) for v in source.opt_in_values]
    outs = [F.lower(parsing.trim_blank(F.lit(v))) for v in source.opt_out_values]
    time_field = raw.schema[names["updated_at"]]
    when = parsing.event_time(F.col(f"`{time_field.name}`"), time_field.dataType,
                              timestamp_format=None, time_zone=zone)  # fmt: skip
    carried = {find_column(raw, i.column, f"{key}.identifiers", path) for i in source.identifiers}
    rows = raw.select(
        *[F.col(f"`{names[k]}`").cast("string").alias(f"_raw_{k}") for k in names],
        *[F.col(f"`{c}`") for c in sorted(carried)],
        _read_id(raw, names[CUSTOMER_ID], f"{key}.customer_id", path).alias("_id"),
        F.lower(parsing.blank_is_null(F.col(f"`{names[CHANNEL]}`"))).alias("_channel"),
        F.when(status.isin(*outs), False).when(status.isin(*ins), True).alias("_in"),
        when.alias("_at"),
    )
    _check_values(rows, names, key, path)
    end = dt.datetime.combine(cfg.features.as_of + dt.timedelta(days=1), dt.time())
    known = rows.where(F.col("_at") < parsing.wall_clock(F.lit(end).cast("timestamp"), zone))
    subjects = _subjects(cfg, known)
    latest = Window.partitionBy(SUBJECT, CHANNEL).orderBy(F.col("_at").desc(), F.col("_in"))
    last = subjects.withColumn("_n", F.row_number().over(latest)).where(F.col("_n") == 1)
    return (
        last.where(F.col(CUSTOMER_ID).isNotNull())
        .groupBy(CUSTOMER_ID, CHANNEL)
        .agg(F.bool_and("_in").alias(CONSENTED))
    )


def _check_values(rows: DataFrame, names: dict[str, str], key: str, path: str) -> None:
    """Unknown statuses, missing channels or unreadable times: an error with examples."""
    problems = [
        ("status", F.col("_in").isNull(), "a status that is neither in opt_in_values nor in "
         "opt_out_values"),
        (CHANNEL, F.col("_channel").isNull(), "no channel"),
        ("updated_at", F.col("_at").isNull(), "a missing or unreadable time"),
        (CUSTOMER_ID, F.col("_id").isNull(), "no customer id"),
    ]  # fmt: skip
    counts = rows.agg(*[F.count_if(bad).alias(k) for k, bad, _ in problems]).first()
    assert counts is not None
    for k, bad, what in problems:
        if counts[k]:
            found = rows.where(bad).select(f"_raw_{k}").limit(3).collect()
            raise InputError(
                f"{path}: {counts[k]:,} consent record(s) with {what} in column "
                f"{names[k]!r} ({key}.{k}), e.g. {[r[0] for r in found]}; fix the input or "
                "the mapping"
            )


def _subjects(cfg: AppConfig, rows: DataFrame) -> DataFrame:
    """The rows with their subject and (stitched) ``customer_id``."""
    identity = cfg.stitching()
    channel = F.col("_channel").alias(CHANNEL)
    if identity is None:
        return rows.select(F.col("_id").alias(SUBJECT), F.col("_id").alias(CUSTOMER_ID),
                           channel, "_in", "_at")  # fmt: skip
    ids = (
        *cfg.audiences.consent.identifiers,
        Identifier(column="_id", type=identity.customer_id_type),
    )
    keyed, subject = _keyed(cfg, rows, ids, identity, key="audiences.consent.identifiers")
    return keyed.select(subject.alias(SUBJECT), F.col(keying.STITCHED).alias(CUSTOMER_ID),
                        channel, "_in", "_at")  # fmt: skip


def _keyed(
    cfg: AppConfig,
    rows: DataFrame,
    ids: tuple[Identifier, ...],
    identity: IdentityConfig,
    *,
    key: str,
) -> tuple[DataFrame, Column]:
    """``rows`` with the stitched key (``keying.STITCHED``) of their identifiers, and the
    subject: the first identifier present as ``type:value``."""
    spark = rows.sparkSession
    keymap = keying.load(spark, cfg, cfg.features.as_of)
    specs = [Spec(find_column(rows, ident.column, key, "the consent input"), ident.type, key,
                  f"_n{i}", f"_s{i}") for i, ident in enumerate(ids)]  # fmt: skip
    names, kinds = [s.value for s in specs], [s.kind for s in specs]
    normalised = normalised_frame(rows, specs, identity).drop(*[s.status for s in specs])
    frame = keying.with_key(normalised, names, kinds, keymap)
    subject = F.coalesce(*[F.concat(F.lit(f"{k}:"), F.col(n)) for n, k in
                           zip(names, kinds, strict=True)])  # fmt: skip
    return frame, subject


def _suppression(spark: SparkSession, cfg: AppConfig, path: str) -> DataFrame:
    source = cfg.audiences.suppression
    raw = sources.read_raw(spark, source, path)
    key = "audiences.suppression"
    id_name = find_column(raw, source.customer_id, f"{key}.customer_id", path)
    channel = (
        F.lit(None).cast("string")
        if source.channel is None
        else F.lower(parsing.blank_is_null(
            F.col(f"`{find_column(raw, source.channel, f'{key}.channel', path)}`")))
    )  # fmt: skip
    rows = raw.select(_read_id(raw, id_name, f"{key}.customer_id", path).alias("_id"),
                      channel.alias(CHANNEL)).where(F.col("_id").isNotNull())  # fmt: skip
    identity = cfg.stitching()
    if identity is None:
        return rows.select(F.col("_id").alias(CUSTOMER_ID), CHANNEL).distinct()
    ids = (Identifier(column="_id", type=identity.customer_id_type),)
    keyed, _ = _keyed(cfg, rows, ids, identity, key=f"{key}.customer_id")
    return (
        keyed.where(F.col(keying.STITCHED).isNotNull())
        .select(F.col(keying.STITCHED).alias(CUSTOMER_ID), CHANNEL)
        .distinct()
    )
