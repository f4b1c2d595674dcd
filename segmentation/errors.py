"""Errors the jobs turn into a clear one-line message and a non-zero exit code."""


class SegmentationError(Exception):
    """Base class: a problem the user can fix, with a message that says what and where."""


class ConfigError(SegmentationError):
    """An unknown key, a wrong type or an impossible setting in the configuration."""


class InputError(SegmentationError):
    """Input data that cannot be used: missing path, missing or mistyped column, no rows."""


class TableError(SegmentationError):
    """An output table that cannot be written or read as a Delta table."""
