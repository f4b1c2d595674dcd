"""The ``rfm`` and ``b2b`` sections: rule-based segmentations beside clustering."""

from __future__ import annotations

from typing import Self

from pydantic import model_validator

from segmentation.config.types import Bool, Float, Int, Str, _require, _Section


class RfmSegment(_Section):
    """A named cell range of the RFM map: inclusive [low, high] score ranges."""

    name: Str
    r: tuple[Int, ...] = (1, 5)
    f: tuple[Int, ...] = (1, 5)
    m: tuple[Int, ...] = (1, 5)


def _rfm(name: str, r: tuple[int, int], f: tuple[int, int]) -> RfmSegment:
    return RfmSegment(name=name, r=r, f=f)


# The widely used R x F map (the "RFM segments" grid), with Lost split off Hibernating.
DEFAULT_RFM_SEGMENTS = (
    _rfm("Champions", (5, 5), (4, 5)),
    _rfm("Loyal", (3, 4), (4, 5)),
    _rfm("Potential loyalists", (4, 5), (2, 3)),
    _rfm("New", (5, 5), (1, 1)),
    _rfm("Promising", (4, 4), (1, 1)),
    _rfm("Need attention", (3, 3), (3, 3)),
    _rfm("About to sleep", (3, 3), (1, 2)),
    _rfm("Can't lose them", (1, 2), (5, 5)),
    _rfm("At risk", (1, 2), (3, 4)),
    _rfm("Lost", (1, 1), (1, 1)),
    _rfm("Hibernating", (1, 2), (1, 2)),
)


class RfmConfig(_Section):
    enabled: Bool = True
    model_name: Str = "rfm"
    version: Int = 1
    recency_feature: Str = "recency_days"
    frequency_feature: Str = "frequency"
    monetary_feature: Str = "monetary_net"
    quantile_accuracy: Int = 10000
    segments: tuple[RfmSegment, ...] = DEFAULT_RFM_SEGMENTS
    # Customers without a purchase up to as_of (frequency_feature 0 or null) get this segment,
    # outside the score map.
    no_purchase_segment: Str = "No purchases"

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(self.quantile_accuracy >= 100, "rfm.quantile_accuracy must be >= 100")
        _require(len(self.segments) >= 1, "rfm.segments must list at least one segment")
        for i, seg in enumerate(self.segments):
            for score in ("r", "f", "m"):
                lo_hi = getattr(seg, score)
                _require(
                    len(lo_hi) == 2 and 1 <= lo_hi[0] <= lo_hi[1] <= 5,
                    f"rfm.segments[{i}].{score} ({seg.name}) must be [low, high] with "
                    f"1 <= low <= high <= 5, got {list(lo_hi)}",
                )
        uncovered = [
            (r, f, m)
            for r in range(1, 6)
            for f in range(1, 6)
            for m in range(1, 6)
            if not any(
                s.r[0] <= r <= s.r[1] and s.f[0] <= f <= s.f[1] and s.m[0] <= m <= s.m[1]
                for s in self.segments
            )
        ]
        _require(
            self.no_purchase_segment not in {s.name for s in self.segments},
            f"rfm.no_purchase_segment ({self.no_purchase_segment!r}) must differ from the "
            "names in rfm.segments",
        )
        cells = ", ".join(f"r={r} f={f} m={m}" for r, f, m in uncovered[:5])
        _require(
            not uncovered,
            f"rfm.segments leave {len(uncovered)} score cell(s) without a segment (e.g. "
            f"{cells}): every customer must get one; add a catch-all segment last",
        )
        return self


class B2bTier(_Section):
    """A tier rule: every criterion given must hold (null: no constraint)."""

    name: Str
    min_spend: Float | None = None
    min_employees: Int | None = None
    industries: tuple[Str, ...] | None = None


DEFAULT_B2B_TIERS = (
    B2bTier(name="Strategic", min_spend=20000.0),
    B2bTier(name="Strategic", min_spend=5000.0, min_employees=1000),
    B2bTier(name="Large", min_spend=5000.0),
    B2bTier(name="Large", min_employees=250),
    B2bTier(name="Medium", min_spend=1000.0),
    B2bTier(name="Medium", min_employees=50),
    B2bTier(name="Small"),
)


class B2bConfig(_Section):
    enabled: Bool = True
    model_name: Str = "b2b_tiers"
    version: Int = 1
    business_column: Str = "is_business"
    employees_column: Str | None = "employee_count"
    industry_column: Str | None = "industry"
    spend_feature: Str = "monetary_365d"
    tiers: tuple[B2bTier, ...] = DEFAULT_B2B_TIERS

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(len(self.tiers) >= 1, "b2b.tiers must list at least one tier")
        last = self.tiers[-1]
        _require(
            (last.min_spend, last.min_employees, last.industries) == (None, None, None),
            f"b2b.tiers: the last tier ({last.name}) must have no criteria, so that every "
            "business account gets a tier",
        )
        return self
