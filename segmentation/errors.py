"""Errors the jobs turn into a clear one-line message and a non-zero exit code."""

import re


class SegmentationError(Exception):
    """Base class: a problem the user can fix, with a message that says what and where."""


class ConfigError(SegmentationError):
    """An unknown key, a wrong type or an impossible setting in the configuration."""


class InputError(SegmentationError):
    """Input data that cannot be used: missing path, missing or mistyped column, no rows."""


class TableError(SegmentationError):
    """An output table that cannot be written or read as a Delta table."""


_TYPE_MISMATCH = re.compile(
    r"PARQUET_COLUMN_DATA_TYPE_MISMATCH\].*?reading file (?P<file>\S+?)\. .*?Parquet column "
    r"\[?(?P<column>[^\]]+?)\]?\. Expected Spark type (?P<expected>\S+?), actual Parquet type "
    r"(?P<actual>\S+?)\.",
    re.S,
)


def parquet_type_mismatch(error: BaseException) -> InputError | None:
    """The user's error for Spark's failure to read an input's Parquet file whose column has
    another type than the input's schema (Spark reads every file with one schema, taken from
    one of them), else None."""
    found = _TYPE_MISMATCH.search(str(error))
    if found is None:
        return None
    file, column = found["file"].removeprefix("file://"), found["column"]
    return InputError(
        f"input file {file} holds column '{column}' as Parquet {found['actual']} where the "
        f"input's schema, read from its other files, has {found['expected']}: Spark reads every "
        "file of an input with one schema. Write that file with the same column types as the "
        "others"
    )
