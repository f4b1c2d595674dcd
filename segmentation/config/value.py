"""The ``value`` section: customer value (BG/NBD or MBG/NBD purchase counts, Gamma-Gamma spend,
CLV) fitted and scored by ``jobs/customer_value.py``."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import model_validator

from segmentation.config.types import Bool, Float, Int, Str, _require, _Section

__all__ = ["ValueConfig"]


class ValueConfig(_Section):
    """Customer value: who will buy again, how much, and what each customer is worth."""

    enabled: Bool = True
    model_name: Str = "customer_value"
    model: Literal["bg_nbd", "mbg_nbd"] = "bg_nbd"
    time_unit: Literal["day", "week", "month"] = "week"
    horizon_periods: Float = 52.0
    margin: Float = 0.3
    discount_rate: Float = 0.1
    spend: Literal["gross", "net"] = "gross"
    fit_max_customers: Int | None = 1_000_000
    seed: Int = 42
    min_customers: Int = 100
    min_repeat_buyers: Int = 30
    holdout_periods: Float = 26.0
    min_calibration_periods: Float = 26.0
    independence_max_correlation: Float = 0.3
    at_risk_p_alive: Float = 0.5

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(self.horizon_periods > 0, "value.horizon_periods must be > 0")
        _require(0 < self.margin <= 1, "value.margin must be in (0, 1]: a share of revenue")
        _require(
            0 <= self.discount_rate < 1,
            "value.discount_rate must be in [0, 1): an annual rate such as 0.1",
        )
        _require(
            self.fit_max_customers is None or self.fit_max_customers >= 1000,
            "value.fit_max_customers must be >= 1000 (or null: every customer)",
        )
        _require(self.min_customers >= 10, "value.min_customers must be >= 10")
        _require(self.min_repeat_buyers >= 3, "value.min_repeat_buyers must be >= 3")
        _require(self.holdout_periods >= 0, "value.holdout_periods must be >= 0 (0: no backtest)")
        _require(self.min_calibration_periods > 0, "value.min_calibration_periods must be > 0")
        _require(
            0 < self.independence_max_correlation <= 1,
            "value.independence_max_correlation must be in (0, 1]",
        )
        _require(0 < self.at_risk_p_alive < 1, "value.at_risk_p_alive must be in (0, 1)")
        return self
