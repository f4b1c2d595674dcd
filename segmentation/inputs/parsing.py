"""Interpreting the user's raw values: customer ids, numbers and times, with Spark built-ins.

Every parser returns the canonical value and, where a value is present but cannot be
interpreted, an *issue*: the quarantine reason of its row. Nothing is guessed, rounded or read
at another scale: an id of 17850.5, an amount ``12,50`` where a decimal point is configured, or
a time that does not fit the configured pattern is an issue, never a nearby value.

* **Customer ids** are text. Integral numbers become their integer text, whatever the input
  type (``17850``, ``17850.0`` as DOUBLE and ``17850`` as DECIMAL all give ``"17850"``), so
  events and the customers dimension join however each export typed them. Text ids are kept
  as written (trimmed of every Unicode blank: :func:`trim_blank`): ``"00123"`` stays
  ``"00123"``, ``"C42\t"`` is ``"C42"``.
* **Numbers** in text follow ``input.events.decimal_separator``, ``thousands_separator`` and
  ``currency_symbols``; numeric columns are taken as they are.
* **Times** are instants (Spark TIMESTAMP, UTC session). Text with an offset or zone, epoch
  numbers and TIMESTAMP columns are instants already; text without an offset, TIMESTAMP_NTZ
  and DATE columns are wall-clock times of ``input.events.time_zone``. Calendar days are always
  that zone's days (:func:`local_date`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.config.types import BLANK, strip_blank
from segmentation.errors import InputError

NON_INTEGRAL_CUSTOMER_ID = "non_integral_customer_id"
INEXACT_CUSTOMER_ID = "inexact_customer_id"
UNPARSEABLE_AMOUNT = "unparseable_amount"
INVALID_QUANTITY = "invalid_quantity"
INVALID_DISCOUNT = "invalid_discount"
UTC = "UTC"

# The largest magnitude below which every integer is exact: 2^53 for DOUBLE, 2^24 for FLOAT.
_EXACT_LIMIT = {T.DoubleType: float(2**53), T.FloatType: float(2**24)}
# A time part followed by a zone or an offset: ``21:30:00-05:00``, ``21:30Z``, ``21:30 UTC``,
# ``21:30:00.5 Europe/Paris``. (The zone starts with a character that cannot continue the time.)
_ZONE_SUFFIX = r"\d:\d\d(:\d\d(\.\d*)?)?\s*[^\d\s:.]\S*$"
# Datetime pattern letters that read a zone or an offset (outside quoted text).
_ZONE_LETTERS = re.compile(r"[VzOXxZ]")


@dataclass(frozen=True)
class Parsed:
    """A parsed column: the canonical value, and the issue of a present, unusable value."""

    value: Column
    issue: Column
    """The quarantine reason (null: the value is usable, or absent)."""


def trim_blank(text: Column) -> Column:
    """Text without leading and trailing blanks: every Unicode space (no-break spaces too),
    control and format character (TAB, zero-width space, byte-order mark), as the
    configuration's labels are trimmed (``config.types.strip_blank``). Spark's ``trim``
    removes only U+0020: an id with a trailing TAB would be a second customer."""
    return F.regexp_replace(text.cast("string"), f"^{BLANK}+|{BLANK}+$", "")


def blank_is_null(text: Column) -> Column:
    """Trimmed text (:func:`trim_blank`), with empty text as null (an empty CSV field, or one of
    only blanks, is a missing value)."""
    trimmed = trim_blank(text)
    return F.when(trimmed != "", trimmed)


def customer_id(column: Column, data_type: T.DataType) -> Parsed:
    """The id as text: integral numbers as their integer text, text trimmed.

    Args:
        column: the raw id column.
        data_type: its Spark type.

    Returns:
        The text id, and the issue ``non_integral_customer_id`` (a fraction, NaN, infinity) or
        ``inexact_customer_id`` (a FLOAT/DOUBLE at or beyond 2^24/2^53, where neighbouring
        integers share one value). A row with an issue keeps the raw value as text.

    Raises:
        InputError: the column is neither text nor a number.
    """
    no_issue = F.lit(None).cast("string")
    if isinstance(data_type, T.StringType):
        return Parsed(blank_is_null(column), no_issue)
    if isinstance(data_type, T.IntegralType):
        return Parsed(column.cast("string"), no_issue)
    if isinstance(data_type, T.DecimalType):
        if data_type.scale == 0:
            return Parsed(column.cast("string"), no_issue)
        whole = F.floor(column)
        issue = F.when(column != whole, F.lit(NON_INTEGRAL_CUSTOMER_ID))
        value = F.when(issue.isNull(), whole.cast("string")).otherwise(column.cast("string"))
        return Parsed(value, issue)
    if isinstance(data_type, T.DoubleType | T.FloatType):
        x = column.cast("double")
        limit = _EXACT_LIMIT[type(data_type)]
        # NaN and infinity have no integral part: x % 1 is NaN for them, never 0.
        fraction = F.isnan(x) | ((x % F.lit(1.0)) != 0)
        issue = F.when(fraction, F.lit(NON_INTEGRAL_CUSTOMER_ID)).when(
            F.abs(x) >= limit, F.lit(INEXACT_CUSTOMER_ID)
        )
        value = F.when(issue.isNull(), x.try_cast("long").cast("string")).otherwise(
            x.cast("string")
        )
        return Parsed(value, issue)
    raise InputError(f"a customer id column must be text or a number, found {data_type}")


@dataclass(frozen=True)
class NumberFormat:
    """How numbers are written as text (``input.events.decimal_separator`` and the rest)."""

    decimal_separator: str = "."
    thousands_separator: str | None = None
    currency_symbols: Sequence[str] = ()

    def pattern(self) -> str:
        """The Java regular expression a number's text must match, whole."""
        d = re.escape(self.decimal_separator)
        t = self.thousands_separator
        integer = r"\d+" if t is None else rf"(?:\d{{1,3}}(?:{re.escape(t)}\d{{3}})+|\d+)"
        return rf"^[+-]?\s*(?:{integer}(?:{d}\d+)?|{d}\d+)$"


