"""Validating the purchase model as the literature does: a calibration/holdout backtest.

The count model is refitted on the summary as of ``as_of - holdout`` (the calibration period)
and asked how many purchases each of those customers makes in the holdout ``(calibration end,
as_of]``; the answer is compared with what they did (Fader, Hardie & Lee 2005, section 4):

* per customer: the sum of predicted and actual purchases, the mean absolute error and the
  correlation;
* the "calibration frequency vs holdout" table: customers grouped by their calibration ``x``
  (0 to 7, then 7+), the mean actual and predicted holdout purchases (FHL figure 3);
* the cumulative tracking curve: repeat purchases of the calibration cohort over calendar time,
  actual against expected (FHL figure 2), the expectation being the sum over customers of
  ``E[X(t - first purchase)]``.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.config import ValueConfig
from segmentation.storage.tables import CUSTOMER_ID
from segmentation.value import btyd
from segmentation.value.summary import DAY, UNIT_DAYS, holdout_purchases, summarise

TOP_BUCKET = 7


@dataclass
class Backtest:
    """The backtest's outcome (``skipped`` says why there is none)."""

    calibration_end: dt.date | None = None
    holdout_periods: float = 0.0
    customers: int = 0
    actual: float = 0.0
    predicted: float = 0.0
    mean_absolute_error: float = 0.0
    correlation: float | None = None
    by_frequency: list[dict[str, Any]] = field(default_factory=list)
    tracking: list[dict[str, Any]] = field(default_factory=list)
    fit: btyd.Fit | None = None
    skipped: str | None = None

    def measures(self) -> dict[str, float]:
        """The backtest's figures as MLflow metrics."""
        if self.skipped is not None:
            return {}
        out = {"backtest_customers": float(self.customers),
               "backtest_actual_purchases": self.actual,
               "backtest_predicted_purchases": self.predicted,
               "backtest_mae": self.mean_absolute_error}  # fmt: skip
        if self.correlation is not None:
            out["backtest_correlation"] = self.correlation
        return out


def _expected_udf(model: btyd.CountModel, fit: dict[str, float], t: float):
    @F.pandas_udf(T.DoubleType())  # type: ignore[call-overload]
    def expected(x: pd.Series, t_x: pd.Series, big_t: pd.Series) -> pd.Series:
        values = btyd.expected_purchases(
            model,
            fit,
            t,
            x.to_numpy(np.float64),
            t_x.to_numpy(np.float64),
            big_t.to_numpy(np.float64),
        )
        return pd.Series(values)  # fmt: skip

    return expected


def run(days: DataFrame, vc: ValueConfig, *, as_of: dt.date) -> Backtest:
    """The backtest on ``days`` (``summary.purchase_days``, cached by the caller)."""
    unit = UNIT_DAYS[vc.time_unit]
    holdout_days = round(vc.holdout_periods * unit)
    if holdout_days <= 0:
        return Backtest(skipped="value.holdout_periods is 0")
    end = as_of - dt.timedelta(days=holdout_days)
    first = days.where(F.col("has_order")).agg(F.min(DAY)).first()
    needed = end - dt.timedelta(days=round(vc.min_calibration_periods * unit))
    if first is None or first[0] is None or first[0] > needed:
        return Backtest(
            skipped=f"too little history: purchases start on {first[0] if first else None}; a "
            f"calibration period ending {end} (as_of - value.holdout_periods) needs them from "
            f"{needed} (value.min_calibration_periods)"
        )
    cal = summarise(days, as_of=end, unit=vc.time_unit).cache()
    try:
        return _judge(days, cal, vc, as_of=as_of, end=end, holdout=holdout_days / unit)
    finally:
        cal.unpersist()


