"""Scoring every customer in Spark: P(alive), expected purchases, expected order value, CLV.

* P(alive) and the Gamma-Gamma expected order value are closed forms: Spark built-ins.
* The expected purchases over the horizon need the Gaussian hypergeometric function, which
  Spark has no built-in for; it is summed by an Arrow-vectorised pandas UDF calling the same
  numpy code the fit's tests check against mpmath (``btyd.expected_purchases``). The choice
  was measured against a built-in series (``aggregate`` over ``sequence``): see BENCHMARKS.md.

CLV over the horizon ``H`` (in the time unit) with margin ``m`` and annual discount rate ``d``:
the horizon is cut into months (365.25 / 12 days; the last step may be shorter), and

    clv = m * E[order value] * sum_i (E[Y(t_i)] - E[Y(t_{i-1})]) / (1 + d) ** (t_i in years)

where ``E[Y(t)]`` is the customer's expected purchases in ``(T, T + t]`` (as lifetimes'
``customer_lifetime_value`` does, with an annual rather than a monthly rate).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.value import btyd
from segmentation.value.summary import UNIT_DAYS

MONTH_DAYS = 365.25 / 12
YEAR_DAYS = 365.25
NO_CONVERGENCE = "expectation_did_not_converge"


@dataclass(frozen=True)
class ValueModel:
    """A fitted value model: what scoring needs, and what the registry keeps (as JSON)."""

    model: btyd.CountModel
    counts: Mapping[str, float]
    """r, alpha, a, b."""
    spend: Mapping[str, float]
    """p, q, gamma."""
    time_unit: str
    horizon_periods: float
    margin: float
    discount_rate: float
    spend_basis: str = "gross"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ValueModel:
        data = json.loads(text)
        return cls(**data)

    @property
    def population_order_value(self) -> float:
        p, q, gamma = (self.spend[k] for k in btyd.SPEND_PARAMETERS)
        return p * gamma / (q - 1)

    def steps(self) -> list[tuple[float, float]]:
        """(t_i in the time unit, t_i in years) at the end of every month of the horizon."""
        unit = UNIT_DAYS[self.time_unit]
        horizon_days = self.horizon_periods * unit
        n = max(1, math.ceil(horizon_days / MONTH_DAYS - 1e-9))
        ends = [min((i + 1) * MONTH_DAYS, horizon_days) for i in range(n)]
        return [(d / unit, d / YEAR_DAYS) for d in ends]


def expectations(vm: ValueModel, x, t_x, big_t) -> tuple[np.ndarray, np.ndarray]:
    """Expected purchases over the horizon and their discounted sum by month, per customer
    (NaN where the series did not converge)."""
    previous = np.zeros(np.shape(x))
    discounted = np.zeros(np.shape(x))
    expected = previous
    for t, years in vm.steps():
        expected = btyd.expected_purchases(vm.model, vm.counts, t, x, t_x, big_t)
        discounted = discounted + (expected - previous) / (1 + vm.discount_rate) ** years
        previous = expected
    return expected, discounted


def predict(vm: ValueModel, frame: pd.DataFrame) -> pd.DataFrame:
    """Every expectation for a pandas frame of ``x``, ``t_x``, ``T``, ``repeat_value``: the
    registered model's ``predict`` and the reference the Spark scoring is tested against."""
    x, t_x, big_t = (frame[c].to_numpy(dtype=np.float64) for c in ("x", "t_x", "T"))
    m = frame["repeat_value"].to_numpy(dtype=np.float64, na_value=np.nan)
    expected, discounted = expectations(vm, x, t_x, big_t)
    value = btyd.expected_order_value(vm.spend, x, m)
    return pd.DataFrame(
        {
            "p_alive": btyd.p_alive(vm.model, vm.counts, x, t_x, big_t),
            "expected_purchases": expected,
            "expected_order_value": value,
            "clv": vm.margin * value * discounted,
        }
    )


def _p_alive(vm: ValueModel) -> Column:
    r, alpha, a, b = (F.lit(vm.counts[k]) for k in btyd.COUNT_PARAMETERS)
    x, t_x, big_t = F.col("x").cast("double"), F.col("t_x"), F.col("T")
    denom = b + x - 1 if vm.model == "bg_nbd" else b + x
    log_odds = F.log(a) - F.log(denom) + (r + x) * (F.log(alpha + big_t) - F.log(alpha + t_x))
    alive = 1.0 / (1.0 + F.exp(F.least(log_odds, F.lit(700.0))))
    return F.when(F.col("x") == 0, F.lit(1.0)).otherwise(alive) if vm.model == "bg_nbd" else alive


def _order_value(vm: ValueModel) -> Column:
    p, q = vm.spend["p"], vm.spend["q"]
    x, m = F.col("x").cast("double"), F.col("repeat_value")
    usable = (F.col("x") > 0) & m.isNotNull() & (m > 0)
    weight = F.when(usable, F.lit(p) * x / (F.lit(p) * x + F.lit(q - 1))).otherwise(0.0)
    own = F.when(usable, m).otherwise(0.0)
    return (1 - weight) * F.lit(vm.population_order_value) + weight * own


_EXPECTED = T.StructType(
    [T.StructField("expected", T.DoubleType()), T.StructField("discounted", T.DoubleType())]
)


def _expected_udf(vm: ValueModel):
    @F.pandas_udf(_EXPECTED)  # type: ignore[call-overload]
    def expected(x: pd.Series, t_x: pd.Series, big_t: pd.Series) -> pd.DataFrame:
        e, d = expectations(vm, x.to_numpy(np.float64), t_x.to_numpy(np.float64),
                            big_t.to_numpy(np.float64))  # fmt: skip
        return pd.DataFrame({"expected": e, "discounted": d})

    return expected


def score(summary: DataFrame, vm: ValueModel) -> DataFrame:
    """``summary`` (``summary.summarise``) with ``p_alive``, ``expected_purchases``,
    ``expected_order_value``, ``clv``, ``time_unit``, ``horizon_periods``; a customer whose
    expectation did not converge has null expected purchases and CLV and the flag
    ``NO_CONVERGENCE`` (a non-positive net repeat spend keeps its own flag and is valued at the
    population's mean order value)."""
    e = _expected_udf(vm)(F.col("x").cast("double"), F.col("t_x"), F.col("T"))
    scored = summary.select("*", e.alias("_e"), _order_value(vm).alias("expected_order_value"))
    finite = ~F.isnan(F.col("_e.expected"))
    return scored.select(
        *[c for c in summary.columns if c != "flag"],  # the flag is recomputed
        _p_alive(vm).alias("p_alive"),
        F.when(finite, F.col("_e.expected")).alias("expected_purchases"),
        "expected_order_value",
        F.when(finite, F.lit(vm.margin) * F.col("expected_order_value") * F.col("_e.discounted"))
        .alias("clv"),
        F.lit(vm.time_unit).alias("time_unit"),
        F.lit(float(vm.horizon_periods)).alias("horizon_periods"),
        F.coalesce(F.col("flag"), F.when(~finite, F.lit(NO_CONVERGENCE))).alias("flag"),
    )  # fmt: skip
