"""The user's columns before any data is read: paths, names and type families checked (Parquet
and CSV headers without Spark), names matched after trimming blanks.

Imports: ``config``, ``errors`` and ``inputs.parsing`` (pyarrow and the standard library's
``csv``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping

import pyarrow as pa
import pyarrow.dataset as pads
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from segmentation.config import EventSourceConfig
from segmentation.config.types import strip_blank
from segmentation.errors import InputError
from segmentation.inputs import parsing

# Arrow / Spark type families accepted for each canonical column.
_NUMERIC = "numeric"
_TEMPORAL = "timestamp, date, string or epoch number"
_EXPECTED = {"amount": _NUMERIC, "quantity": _NUMERIC, "discount": _NUMERIC}


def check_source(source: EventSourceConfig, path: str) -> pa.Schema | None:
    """Fail fast, before any Spark job, if the path is unreadable or a mapped column is missing.

    Returns the source's Arrow schema where it can be read without Spark (Parquet), else None
    (Delta, CSV, JSON: their columns are checked when Spark reads the table's schema).
    """
    if "://" not in path and not os.path.exists(path):
        raise InputError(
            f"input path not found: {path} (config key input.events.path; "
            "run `make run` to generate the sample, or point the key at your events)"
        )
    schema: pa.Schema | None = None
    if source.format == "delta" and "://" not in path:
        if not os.path.isdir(os.path.join(path, "_delta_log")):
            raise InputError(
                f"input path {path} is not a Delta table (no _delta_log; input.events.format "
                "is 'delta'): set input.events.format to the files' format"
            )
    elif source.format == "parquet" and "://" not in path:
        try:
            schema = pads.dataset(path, format="parquet", partitioning="hive").schema
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"input path {path} is not readable as Parquet: {exc}") from exc
    elif source.format == "csv" and "://" not in path:
        header = csv_header(path, source.options)
        if header is not None:
            check_columns(source, dict.fromkeys(header, "string"), path)
    if schema is not None:
        check_columns(source, {f.name: _family_arrow(f.type) for f in schema}, path)
    return schema


def csv_header(path: str, options: Mapping[str, str]) -> list[str] | None:
    """The column names of a local CSV input (the first line of its files, read with the
    configured ``sep``, ``quote`` and ``encoding``), so a wrong column name is found before
    Spark starts; None when there is no header line to read (``header: false``, no file).

    Raises:
        InputError: two files' headers differ: Spark would read every file with one file's
            column order, silently mixing up columns.
    """
    if str(options.get("header", "true")).lower() != "true":
        return None
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(root, f) for root, _, names in os.walk(path) for f in names
        if not f.startswith((".", "_"))
    )  # fmt: skip
    sep, quote = options.get("sep", options.get("delimiter", ",")), options.get("quote", '"')
    if not files or len(sep) != 1 or len(quote) > 1:
        return None  # a multi-character separator: Spark checks the names when it reads
    headers = [(f, row) for f in files if (row := _first_row(f, options, sep, quote))]
    if not headers:
        return None
    first_file, first = headers[0]
    for other_file, other in headers[1:]:
        if other != first:
            raise InputError(
                f"input path {path}: CSV files with different headers: {first_file} has "
                f"{first}, {other_file} has {other}. Spark reads all files with one column "
                "order, which would mix up their columns: write every file with the same "
                "header, in the same order"
            )
    return first


def _first_row(file: str, options: Mapping[str, str], sep: str, quote: str) -> list[str] | None:
    encoding = options.get("encoding", options.get("charset", "utf-8"))
    try:
        with open(file, encoding=encoding, newline="") as handle:
            first = handle.readline()
    except (OSError, LookupError, UnicodeDecodeError) as exc:
        raise InputError(f"input file {file}: cannot read its CSV header ({exc})") from exc
    if not quote:
        return next(csv.reader([first], delimiter=sep, quoting=csv.QUOTE_NONE), None)
    return next(csv.reader([first], delimiter=sep, quotechar=quote), None)


def header_key(name: str) -> str:
    """How a column name is matched to its mapping: blanks trimmed, case ignored (a
    hand-edited CSV header ``customer_id, event_time`` still maps ``event_time``)."""
    return strip_blank(name).lower()


def columns_text(names: Iterable[str]) -> str:
    """The input's column names for an error message, quoted, with a note when some carry
    leading or trailing blanks (which matching ignores, but a reader should know about)."""
    names = sorted(names)
    text = ", ".join(repr(n) for n in names)
    if any(strip_blank(n) != n for n in names):
        text += " (some carry leading or trailing whitespace, which matching ignores)"
    return text


def check_columns(source: EventSourceConfig, families: dict[str, str], path: str) -> None:
    by_key = {header_key(name): family for name, family in families.items()}
    for canonical, user in source.columns.mapped().items():
        family = by_key.get(header_key(user))
        if family is None:
            raise InputError(
                f"column '{user}' (config key input.events.columns.{canonical}) is not in "
                f"{path}; its columns are: {columns_text(families)}"
            )
        expected = _EXPECTED.get(canonical)
        if expected == _NUMERIC and family not in ("numeric", "string"):
            raise InputError(
                f"column '{user}' (input.events.columns.{canonical}) must be numeric, "
                f"found {family}"
            )
        if canonical == "event_time" and family not in ("timestamp", "date", "string", "numeric"):
            raise InputError(
                f"column '{user}' (input.events.columns.event_time) must be a {_TEMPORAL}, "
                f"found {family}"
            )
        epochs = tuple(parsing.EPOCH_UNITS)
        if canonical == "event_time" and family == "numeric" and (
            source.timestamp_format not in epochs
        ):  # fmt: skip
            raise InputError(
                f"column '{user}' (input.events.columns.event_time) is numeric: set "
                f"input.events.timestamp_format to one of {', '.join(epochs)}"
            )
        if canonical == "customer_id" and family not in ("string", "numeric"):
            raise InputError(
                f"column '{user}' (input.events.columns.customer_id) must be text or a number, "
                f"found {family}"
            )


def _family_arrow(data_type: pa.DataType) -> str:
    if pa.types.is_integer(data_type) or pa.types.is_floating(data_type):
        return "numeric"
    if pa.types.is_decimal(data_type):
        return "numeric"
    if pa.types.is_timestamp(data_type):
        return "timestamp"
    if pa.types.is_date(data_type):
        return "date"
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return "string"
    if pa.types.is_dictionary(data_type):
        return _family_arrow(data_type.value_type)
    return str(data_type)


def spark_family(data_type: T.DataType) -> str:
    """The type family of a Spark type: numeric, timestamp, date, string or its own name."""
    if isinstance(data_type, T.NumericType):
        return "numeric"
    if isinstance(data_type, T.TimestampType | T.TimestampNTZType):
        return "timestamp"
    if isinstance(data_type, T.DateType):
        return "date"
    if isinstance(data_type, T.StringType):
        return "string"
    return data_type.simpleString()


def find_column(raw: DataFrame, user: str, key: str, path: str) -> str:
    """The name of the column ``user`` (the value of config key ``key``) in ``raw``, matched
    case-insensitively as every mapping is.

    Raises:
        InputError: no such column (naming the key, the path and the columns there are).
    """
    by_lower = {c.lower(): c for c in raw.columns}
    name = by_lower.get(user.lower())
    if name is None:
        raise InputError(
            f"column '{user}' ({key}) is not in {path}; its columns are: "
            f"{', '.join(sorted(raw.columns))}"
        )
    return name
