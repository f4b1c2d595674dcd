"""The ``identity`` section: which columns of which input are identifiers, how each type is
normalised, the guards against over-merging, and the graph algorithm's limits."""

from __future__ import annotations

import re
from typing import Self

from pydantic import Field, model_validator

from segmentation.config.types import (
    Bool,
    EventFormat,
    FrozenMap,
    Int,
    Str,
    _FrozenDict,
    _require,
    _Section,
)

__all__ = [
    "IDENTIFIER_TYPES",
    "EdgesSourceConfig",
    "Identifier",
    "IdentityConfig",
    "resolved_identity",
]

# The built-in types (each with its normalisation); any other name made of a-z, 0-9 and
# underscores is a user-defined type, trimmed and kept as written.
IDENTIFIER_TYPES = ("email", "phone", "device_id", "anonymous_id", "loyalty_card", "crm_id")
_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Keys of identity.placeholders that are not types: placeholders of every type.
ANY_TYPE = "any"

DEFAULT_PLACEHOLDERS = {
    ANY_TYPE: ("unknown", "none", "null", "nil", "n/a", "na", "-", "0", "undefined", "anonymous",
               "test", "guest"),
    "email": ("test@example.com", "test@test.com", "noemail@example.com", "no@email.com",
              "none@none.com", "a@a.com", "noreply@example.com"),
    "phone": ("0000000000", "1234567890", "9999999999"),
}  # fmt: skip
DEFAULT_MAX_DEGREE = {"crm_id": 1, "email": 3, "phone": 3, "loyalty_card": 2, "device_id": 5}


class Identifier(_Section):
    """One identifier column of an input and its type."""

    column: Str
    type: Str

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(bool(self.column.strip()), "an identifier's column must name a column")
        _require(
            bool(_TYPE_NAME.match(self.type)),
            f"identifier type {self.type!r} (column {self.column!r}) must be lower-case a-z, "
            f"0-9 and _ (built-in: {', '.join(IDENTIFIER_TYPES)})",
        )
        return self


class EdgesSourceConfig(_Section):
    """Pairs (or groups) of identifiers known to belong together: one row per link."""

    path: Str | None = None
    format: EventFormat = "delta"
    options: FrozenMap[Str] = Field(default_factory=_FrozenDict)
    identifiers: tuple[Identifier, ...] = ()
    time: Str | None = None
    timestamp_format: Str | None = None


def _check_columns(key: str, identifiers: tuple[Identifier, ...]) -> None:
    columns = [i.column.lower() for i in identifiers]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    _require(not repeated, f"{key} lists the column(s) {repeated} more than once")


class IdentityConfig(_Section):
    """Identity stitching (``jobs/stitch_identities.py``)."""

    enabled: Bool | None = None
    identifiers: tuple[Identifier, ...] = ()
    customers: tuple[Identifier, ...] = ()
    survey: tuple[Identifier, ...] = ()
    customer_id_type: Str = "crm_id"
    edges: EdgesSourceConfig = Field(default_factory=EdgesSourceConfig)
    phone_country_code: Str | None = None
    placeholders: FrozenMap[tuple[Str, ...]] = Field(
        default_factory=lambda: _FrozenDict(DEFAULT_PLACEHOLDERS)
    )
    max_degree: FrozenMap[Int] = Field(default_factory=lambda: _FrozenDict(DEFAULT_MAX_DEGREE))
    max_component_size: Int = 50
    max_iterations: Int = 60
    driver_max_edges: Int = 1_000_000
    checkpoint_dir: Str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(
            self.enabled is not True or bool(self.identifiers),
            "identity.enabled is true but identity.identifiers lists no column of the events",
        )
        for key in ("identifiers", "customers", "survey"):
            _check_columns(f"identity.{key}", getattr(self, key))
        _check_columns("identity.edges.identifiers", self.edges.identifiers)
        _require(
            self.edges.path is None or len(self.edges.identifiers) >= 2,
            "identity.edges.identifiers must list at least two columns (a row links them)",
        )
        _require(
            bool(_TYPE_NAME.match(self.customer_id_type)),
            "identity.customer_id_type must be a type name (a-z, 0-9, _)",
        )
        code = self.phone_country_code
        _require(
            code is None or (code.isdigit() and 1 <= len(code) <= 3),
            f"identity.phone_country_code must be 1 to 3 digits (1, 44, 353), got {code!r}",
        )
        for kind, limit in self.max_degree.items():
            _require(limit >= 1, f"identity.max_degree.{kind} must be >= 1")
        _require(self.max_component_size >= 2, "identity.max_component_size must be >= 2")
        _require(self.max_iterations >= 1, "identity.max_iterations must be >= 1")
        _require(self.driver_max_edges >= 0, "identity.driver_max_edges must be >= 0")
        return self

    def types(self) -> tuple[str, ...]:
        """Every identifier type the inputs name, sorted."""
        lists = (self.identifiers, self.customers, self.survey, self.edges.identifiers)
        return tuple(sorted({i.type for ids in lists for i in ids} | {self.customer_id_type}))


# The bundled sample's identifier columns (``generator.identities``).
def _ids(*pairs: tuple[str, str]) -> tuple[Identifier, ...]:
    return tuple(Identifier(column=column, type=kind) for column, kind in pairs)


SAMPLE_EVENTS = _ids(
    ("crm_id", "crm_id"), ("email", "email"), ("anonymous_id", "anonymous_id"),
    ("device_id", "device_id"), ("loyalty_card", "loyalty_card"),
)  # fmt: skip
SAMPLE_CUSTOMERS = _ids(
    ("customer_id", "crm_id"), ("email", "email"), ("phone", "phone"),
    ("loyalty_card", "loyalty_card"),
)  # fmt: skip
SAMPLE_EDGES = _ids(("anonymous_id", "anonymous_id"), ("crm_id", "crm_id"))
SAMPLE_COUNTRY_CODE = "1"


def resolved_identity(
    identity: IdentityConfig, *, sample: bool, sample_edges: str
) -> IdentityConfig | None:
    """The stitching in force, or None without one.

    ``enabled`` true: as configured; false: none; null: the bundled sample generated with
    ``generator.identities`` is stitched (``sample``), anything else is not. For that sample,
    lists left empty get the sample's columns and the edges input is its login table
    (``sample_edges``).
    """
    if identity.enabled is False or (identity.enabled is None and not sample):
        return None
    if not sample or identity.identifiers:
        return identity.model_copy(update={"enabled": True})
    edges = identity.edges
    if edges.path is None:
        edges = edges.model_copy(
            update={"path": sample_edges, "identifiers": SAMPLE_EDGES, "time": "login_time"}
        )
    return identity.model_copy(
        update={
            "enabled": True,
            "identifiers": SAMPLE_EVENTS,
            "customers": identity.customers or SAMPLE_CUSTOMERS,
            "edges": edges,
            "phone_country_code": identity.phone_country_code or SAMPLE_COUNTRY_CODE,
        }
    )