def _judge(
    days: DataFrame, cal: DataFrame, vc: ValueConfig, *, as_of: dt.date, end: dt.date,
    holdout: float,
) -> Backtest:  # fmt: skip
    grouped = cal.groupBy("x", "t_x", "T").count().collect()
    x, t_x, big_t, w = (np.array([r[i] for r in grouped], dtype=np.float64) for i in range(4))
    fit = btyd.fit_counts(vc.model, x, t_x, big_t, w)
    actual = holdout_purchases(days, start=end, end=as_of)
    expected = _expected_udf(vc.model, dict(fit.estimates), holdout)
    judged = cal.join(actual, on=CUSTOMER_ID, how="left").select(
        F.least(F.col("x"), F.lit(TOP_BUCKET)).alias("bucket"),
        F.coalesce(F.col("holdout_purchases"), F.lit(0)).cast("double").alias("actual"),
        expected(F.col("x").cast("double"), F.col("t_x"), F.col("T")).alias("predicted"),
    )
    totals = judged.agg(
        F.count(F.lit(1)).alias("n"), F.sum("actual").alias("actual"),
        F.sum("predicted").alias("predicted"),
        F.avg(F.abs(F.col("actual") - F.col("predicted"))).alias("mae"),
        F.corr("actual", "predicted").alias("corr"),
    ).first()  # fmt: skip
    assert totals is not None
    buckets = (
        judged.groupBy("bucket")
        .agg(F.count(F.lit(1)).alias("customers"), F.avg("actual").alias("actual"),
             F.avg("predicted").alias("predicted"))
        .orderBy("bucket").collect()
    )  # fmt: skip
    corr = totals["corr"]
    return Backtest(
        calibration_end=end, holdout_periods=holdout, customers=int(totals["n"]),
        actual=float(totals["actual"]), predicted=float(totals["predicted"]),
        mean_absolute_error=float(totals["mae"]),
        correlation=None if corr is None or math.isnan(corr) else float(corr),
        by_frequency=[
            {"x": f"{b['bucket']}+" if b["bucket"] == TOP_BUCKET else str(b["bucket"]),
             "customers": int(b["customers"]), "actual": float(b["actual"]),
             "predicted": float(b["predicted"])}
            for b in buckets
        ],
        tracking=_tracking(days, vc, fit, end=end, as_of=as_of), fit=fit,
    )  # fmt: skip


def _tracking(
    days: DataFrame, vc: ValueConfig, fit: btyd.Fit, *, end: dt.date, as_of: dt.date
) -> list[dict[str, Any]]:
    """Cumulative repeat purchases of the customers whose first purchase is on or before the
    calibration end, by period (``value.time_unit``) over calendar time: actual and expected."""
    orders = days.where(F.col("has_order"))
    first = orders.groupBy(CUSTOMER_ID).agg(F.min(DAY).alias("first"))
    cohort = first.where(F.col("first") <= F.lit(end))
    cohorts = cohort.groupBy("first").count().collect()
    repeats = (
        orders.join(cohort, on=CUSTOMER_ID, how="inner")
        .where((F.col(DAY) > F.col("first")) & (F.col(DAY) <= F.lit(as_of)))
        .groupBy(DAY).count().collect()
    )  # fmt: skip
    if not cohorts:
        return []
    unit = UNIT_DAYS[vc.time_unit]
    start = min(r["first"] for r in cohorts)
    span = (as_of - start).days
    ends = [start + dt.timedelta(days=round(i * unit)) for i in range(1, int(span / unit) + 1)]
    if not ends or ends[-1] < as_of:
        ends.append(as_of)
    firsts = np.array([(r["first"] - start).days for r in cohorts], dtype=np.float64)
    sizes = np.array([r["count"] for r in cohorts], dtype=np.float64)
    repeat_days = np.array([(r[DAY] - start).days for r in repeats], dtype=np.float64)
    repeat_counts = np.array([r["count"] for r in repeats], dtype=np.float64)
    offsets = np.array([(day - start).days for day in ends], dtype=np.float64)
    # Every (period end, cohort) pair in one vectorised evaluation.
    age = np.maximum(offsets[:, None] - firsts[None, :], 0.0) / unit
    per_cohort = btyd.expected_purchases_new(vc.model, fit.estimates, age.ravel())
    expected = (per_cohort.reshape(age.shape) * sizes[None, :]).sum(axis=1)
    rows = []
    for day, d, e in zip(ends, offsets, expected, strict=True):
        actual = float(repeat_counts[repeat_days <= d].sum())
        rows.append({"period_end": day.isoformat(), "actual": actual, "expected": float(e),
                     "holdout": day > end})  # fmt: skip
    return rows