def number(column: Column, data_type: T.DataType, fmt: NumberFormat, *, issue: str) -> Parsed:
    """A DOUBLE from a numeric column, or from text written in ``fmt``.

    Text is trimmed and its currency symbols removed; it must then be a whole number in the
    format (sign, digits, thousands groups of three, one decimal separator): ``1.234,50`` with
    a decimal comma and a thousands point is 1234.5, ``12,50`` without a decimal comma is an
    issue (never 1250). Empty text is null (missing), not an issue.

    Args:
        column: the raw column.
        data_type: its Spark type.
        fmt: the configured number format of text values.
        issue: the reason given to a present value that is not a number in the format.
    """
    if not isinstance(data_type, T.StringType):
        return Parsed(column.cast("double"), F.lit(None).cast("string"))
    text = column.cast("string")
    if fmt.currency_symbols:
        symbols = "|".join(rf"\Q{s.strip()}\E" for s in fmt.currency_symbols)
        text = F.regexp_replace(text, symbols, "")
    text = blank_is_null(text)
    fits = text.rlike(fmt.pattern())
    plain = F.regexp_replace(text, r"^([+-]?)\s*", "$1")
    if fmt.thousands_separator is not None:
        plain = F.replace(plain, F.lit(fmt.thousands_separator), F.lit(""))
    if fmt.decimal_separator != ".":
        plain = F.replace(plain, F.lit(fmt.decimal_separator), F.lit("."))
    return Parsed(
        F.when(fits, plain.try_cast("double")), F.when(text.isNotNull() & ~fits, F.lit(issue))
    )


