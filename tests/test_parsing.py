"""Interpreting raw values: customer ids, number formats and times, each against hand values."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.inputs import parsing

NY = "America/New_York"
UTC_TEXT = "yyyy-MM-dd'T'HH:mm'Z'"  # the session time zone is UTC


def one_column(spark, values, data_type):
    return spark.createDataFrame(
        [(v,) for v in values], T.StructType([T.StructField("v", data_type)])
    )


def pairs(df, parsed):
    """(value, issue) per row."""
    return [tuple(r) for r in df.select(parsed.value, parsed.issue).collect()]


def ids(spark, values, data_type):
    df = one_column(spark, values, data_type)
    return pairs(df, parsing.customer_id(F.col("v"), data_type))


def test_customer_id_integral_double_becomes_its_integer_text(spark):
    assert ids(spark, [17850.0, -3.0, 0.0], T.DoubleType()) == [
        ("17850", None), ("-3", None), ("0", None),
    ]  # fmt: skip


def test_customer_id_fractional_or_nan_double_is_non_integral(spark):
    assert ids(spark, [17850.5, float("nan")], T.DoubleType()) == [
        ("17850.5", parsing.NON_INTEGRAL_CUSTOMER_ID),
        ("NaN", parsing.NON_INTEGRAL_CUSTOMER_ID),
    ]


def test_customer_id_double_at_2_53_is_inexact(spark):
    # 2^53 = 9007199254740992: from there on, neighbouring integers share one DOUBLE.
    got = ids(spark, [2.0**53 - 1, 2.0**53, -(2.0**53)], T.DoubleType())
    assert got[0] == ("9007199254740991", None)
    assert [issue for _, issue in got[1:]] == [parsing.INEXACT_CUSTOMER_ID] * 2


def test_customer_id_float_at_2_24_is_inexact(spark):
    # FLOAT holds every integer below 2^24 = 16777216 exactly.
    assert ids(spark, [16777215.0, 16777216.0], T.FloatType()) == [
        ("16777215", None), ("1.6777216E7", parsing.INEXACT_CUSTOMER_ID),
    ]  # fmt: skip


def test_customer_id_decimal_with_scale(spark):
    got = ids(spark, [Decimal("17850.00"), Decimal("17850.50")], T.DecimalType(10, 2))
    assert got == [("17850", None), ("17850.50", parsing.NON_INTEGRAL_CUSTOMER_ID)]


def test_customer_id_integers_and_text(spark):
    assert ids(spark, [17850], T.LongType()) == [("17850", None)]
    # Text is kept as written, only trimmed: leading zeros are part of the id.
    assert ids(spark, [" 00123 ", "", None], T.StringType()) == [
        ("00123", None), (None, None), (None, None),
    ]  # fmt: skip


def numbers(spark, values, fmt=None):
    df = one_column(spark, values, T.StringType())
    fmt = fmt or parsing.NumberFormat()
    return pairs(df, parsing.number(F.col("v"), T.StringType(), fmt, issue="bad"))


def test_number_with_decimal_comma(spark):
    fmt = parsing.NumberFormat(decimal_separator=",")
    assert numbers(spark, ["12,50", "-3,00", " 7 ", "12.50", "1.234,50", ""], fmt) == [
        (12.5, None), (-3.0, None), (7.0, None),
        (None, "bad"),  # a point is not the decimal separator here: never 1250 or 12.5
        (None, "bad"),  # no thousands separator configured
        (None, None),  # empty: missing, not an issue
    ]  # fmt: skip


def test_number_with_decimal_comma_and_thousands_point(spark):
    fmt = parsing.NumberFormat(decimal_separator=",", thousands_separator=".")
    assert numbers(spark, ["1.234,50", "1.234.567", "1234,5", "1.23", "12.3456,7"], fmt) == [
        (1234.5, None), (1234567.0, None), (1234.5, None),
        (None, "bad"),  # a group of two digits is not a thousands group
        (None, "bad"),
    ]  # fmt: skip


def test_number_default_format_rejects_a_decimal_comma(spark):
    assert numbers(spark, ["12,50", "12.5", ".5", "1e3", "NaN"]) == [
        (None, "bad"), (12.5, None), (0.5, None), (None, "bad"), (None, "bad"),
    ]  # fmt: skip


def test_number_with_currency_symbols_and_space_groups(spark):
    fmt = parsing.NumberFormat(",", " ", ("€", "EUR"))
    assert numbers(spark, ["€ 1 234,50", "12,00 EUR", "-€ 3,10", "$ 3,10"], fmt) == [
        (1234.5, None), (12.0, None), (-3.1, None), (None, "bad"),
    ]  # fmt: skip


def test_number_numeric_column_is_taken_as_it_is(spark):
    df = one_column(spark, [1234.5], T.DoubleType())
    parsed = parsing.number(F.col("v"), T.DoubleType(), parsing.NumberFormat(","), issue="bad")
    assert pairs(df, parsed) == [(1234.5, None)]


def instants(spark, values, data_type, *, fmt=None, zone=NY):
    df = one_column(spark, values, data_type)
    time = parsing.event_time(F.col("v"), data_type, timestamp_format=fmt, time_zone=zone)
    return [r[0] for r in df.select(F.date_format(time, UTC_TEXT)).collect()]


def test_event_time_iso_with_offset_is_an_instant_in_any_zone(spark):
    values = ["2025-01-31T21:30:00-05:00", "2025-01-31T21:30:00Z", "2025-01-31 21:30:00+01:00"]
    expected = ["2025-02-01T02:30Z", "2025-01-31T21:30Z", "2025-01-31T20:30Z"]
    assert instants(spark, values, T.StringType(), zone=NY) == expected
    assert instants(spark, values, T.StringType(), zone="Asia/Tokyo") == expected


def test_event_time_iso_without_offset_is_local_time(spark):
    # New York is UTC-5 in winter (EST) and UTC-4 in summer (EDT).
    values = ["2025-01-31T21:30:00", "2025-07-01 21:30", "2025-01-31", "not a time"]
    assert instants(spark, values, T.StringType()) == [
        "2025-02-01T02:30Z", "2025-07-02T01:30Z", "2025-01-31T05:00Z", None,
    ]  # fmt: skip


def test_event_time_pattern_without_zone_is_local_with_zone_an_instant(spark):
    local = instants(spark, ["31/01/2025 21:30"], T.StringType(), fmt="dd/MM/yyyy HH:mm")
    zoned = instants(spark, ["31/01/2025 21:30 +0100"], T.StringType(), fmt="dd/MM/yyyy HH:mm Z")
    quoted = instants(spark, ["31/01/2025 Z 21:30"], T.StringType(), fmt="dd/MM/yyyy 'Z' HH:mm")
    assert local == ["2025-02-01T02:30Z"]
    assert zoned == ["2025-01-31T20:30Z"]
    assert quoted == ["2025-02-01T02:30Z"]  # a quoted Z is text, not a zone


def test_event_time_timestamp_ntz_and_date_are_local(spark):
    ntz = instants(spark, [dt.datetime(2025, 1, 31, 21, 30)], T.TimestampNTZType())
    date = instants(spark, [dt.date(2025, 7, 1)], T.DateType())
    assert ntz == ["2025-02-01T02:30Z"]
    assert date == ["2025-07-01T04:00Z"]  # local midnight, EDT


def test_event_time_epochs_are_instants(spark):
    # 1738377000 s = 2025-02-01T02:30:00Z.
    assert instants(spark, [1738377000], T.LongType(), fmt="epoch_seconds") == ["2025-02-01T02:30Z"]
    assert instants(spark, [1738377000000], T.LongType(), fmt="epoch_millis") == [
        "2025-02-01T02:30Z"
    ]


def test_local_date_around_midnight_and_the_dst_change(spark):
    # New York moved from EST (UTC-5) to EDT (UTC-4) at 2025-03-09 07:00Z.
    df = spark.createDataFrame(
        [(dt.datetime(2025, 3, 9, 4, 30, tzinfo=dt.UTC),),  # 23:30 EST on 03-08
         (dt.datetime(2025, 3, 10, 3, 30, tzinfo=dt.UTC),),  # 23:30 EDT on 03-09
         (dt.datetime(2025, 3, 10, 4, 30, tzinfo=dt.UTC),)],  # 00:30 EDT on 03-10
        "t timestamp",
    )  # fmt: skip
    got = [r[0] for r in df.select(parsing.local_date(F.col("t"), NY)).collect()]
    assert got == [dt.date(2025, 3, 8), dt.date(2025, 3, 9), dt.date(2025, 3, 10)]


def test_has_time_of_day_is_false_only_at_local_midnight(spark):
    df = spark.createDataFrame(
        [(dt.datetime(2025, 1, 31, 5, 0, tzinfo=dt.UTC),),  # 00:00 EST
         (dt.datetime(2025, 1, 31, 0, 0, tzinfo=dt.UTC),)],  # 19:00 EST the day before
        "t timestamp",
    )  # fmt: skip
    got = [r[0] for r in df.select(parsing.has_time_of_day(F.col("t"), NY)).collect()]
    assert got == [False, True]


@pytest.mark.parametrize(
    ("pattern", "zoned"),
    [("dd/MM/yyyy HH:mm", False), ("yyyy-MM-dd HH:mm XXX", True), ("HH:mm 'z'", False),
     ("yyyy-MM-dd HH:mm VV", True)],
)  # fmt: skip
def test_pattern_has_zone(pattern, zoned):
    assert parsing._pattern_has_zone(pattern) is zoned
