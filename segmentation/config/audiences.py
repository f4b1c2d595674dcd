"""The ``audiences`` section: audiences built from segments (``jobs/build_audiences.py``), the
consent and suppression inputs that filter them, their holdout groups, file exports, and how a
campaign is measured (``jobs/measure_campaign.py``)."""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import Field, model_validator

from segmentation.config.identity import Identifier
from segmentation.config.types import (
    Bool,
    EventFormat,
    Float,
    FrozenMap,
    Int,
    Str,
    _FrozenDict,
    _require,
    _Section,
    strip_blank,
)

__all__ = [
    "AudienceConfig",
    "AudiencesConfig",
    "ConsentSourceConfig",
    "ExportConfig",
    "MeasurementConfig",
    "SuppressionSourceConfig",
]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_HOLDOUT_SHARE = 0.5


class ConsentSourceConfig(_Section):
    """Consent records: one row per customer (or address), channel and change of consent."""

    path: Str | None = None
    format: EventFormat = "delta"
    options: FrozenMap[Str] = Field(default_factory=_FrozenDict)
    customer_id: Str = "customer_id"
    channel: Str = "channel"
    status: Str = "status"
    updated_at: Str = "updated_at"
    opt_in_values: tuple[Str, ...] = (
        "opt_in", "opted_in", "in", "subscribed", "granted", "yes", "y", "true", "1",
    )  # fmt: skip
    opt_out_values: tuple[Str, ...] = (
        "opt_out", "opted_out", "out", "unsubscribed", "revoked", "denied", "no", "n", "false",
        "0",
    )  # fmt: skip
    identifiers: tuple[Identifier, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Self:
        ins = {strip_blank(v).lower() for v in self.opt_in_values}
        outs = {strip_blank(v).lower() for v in self.opt_out_values}
        _require(
            not ins & outs,
            f"audiences.consent.opt_in_values and opt_out_values both list {sorted(ins & outs)}",
        )
        _require(bool(ins) and bool(outs), "audiences.consent needs opt-in and opt-out values")
        return self


class SuppressionSourceConfig(_Section):
    """Customers never to contact (complaints, legal holds, staff): one row per customer."""

    path: Str | None = None
    format: EventFormat = "delta"
    options: FrozenMap[Str] = Field(default_factory=_FrozenDict)
    customer_id: Str = "customer_id"
    channel: Str | None = None


class AudienceConfig(_Section):
    """One audience: members of some segments of a segmentation, for one channel."""

    name: Str
    model_name: Str | None = None
    segments: tuple[Int | Str, ...] = ()
    condition: Str | None = None
    channel: Str = "email"
    holdout_share: Float = 0.1

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(
            bool(_NAME.match(self.name)),
            f"audiences.definitions: name {self.name!r} must be lower-case a-z, 0-9 and _, "
            "starting with a letter (it names files, a hash salt and a table partition)",
        )
        key = f"audiences.definitions[{self.name}]"
        _require(bool(self.segments), f"{key}.segments must list at least one segment id or name")
        _require(
            0 <= self.holdout_share <= MAX_HOLDOUT_SHARE,
            f"{key}.holdout_share must be in [0, {MAX_HOLDOUT_SHARE}] (a share of the audience "
            f"held back as the control group), got {self.holdout_share}",
        )
        _require(bool(strip_blank(self.channel)), f"{key}.channel must name a channel")
        _require(
            self.condition is None or bool(strip_blank(self.condition)),
            f"{key}.condition must be a Spark SQL predicate or null, not blank",
        )
        return self


class ExportConfig(_Section):
    """Files of each audience's treatment group, for tools without warehouse access."""

    format: Literal["csv", "parquet"] | None = None
    path: Str | None = None


class MeasurementConfig(_Section):
    """How ``jobs/measure_campaign.py`` reads a campaign's outcome."""

    confidence: Float = 0.95
    power: Float = 0.8
    target_relative_lift: Float = 0.1

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(0.5 < self.confidence < 1, "audiences.measurement.confidence must be in (0.5, 1)")
        _require(0 < self.power < 1, "audiences.measurement.power must be in (0, 1)")
        _require(
            self.target_relative_lift > 0, "audiences.measurement.target_relative_lift must be > 0"
        )
        return self


class AudiencesConfig(_Section):
    """Audiences, their consent, holdout groups and measurement."""

    definitions: tuple[AudienceConfig, ...] = ()
    require_consent: Bool = False
    global_holdout_share: Float = 0.0
    salt: Str = "segmentation-audiences"
    consent: ConsentSourceConfig = Field(default_factory=ConsentSourceConfig)
    suppression: SuppressionSourceConfig = Field(default_factory=SuppressionSourceConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    measurement: MeasurementConfig = Field(default_factory=MeasurementConfig)
    max_sensitive_gap: Float = 0.2

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = [a.name for a in self.definitions]
        repeated = sorted({n for n in names if names.count(n) > 1})
        _require(not repeated, f"audiences.definitions repeats the name(s) {repeated}")
        _require(
            0 <= self.global_holdout_share <= MAX_HOLDOUT_SHARE,
            f"audiences.global_holdout_share must be in [0, {MAX_HOLDOUT_SHARE}], got "
            f"{self.global_holdout_share}",
        )
        _require(bool(self.salt.strip()), "audiences.salt must not be blank")
        _require(0 < self.max_sensitive_gap <= 1, "audiences.max_sensitive_gap must be in (0, 1]")
        return self

    def named(self, name: str) -> AudienceConfig | None:
        return next((a for a in self.definitions if a.name == name), None)
