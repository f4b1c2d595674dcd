"""Fitting the value models on the driver from sufficient statistics computed in Spark.

Purchase counts: customers with identical ``(x, t_x, T)`` are one row with a weight (one Spark
aggregation), so the BG/NBD likelihood is exact however many customers there are; spend: one
``(x, mean repeat value)`` row per repeat buyer. Above ``value.fit_max_customers`` customers
both are taken from a seeded hash sample of customers (about that many), recorded as
``fit_customer_share``. Every problem the data can cause is a clear error naming it: too few
customers, too few repeat buyers, a fit that does not converge, ``q <= 1`` (Gamma-Gamma's mean
spend is then infinite).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.config import ValueConfig
from segmentation.errors import InputError
from segmentation.storage.tables import CUSTOMER_ID
from segmentation.value import btyd
from segmentation.value.scoring import ValueModel
from segmentation.value.summary import NON_POSITIVE_SPEND

log = logging.getLogger(__name__)
_BUCKETS = 1_000_000
SPEND_BOUNDARY_P = 1e4
"""Gamma-Gamma's shape p beyond this is its limit p -> infinity (no variation of a customer's
spend between purchases): a flagged result, not a failed fit."""


@dataclass
class FittedValue:
    """Both fits, the model that scores with them, and what the data said about them."""

    counts: btyd.Fit
    spend: btyd.Fit
    model: ValueModel
    customers: int
    repeat_buyers: int
    fit_share: float
    """The share of customers the fits saw (1.0: all)."""
    non_positive_spend: int
    """Repeat buyers left out of the spend fit: their (net) repeat spend is not positive."""
    spend_frequency_correlation: float
    notes: list[str] = field(default_factory=list)


def _sample(summary: DataFrame, share: float, seed: int) -> DataFrame:
    if share >= 1.0:
        return summary
    bucket = F.pmod(F.xxhash64(F.col(CUSTOMER_ID), F.lit(seed)), F.lit(_BUCKETS))
    return summary.where(bucket < F.lit(max(1, round(share * _BUCKETS))))


def fit(summary: DataFrame, vc: ValueConfig, *, customers: int | None = None) -> FittedValue:
    """Fit the count model (``value.model``) and Gamma-Gamma on ``summary``
    (``summary.summarise``).

    Raises:
        InputError: fewer than ``value.min_customers`` customers or ``value.min_repeat_buyers``
            repeat buyers with a positive repeat spend, a fit that did not converge, or
            ``q <= 1``.
    """
    n = summary.count() if customers is None else customers
    if n < vc.min_customers:
        raise InputError(
            f"only {n} customer(s) with a purchase: the value models need at least "
            f"{vc.min_customers} (value.min_customers); check features.as_of and the events"
        )
    share = 1.0 if vc.fit_max_customers is None else min(1.0, vc.fit_max_customers / n)
    used = _sample(summary, share, vc.seed)
    grouped = used.groupBy("x", "t_x", "T").count().collect()
    x, t_x, big_t, w = (np.array([r[i] for r in grouped], dtype=np.float64) for i in range(4))
    counts = btyd.fit_counts(vc.model, x, t_x, big_t, w)
    _check_converged(counts, vc)
    spend, sx, sm, bad = _fit_spend(used, vc)
    corr = float(np.corrcoef(sx, sm)[0, 1]) if len(sx) > 2 and sm.std() > 0 else 0.0
    notes = _notes(vc, share, bad, corr)
    if "boundary" in spend.notes:
        notes.insert(0, (
            f"Gamma-Gamma reached its boundary (p = {spend['p']:.3g} -> infinity): each "
            "customer's spend varies far less between purchases than across customers, so a "
            "repeat buyer's expected order value is their own mean (the model's limit) and the "
            "spend parameters have no standard errors"
        ))  # fmt: skip
    for note in notes:
        log.warning("%s", note)
    model = ValueModel(
        model=vc.model, counts=dict(counts.estimates), spend=dict(spend.estimates),
        time_unit=vc.time_unit, horizon_periods=vc.horizon_periods, margin=vc.margin,
        discount_rate=vc.discount_rate, spend_basis=vc.spend,
    )  # fmt: skip
    return FittedValue(counts, spend, model, n, len(sx), share, bad, corr, notes)


def _fit_spend(used: DataFrame, vc: ValueConfig) -> tuple[btyd.Fit, np.ndarray, np.ndarray, int]:
    """Gamma-Gamma on the repeat buyers with a positive repeat spend: the fit, their ``x`` and
    mean repeat values, and how many were left out (non-positive spend)."""
    spend_rows = used.where(F.col("x") > 0).select("x", "repeat_value", "flag").collect()
    usable = [(r["x"], r["repeat_value"]) for r in spend_rows if r["flag"] != NON_POSITIVE_SPEND]
    bad = len(spend_rows) - len(usable)
    if len(usable) < vc.min_repeat_buyers:
        raise InputError(
            f"{len(usable)} repeat buyer(s) with a positive repeat spend ({bad} with a "
            f"non-positive {vc.spend} repeat spend): Gamma-Gamma needs at least "
            f"{vc.min_repeat_buyers} (value.min_repeat_buyers). Customers who buy once cannot "
            "tell the model how spend varies; use a longer history or value.spend: gross"
        )
    sx = np.array([u[0] for u in usable], dtype=np.float64)
    sm = np.array([u[1] for u in usable], dtype=np.float64)
    spend = btyd.fit_spend(sx, sm)
    if spend["p"] > SPEND_BOUNDARY_P:
        spend = dataclasses.replace(
            spend, std_errors=dict.fromkeys(spend.estimates, math.nan), converged=False,
            notes=("boundary",),
        )  # fmt: skip
    else:
        _check_converged(spend, vc)
    if spend["q"] <= 1:
        raise InputError(
            f"Gamma-Gamma estimated q = {spend['q']:.3f} <= 1: the model's mean spend is "
            "infinite, so no expected order value exists; the spend is too heavy-tailed for "
            "Gamma-Gamma (look for outliers in the amounts, or use value.spend: gross)"
        )
    return spend, sx, sm, bad


def _check_converged(result: btyd.Fit, vc: ValueConfig) -> None:
    if result.converged:
        return
    at = {k: round(v, 6) for k, v in result.estimates.items()}
    raise InputError(
        f"the {result.model} fit did not converge ({result.message}; log-likelihood "
        f"{result.log_likelihood:.4g} at {at}"
        f"): the data may not follow the model (value.model {vc.model}, value.time_unit "
        f"{vc.time_unit}); check for a few customers with extreme purchase counts"
    )


def _notes(vc: ValueConfig, share: float, bad: int, corr: float) -> list[str]:
    notes = []
    if share < 1.0:
        notes.append(
            f"value models fitted on a {share:.1%} seeded sample of customers "
            f"(value.fit_max_customers {vc.fit_max_customers}); every customer is scored"
        )
    if bad:
        notes.append(
            f"{bad} repeat buyer(s) with a non-positive {vc.spend} repeat spend left out of the "
            f"Gamma-Gamma fit and valued at the population's mean order value "
            f"(flag {NON_POSITIVE_SPEND})"
        )
    if abs(corr) > vc.independence_max_correlation:
        notes.append(
            f"Gamma-Gamma assumes spend is independent of purchase frequency, but their "
            f"correlation among repeat buyers is {corr:.2f} (above "
            f"value.independence_max_correlation {vc.independence_max_correlation}): read the "
            "expected order values with care"
        )
    return notes
