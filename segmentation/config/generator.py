"""The ``generator`` section: the bundled sample's sizes, seed, dates and planted structure."""

from __future__ import annotations

import datetime as dt
from typing import Self

from pydantic import model_validator

from segmentation.config.types import Bool, Date, Float, Int, _require, _Section

__all__ = ["GeneratorConfig"]


class GeneratorConfig(_Section):
    customers: Int = 20000
    events: Int = 1_000_000
    seed: Int = 42
    start_date: Date = dt.date(2023, 1, 1)
    end_date: Date = dt.date(2025, 12, 31)
    partitions: Int | None = None
    overlap: Float = 0.0
    survey_share: Float = 0.5
    survey_missing_share: Float = 0.05
    # Plant several identifiers per customer (cookies, devices, cards, emails, phones), the
    # sample's login edges and identity_truth; the events keep their clean customer_id.
    identities: Bool = False
    # Write the sample's consent records and suppression list (what make run's audience reads).
    consent: Bool = True

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(self.customers >= 1, "generator.customers must be >= 1")
        _require(0 <= self.overlap <= 1, "generator.overlap must be in [0, 1]")
        _require(0 <= self.survey_share <= 1, "generator.survey_share must be in [0, 1]")
        _require(
            0 <= self.survey_missing_share < 0.5,
            "generator.survey_missing_share must be in [0, 0.5)",
        )
        _require(self.events >= self.customers, "generator.events must be >= generator.customers")
        _require(
            self.end_date > self.start_date,
            "generator.end_date must be after generator.start_date",
        )
        _require(
            self.partitions is None or self.partitions >= 1, "generator.partitions must be >= 1"
        )
        return self
