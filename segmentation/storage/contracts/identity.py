"""Contracts of identity stitching's tables (``workflows/identities``) and of the generator's
identity sample (``generator.identities``)."""

from __future__ import annotations

from pyspark.sql import types as T

from segmentation.storage.contracts.base import AS_OF, REASON, RUN_ID, Table, column, schema

# Contracts read as tables: one column per line where it fits (formatting kept as written).
# fmt: off
_S, _L, _DATE, _TS = T.StringType(), T.LongType(), T.DateType(), T.TimestampType()
_c = column
_STITCHING = ("stitch_identities", "run_pipeline")
_TYPE = "The identifier's type (email, phone, device_id, anonymous_id, loyalty_card, crm_id, " \
        "or a type you configured)."
_ID = "The identifier, normalised for its type (emails trimmed and lower-cased, phones as " \
      "digits with the country code)."

CUSTOMER_KEY = "customer_key"
_KEY = "The stitched customer key: stable across runs (the key of the component's oldest " \
       "member); customer_id in the other tables when stitching is on."

IDENTITY_MAP_SCHEMA = schema(
    _c("identifier_type", _S, False, _TYPE), _c("identifier", _S, False, _ID),
    _c(CUSTOMER_KEY, _S, False, _KEY),
    _c("first_seen", _TS, text="The identifier's first sighting, a UTC instant (null: undated, "
                               "e.g. from the customers input)."),
    _c("last_seen", _TS, text="Its last sighting up to as_of, a UTC instant (null: undated)."),
    _c(AS_OF, _DATE, text="The snapshot: identifiers seen up to this day."),
)
IDENTITY_MAP = Table(
    "identity_map",
    "One row per identifier and as_of: every identifier seen up to as_of and the stitched "
    "customer key it belongs to.",
    _STITCHING, (AS_OF,), IDENTITY_MAP_SCHEMA,
)
IDENTITY_CHANGES_SCHEMA = schema(
    _c(AS_OF, _DATE, text="The snapshot the change took effect in."),
    _c("previous_as_of", _DATE, text="The previous identity_map snapshot it is compared with."),
    _c("change", _S, False, "merge (components joined: the oldest key won) or split (a "
                            "component fell apart: the part with the oldest member kept it)."),
    _c("from_key", _S, False, "The key before the change."),
    _c("to_key", _S, False, "The key after the change."),
    _c("identifiers", _L, False, "Identifiers that moved from from_key to to_key."),
    _c(RUN_ID, _S),
)
IDENTITY_CHANGES = Table(
    "identity_changes",
    "One row per customer key a run merged or split, against the previous identity_map "
    "snapshot.",
    _STITCHING, (AS_OF,), IDENTITY_CHANGES_SCHEMA,
)
IDENTITY_GUARDS_SCHEMA = schema(
    _c(AS_OF, _DATE, text="The snapshot the guard held back in."),
    _c(REASON, _S, False, "max_degree (an identifier linked to more identifiers of a type than "
                          "identity.max_degree allows: never used as an edge) or "
                          "max_component_size (a component above identity.max_component_size: "
                          "kept and reported)."),
    _c(CUSTOMER_KEY, _S, False, _KEY),
    _c("identifier_type", _S, text=f"{_TYPE} Null for a component."),
    _c("identifier", _S, text="The guarded identifier (null for a component)."),
    _c("linked_type", _S, text="The type it is linked to too many of (max_degree)."),
    _c("degree", _L, text="Distinct identifiers of linked_type it is linked to (max_degree)."),
    _c("limit", _L, text="The configured limit it exceeded."),
    _c("component_size", _L, text="Identifiers in the component (max_component_size)."),
    _c(RUN_ID, _S),
)
IDENTITY_GUARDS = Table(
    "identity_guards",
    "One row per identifier or component the guards against over-merging held back.",
    _STITCHING, (AS_OF,), IDENTITY_GUARDS_SCHEMA,
)

_GENERATOR = ("generate_events", "run_pipeline")
_SAMPLE = "The generated sample with generator.identities, never written for your own data:"
IDENTITY_EDGES = Table(
    "identity_edges", f"{_SAMPLE} one row per login (a cookie seen with a CRM id).", _GENERATOR,
    described=(
        ("anonymous_id", "The cookie that logged in."),
        ("crm_id", "The CRM id it logged in as."),
        ("login_time", "When, a UTC instant (the customer's first event)."),
    ),
)
IDENTITY_TRUTH = Table(
    "identity_truth",
    f"{_SAMPLE} one row per planted identifier and the customer it belongs to (a shared "
    "device: several rows).", _GENERATOR,
    described=(
        ("identifier_type", _TYPE), ("identifier", _ID),
        ("customer_id", "The planted customer the identifier belongs to."),
    ),
)
# fmt: on