UNPARSEABLE_ATTRIBUTE = "unparseable_attribute"
# An attribute number written as CRM and spreadsheet exports write them: digits with optional
# thousands groups (``1,000``, ``1 000``, ``1'000``, no-break spaces too) and a decimal point;
# a range (``51-200``, ``51 to 200``, with an en or em dash too) or an open band (``1000+``).
_ATTR_NUMBER = r"\d{1,3}(?:[,' \x{00A0}\x{202F}]\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_ATTR_RANGE = rf"^({_ATTR_NUMBER})\s*(?:-|\x{{2013}}|\x{{2014}}|to)\s*({_ATTR_NUMBER})$"
_ATTR_PLUS = rf"^({_ATTR_NUMBER})\s*\+$"


def attribute_number(column: Column, data_type: T.DataType) -> Parsed:
    """A numeric attribute of the customers dimension (employee counts, ages) as DOUBLE.

    Numeric columns are taken as they are. Text is trimmed (:func:`trim_blank`) and read as a
    number with optional thousands groups (``1,000``, ``1 000``) and a decimal point; a range
    ``51-200`` (or ``51 - 200``, ``51 to 200``, an en dash) counts as its lower bound and an open
    band ``1000+`` as its bound, since tiers and bins ask "at least". Anything else (``n/a``,
    ``many``) is null with the issue ``unparseable_attribute``, counted by the caller; no text
    ever reaches an ANSI cast.
    """
    if isinstance(data_type, T.NumericType):
        return Parsed(column.cast("double"), F.lit(None).cast("string"))
    text = blank_is_null(column)
    plain = F.regexp_extract(text, rf"^({_ATTR_NUMBER})$", 1)
    low = F.regexp_extract(text, _ATTR_RANGE, 1)
    plus = F.regexp_extract(text, _ATTR_PLUS, 1)
    picked = F.coalesce(F.nullif(plain, F.lit("")), F.nullif(low, F.lit("")),
                        F.nullif(plus, F.lit("")))  # fmt: skip
    digits = F.regexp_replace(picked, r"[,' \x{00A0}\x{202F}]", "")
    value = digits.try_cast("double")
    return Parsed(value, F.when(text.isNotNull() & value.isNull(), F.lit(UNPARSEABLE_ATTRIBUTE)))


def attribute_flag(
    column: Column, data_type: T.DataType, *, true: Sequence[str], false: Sequence[str]
) -> Parsed:
    """A yes/no attribute (``is_business``) as BOOLEAN: a boolean column as it is, numbers 1/0,
    text compared trimmed and lower-cased with the configured spellings
    (``input.customers.true_values`` / ``false_values``: ``yes``, ``B2B``...); anything else is
    null with the issue ``unparseable_attribute``."""
    no_issue = F.lit(None).cast("string")
    if isinstance(data_type, T.BooleanType):
        return Parsed(column, no_issue)
    if isinstance(data_type, T.NumericType):
        value = F.when(column == 1, F.lit(True)).when(column == 0, F.lit(False))
        return Parsed(
            value, F.when(column.isNotNull() & value.isNull(), F.lit(UNPARSEABLE_ATTRIBUTE))
        )
    text = F.lower(blank_is_null(column))
    yes = [strip_blank(v).lower() for v in true]
    no = [strip_blank(v).lower() for v in false]
    value = F.when(text.isin(*yes), F.lit(True)).when(text.isin(*no), F.lit(False))
    return Parsed(value, F.when(text.isNotNull() & value.isNull(), F.lit(UNPARSEABLE_ATTRIBUTE)))


def finite(value: Column) -> Column:
    """True where a DOUBLE is neither NaN nor infinite (null stays null)."""
    return ~(F.isnan(value) | (F.abs(value) == float("inf")))


