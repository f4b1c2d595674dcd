"""The customers dimension: reading it with the events' id normalisation, and how many of a
job's customers it holds (every job that joins it reports that share)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import CustomersSourceConfig, SurveySourceConfig
from segmentation.errors import InputError
from segmentation.inputs import columns, parsing, sources
from segmentation.storage import tables

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DimensionMatch:
    """How many of a job's customers the customers dimension holds."""

    customers: int
    matched: int
    min_share: float

    @property
    def share(self) -> float:
        return self.matched / self.customers if self.customers else 1.0

    @property
    def ok(self) -> bool:
        return self.share >= self.min_share

    def text(self) -> str:
        """``1,234 of 1,300 customers (94.9%) found in the customers dimension``, plus a
        warning below ``input.customers.min_match_share``."""
        line = (
            f"{self.matched:,} of {self.customers:,} customers ({self.share:.1%}) found in the "
            "customers dimension"
        )
        if self.ok:
            return line
        return (
            f"{line}; WARNING: below input.customers.min_match_share ({self.min_share:.0%}): "
            "check that both use the same customer ids (input.customers.customer_id)"
        )


def match_dimension(
    customer_ids: DataFrame, customers: DataFrame, *, min_share: float
) -> DimensionMatch:
    """The share of ``customer_ids`` (one row per customer) found in the dimension, counted in
    one aggregation; below ``min_share`` it is logged as a warning.

    Args:
        customer_ids: the job's customers (a ``customer_id`` column, one row each).
        customers: the dimension, as :func:`read_customers` returns it.
        min_share: ``input.customers.min_match_share``.
    """
    found = customers.select(tables.CUSTOMER_ID, F.lit(True).alias("_found"))
    row = (
        customer_ids.select(tables.CUSTOMER_ID)
        .join(found, on=tables.CUSTOMER_ID, how="left")
        .agg(F.count(F.lit(1)).alias("n"), F.count("_found").alias("matched"))
        .first()
    )
    assert row is not None
    match = DimensionMatch(int(row["n"]), int(row["matched"]), min_share)
    if not match.ok:
        log.warning("%s", match.text())
    return match


def read_customers(
    spark: SparkSession, source: CustomersSourceConfig, path: str | None
) -> DataFrame | None:
    """The customers dimension with ``customer_id`` as text normalised like the events' ids
    (``parsing.customer_id``: 17850.0 and 17850 are both ``"17850"``), or None without one.

    A configured path that cannot be read is an error; the generator's default table that does
    not exist (yet) just means there is no dimension.

    Raises:
        InputError: unreadable path, missing id column, ids that are not integral or not exact
            (examples given), or customer ids that repeat (the count and examples).
    """
    if path is None:
        return None
    if "://" not in path and not os.path.exists(path):
        if source.path:
            raise InputError(f"input.customers.path {path} does not exist")
        return None
    return _read_per_customer(spark, source, path, "customers dimension", "input.customers")


def read_survey(spark: SparkSession, source: SurveySourceConfig, path: str) -> DataFrame:
    """The survey table (one row per respondent), ``customer_id`` normalised as the events' ids
    are (``parsing.customer_id``); every other column as the source holds it. Rows without an
    id are kept (the survey step excludes and counts them).

    Raises:
        InputError: no table at ``path``, missing id column, ids that are not integral or not
            exact, or respondent ids that repeat.
    """
    if "://" not in path and not os.path.exists(path):
        hint = (
            "attitudes.survey.path" if source.path else
            "attitudes.survey.path is null: the generator's table; run `make run` or "
            "jobs/generate_events.py first"
        )  # fmt: skip
        raise InputError(f"survey table not found: {path} ({hint})")
    return _read_per_customer(spark, source, path, "survey table", "attitudes.survey")


def _read_per_customer(
    spark: SparkSession,
    source: CustomersSourceConfig | SurveySourceConfig,
    path: str,
    what: str,
    key: str,
) -> DataFrame:
    """One row per customer: the id column normalised and named ``customer_id``, the other
    columns as read; bad or repeated ids are an error naming ``{key}.customer_id``."""
    raw = sources.read_raw(spark, source, path)
    by_lower = {f.name.lower(): f for f in raw.schema.fields}
    id_field = by_lower.get(source.customer_id.lower())
    if id_field is None:
        raise InputError(
            f"{what} {path} has no column {source.customer_id!r} ({key}.customer_id); "
            f"columns: {', '.join(raw.columns)}"
        )
    id_col = id_field.name
    if columns.spark_family(id_field.dataType) not in ("string", "numeric"):
        raise InputError(
            f"column '{id_col}' ({key}.customer_id) must be text or a number, "
            f"found {id_field.dataType.simpleString()}"
        )
    parsed = parsing.customer_id(F.col(f"`{id_col}`"), id_field.dataType)
    rows = raw.select(
        parsed.value.alias("customer_id"),
        parsed.issue.alias(sources.ISSUE),
        *[F.col(f"`{c}`") for c in raw.columns if c != id_col and c.lower() != "customer_id"],
    )
    bad = rows.where(F.col(sources.ISSUE).isNotNull()).limit(5).collect()
    if bad:
        examples = ", ".join(f"{r['customer_id']} ({r[sources.ISSUE]})" for r in bad)
        raise InputError(
            f"{what} {path}: column '{id_col}' ({key}.customer_id) holds "
            f"ids that are not whole numbers, or too large to be exact as floating point: "
            f"{examples}. Export the ids as text or integers."
        )
    rows = rows.drop(sources.ISSUE)
    repeated = (
        rows.where(F.col("customer_id").isNotNull())
        .groupBy("customer_id")
        .count()
        .where(F.col("count") > 1)
        .limit(5)
        .collect()
    )
    if repeated:
        examples = ", ".join(f"{r['customer_id']!r} ({r['count']} rows)" for r in repeated)
        raise InputError(f"{what} {path} must hold one row per customer; repeated ids: {examples}")
    return rows
