"""Strict scalar types, read-only mappings and the base of every config section."""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Mapping
from typing import Annotated, Any, Literal, NoReturn, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Strict,
    model_validator,
)

EventFormat = Literal["delta", "parquet", "csv", "json"]
Algorithm = Literal["kmeans", "bisecting_kmeans"]
Transform = Literal["log1p", "none"]

V = TypeVar("V")


class _FrozenDict(dict[str, V]):
    """A read-only dict (pickles and compares like a dict): config mappings are never mutated."""

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("configuration mappings are read-only")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))


def _lax_str(value: Any) -> Any:
    """A string setting takes any YAML scalar, as text (``2024`` -> ``"2024"``)."""
    return str(value) if isinstance(value, bool | int | float | dt.date) else value


def _iso_date(value: Any) -> Any:
    """``YYYY-MM-DD`` text (quoted in YAML) or a YAML date; anything else fails as a date."""
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            return value
    return value


def _str_keys(value: Any) -> Any:
    return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else value


Str = Annotated[str, BeforeValidator(_lax_str), Strict()]
Int = Annotated[int, Strict()]  # not a bool, not a float
Float = Annotated[float, Strict()]  # an int or a float, not a bool; always a float
Bool = Annotated[bool, Strict()]
Date = Annotated[dt.date, BeforeValidator(_iso_date), Strict()]
FrozenMap = Annotated[Mapping[str, V], BeforeValidator(_str_keys), AfterValidator(_FrozenDict)]


BLANK = r"[\p{Z}\p{C}\s]"
"""What is trimmed from every text key and label, as a Java regular expression class: Unicode
separators (space, no-break space U+00A0, narrow and other spaces, line and paragraph
separators), control and format characters (TAB, CR, LF, zero-width space U+200B, byte-order
mark U+FEFF) and whitespace. Spark's ``trim`` removes only U+0020."""


def is_blank(char: str) -> bool:
    """One character of :data:`BLANK`, in Python (the same Unicode categories)."""
    return char.isspace() or unicodedata.category(char)[0] in "ZC"


def strip_blank(text: str) -> str:
    """``text`` without leading and trailing :data:`BLANK` characters: the one normalisation
    of text keys and labels (ids, event types, levels, header names, attribute values), applied
    alike to the data (``parsing.trim_blank``) and to the configuration."""
    start, end = 0, len(text)
    while start < end and is_blank(text[start]):
        start += 1
    while end > start and is_blank(text[end - 1]):
        end -= 1
    return text[start:end]


def _require(ok: bool, message: str) -> None:
    """A cross-field rule; the message names the key(s) in full and says how to fix them."""
    if not ok:
        raise ValueError(message)


class _Section(BaseModel):
    """Base of every config model: frozen, unknown keys rejected, an empty YAML section is {}."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    def __init__(self, *args: Any, **data: Any) -> None:
        # Positional values in field order, as the former dataclasses took them (B2bTier("Small")).
        # Errors stay pydantic's ValidationError here: pydantic also calls this for nested
        # sections, and prefixes their error locations with the parent's.
        names = list(type(self).model_fields)
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional values")
        for name, value in zip(names, args, strict=False):
            if name in data:
                raise TypeError(f"{type(self).__name__} got two values for {name!r}")
            data[name] = value
        super().__init__(**data)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_defaults(cls, data: Any) -> Any:
        return {} if data is None else data


def join_path(root: str, name: str) -> str:
    """Join a table name to a root that may be a local path or a URI (s3a://, abfss://...)."""
    return root.rstrip("/") + "/" + name