def event_time(
    column: Column,
    data_type: T.DataType,
    *,
    timestamp_format: str | None,
    time_zone: str,
    keys: tuple[str, str] = ("input.events.columns.event_time", "input.events.timestamp_format"),
) -> Column:
    """The event's instant (TIMESTAMP), or null where the value cannot be read as a time.

    Args:
        column: the raw time column.
        data_type: its Spark type.
        timestamp_format: a Spark datetime pattern for text, ``epoch_seconds``,
            ``epoch_millis``, or None for ISO-8601 text.
        time_zone: the IANA zone of wall-clock times (text without offset, TIMESTAMP_NTZ,
            DATE).
        keys: the config keys of the column and of the format, named in errors.

    Raises:
        InputError: a numeric column without an epoch format (names the config key).
    """
    if timestamp_format in EPOCH_UNITS:
        return epoch(column, timestamp_format)
    if isinstance(data_type, T.TimestampType):
        return column
    if isinstance(data_type, T.TimestampNTZType | T.DateType):
        return wall_clock(column.cast("timestamp_ntz").cast("timestamp"), time_zone)
    if isinstance(data_type, T.NumericType):
        raise InputError(f"{keys[0]} is numeric: set {keys[1]} to epoch_seconds or epoch_millis")
    text = trim_blank(column)
    if timestamp_format:
        parsed = F.try_to_timestamp(text, F.lit(timestamp_format))
        zoned = _pattern_has_zone(timestamp_format)
        return parsed if zoned else wall_clock(parsed, time_zone)
    parsed = F.try_to_timestamp(text)
    return F.when(text.rlike(_ZONE_SUFFIX), parsed).otherwise(wall_clock(parsed, time_zone))


EPOCH_UNITS = {"epoch_seconds": 1, "epoch_millis": 1_000, "epoch_micros": 1_000_000,
               "epoch_nanos": 1_000_000_000}  # fmt: skip
# Instants Spark can hold: years 0001 to 9999, in seconds since 1970.
_EPOCH_RANGE = (-62_135_596_800, 253_402_300_799)


def epoch(column: Column, unit: str) -> Column:
    """The instant of an epoch number in ``unit`` (seconds, milliseconds, micro- or
    nanoseconds since 1970-01-01 UTC), at microsecond precision (Spark's), or null when it
    cannot be a time in that unit (beyond year 9999, NaN, text): quarantined as
    ``invalid_event_time`` rather than ending the job with a long overflow (a nanosecond value
    read as milliseconds)."""
    per_second = EPOCH_UNITS[unit]
    x = column.try_cast("double")
    low, high = _EPOCH_RANGE
    plausible = (x >= F.lit(float(low * per_second))) & (x <= F.lit(float(high * per_second)))
    plausible = plausible & ~F.isnan(x)
    if per_second == 1:
        return F.when(plausible, F.timestamp_seconds(x))
    # Only plausible values reach the arithmetic, so no product can overflow.
    exact = F.when(plausible, column.try_cast("long"))
    if per_second <= 1_000_000:
        micros = exact * F.lit(1_000_000 // per_second)
    else:  # exact integer division (a double would lose the microseconds of a 19-digit value)
        micros = F.floor(exact.cast("decimal(20,0)") / F.lit(per_second // 1_000_000))
    return F.timestamp_micros(micros.cast("long"))


def wall_clock(timestamp: Column, time_zone: str) -> Column:
    """The instant of a wall-clock time of ``time_zone`` (read as if UTC, the session zone).

    A time in a daylight-saving gap or overlap gets the offset before the change; its calendar
    day is unaffected (zones change their clocks away from midnight).
    """
    return timestamp if time_zone == UTC else F.to_utc_timestamp(timestamp, time_zone)


def local_time(instant: Column, time_zone: str) -> Column:
    """The wall-clock time of an instant in ``time_zone``."""
    return instant if time_zone == UTC else F.from_utc_timestamp(instant, time_zone)


def local_date(instant: Column, time_zone: str) -> Column:
    """The calendar day of an instant in ``time_zone``."""
    return F.to_date(local_time(instant, time_zone))


def has_time_of_day(instant: Column, time_zone: str) -> Column:
    """True where an instant is not a midnight of ``time_zone`` (the data has times of day)."""
    return F.unix_micros(local_time(instant, time_zone)) % F.lit(86_400_000_000) != 0


def _pattern_has_zone(pattern: str) -> bool:
    """Whether a datetime pattern reads a zone or an offset (quoted text does not count)."""
    unquoted = re.sub(r"'[^']*'", "", pattern)
    return bool(_ZONE_LETTERS.search(unquoted))
