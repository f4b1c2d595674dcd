"""The ``input`` section: where the user's events and customers are and how to read them."""

from __future__ import annotations

import zoneinfo
from typing import ClassVar, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from segmentation.config.types import (
    EventFormat,
    Float,
    FrozenMap,
    Str,
    _FrozenDict,
    _require,
    _Section,
    strip_blank,
)

# Thousands separators a text amount may use: point, comma, apostrophe (Swiss), space, no-break
# space and narrow no-break space (French).
THOUSANDS_SEPARATORS = (".", ",", "'", " ", "\u00a0", "\u202f")
DecimalSeparator = Literal[".", ","]
NegativeAmounts = Literal["reject", "return"]


class EventColumns(_Section):
    customer_id: Str = "customer_id"
    event_time: Str = "event_time"
    amount: Str = "amount"
    event_type: Str | None = "event_type"
    category: Str | None = "category"
    channel: Str | None = "channel"
    device: Str | None = "device"
    quantity: Str | None = "quantity"
    discount: Str | None = "discount"
    event_id: Str | None = "event_id"

    REQUIRED: ClassVar[tuple[str, ...]] = ("customer_id", "event_time", "amount")

    def mapped(self) -> dict[str, str]:
        """Canonical name -> the user's column name, for every column that is mapped."""
        return {
            name: getattr(self, name)
            for name in type(self).model_fields
            if getattr(self, name) is not None
        }

    @model_validator(mode="after")
    def _check(self) -> Self:
        for required in self.REQUIRED:
            _require(
                bool(getattr(self, required)),
                f"input.events.columns.{required} must name a column (it is required)",
            )
        return self


class EventTypes(_Section):
    model_config = ConfigDict(populate_by_name=True)

    order: tuple[Str, ...] = ("order", "purchase", "sale")
    # `return` is a keyword: the YAML key "return" maps here.
    return_: tuple[Str, ...] = Field(default=("return", "refund"), alias="return")
    visit: tuple[Str, ...] = ("visit", "view", "session")


class EventSourceConfig(_Section):
    path: Str | None = None
    format: EventFormat = "delta"
    options: FrozenMap[Str] = Field(default_factory=_FrozenDict)
    columns: EventColumns = Field(default_factory=EventColumns)
    timestamp_format: Str | None = None
    # The business's IANA time zone: calendar days (as_of, windows, recency) are its days.
    time_zone: Str = "UTC"
    # How text amounts (and quantities, discounts) are written.
    decimal_separator: DecimalSeparator = "."
    thousands_separator: Str | None = None
    currency_symbols: tuple[Str, ...] = ()
    negative_amounts: NegativeAmounts = "reject"
    event_types: EventTypes = Field(default_factory=EventTypes)

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(
            _is_time_zone(self.time_zone),
            f"input.events.time_zone must be an IANA time zone name such as UTC, "
            f"Europe/Amsterdam or America/New_York, got {self.time_zone!r}",
        )
        sep = self.thousands_separator
        _require(
            sep is None or sep in THOUSANDS_SEPARATORS,
            f"input.events.thousands_separator must be null or one of "
            f"{list(THOUSANDS_SEPARATORS)}, got {sep!r}",
        )
        _require(
            sep != self.decimal_separator,
            "input.events.thousands_separator must differ from input.events.decimal_separator "
            f"(both {sep!r})",
        )
        for symbol in self.currency_symbols:
            _require(
                bool(symbol.strip()) and not any(ch.isdigit() for ch in symbol)
                and symbol.strip() not in (".", ",", "+", "-"),
                f"input.events.currency_symbols: {symbol!r} is not a currency symbol (no digits, "
                "separators or signs)",
            )  # fmt: skip
        return self


def _is_time_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


class CustomersSourceConfig(_Section):
    """The customers dimension: one row per customer with descriptive attributes."""

    path: Str | None = None
    format: EventFormat = "delta"
    options: FrozenMap[Str] = Field(default_factory=_FrozenDict)
    customer_id: Str = "customer_id"
    # A job joining the dimension warns when fewer of its customers are found in it.
    min_match_share: Float = 0.9
    # How yes/no attributes (b2b.business_column) are written as text (compared trimmed and
    # lower-cased); any other text is unparseable, counted and reported.
    true_values: tuple[Str, ...] = ("true", "yes", "y", "t", "1", "b2b", "business")
    false_values: tuple[Str, ...] = ("false", "no", "n", "f", "0", "b2c", "consumer", "private")

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(
            0 <= self.min_match_share <= 1,
            "input.customers.min_match_share must be in [0, 1] (a share of customers)",
        )
        both = {strip_blank(v).lower() for v in self.true_values} & {
            strip_blank(v).lower() for v in self.false_values
        }
        _require(
            not both,
            f"input.customers.true_values and false_values both list {sorted(both)}",
        )
        return self


class InputConfig(_Section):
    events: EventSourceConfig = Field(default_factory=EventSourceConfig)
    customers: CustomersSourceConfig = Field(default_factory=CustomersSourceConfig)
