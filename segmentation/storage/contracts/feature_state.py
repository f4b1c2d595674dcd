"""Contracts of the incremental feature state (``features.state``, ``workflows.feature_state``):
what a daily feature run keeps so the next one reads only the new events."""

from __future__ import annotations

from pyspark.sql import types as T

from segmentation.storage.contracts.base import (
    AS_OF,
    CUSTOMER_ID,
    PROPERTIES,
    RUN_ID,
    Table,
    column,
    schema,
)
from segmentation.storage.contracts.inputs import CANONICAL_EVENTS

# Contracts read as tables: one column per line where it fits (formatting kept as written).
# fmt: off
_S, _I, _L, _D, _DATE, _TS = (T.StringType(), T.IntegerType(), T.LongType(), T.DoubleType(),
                              T.DateType(), T.TimestampType())
_c = column
_WRITERS = ("build_features", "run_pipeline")
_INCREMENT = ("increment", "The feature_state_log increment whose run read the events behind "
                           "the row.")
_LEVELS = (
    ("category_share_*", "Order amount in category {level} (the sum behind category_share_*)."),
    ("channel_share_*", "Events in channel {level}."),
    ("device_share_*", "Events on device {level}."),
    ("channel_known_events", "Events with a channel."),
    ("device_known_events", "Events with a device."),
)
_DAY = "The customer's local calendar day (input.events.time_zone)."
_RAW_OR_ID = ("The customer's id as the input names it (normalised); with identity stitching, "
              "the row's raw_id: its normalised identifiers (feature_state_keys gives the "
              "stitched key).")
RAW_ID = "raw_id"
# The state is read whole or by month (joins, partition pruning); only the daily rows' day is
# a filter that per-file statistics can answer (the quarantined rows' reasons are mixed in
# every file). The other statistics cost a quarter to a third of each write and skip nothing
# (50M events: the event identities' write 17.5 s with them, 11.6 s without; BENCHMARKS.md).
_DAY_STATS = {**PROPERTIES, "delta.dataSkippingStatsColumns": "event_date"}
_NO_STATS = {**PROPERTIES, "delta.dataSkippingNumIndexedCols": "0"}

FEATURE_STATE_DAILY = Table(
    "feature_state_daily",
    "Incremental feature state: per customer and local day, the additive sums of the events "
    "one run read (a day two runs read has two rows; readers sum them).",
    _WRITERS, ("event_month",),
    described=(
        (CUSTOMER_ID, _RAW_OR_ID),
        ("event_date", _DAY),
        ("event_month", "The first day of event_date's month (the partition)."),
        _INCREMENT,
        ("events", "Events of any type."), ("orders", "Orders."),
        ("order_amount", "Order amount, input currency."),
        ("return_amount", "Returned amount, input currency."),
        ("discounted_orders", "Orders with a discount above 0."),
        *_LEVELS,
    ),
    properties=_DAY_STATS,
)
FEATURE_STATE_CUSTOMERS = Table(
    "feature_state_customers",
    "Incremental feature state: per customer, the all-time aggregates up to the state's "
    "as_of (feature_state_log).",
    _WRITERS,
    described=(
        (CUSTOMER_ID, "The customer's id as the input names it (normalised); with identity "
                      "stitching, the stitched customer_key of the state's as_of."),
        ("first_event_date", "The first local day with an event."),
        ("first_order_date", "The first local day with an order (null: none)."),
        ("last_order_date", "The last local day with an order up to as_of (null: none)."),
        ("frequency", "Orders."), ("monetary_total", "Order amount, input currency."),
        ("return_amount", "Returned amount, input currency."),
        ("discounted_orders", "Orders with a discount above 0."),
        ("events", "Events of any type."), ("active_days", "Days with any event."),
        ("order_days", "Days with an order."),
        ("gap_count", "Gaps between consecutive order days."),
        ("gap_sum", "Their sum, days."), ("gap_sumsq", "The sum of their squares, days^2."),
        ("gap_max", "The longest, days (null: fewer than two order days)."),
        *_LEVELS,
    ),
    properties=_NO_STATS,
)
FEATURE_STATE_EVENT_IDS_SCHEMA = schema(
    _c(CUSTOMER_ID, _S, False, _RAW_OR_ID),
    _c("event_id", _S, text="The usable event's id (null: an event without id, known by its "
                            "content under the exact duplicate rule)."),
    _c("fingerprint", _L, False, "xxhash64 of the event's content (time, amount, type, "
                                 "category, channel, device, quantity, discount)."),
    _c("event_date", _DATE, False, _DAY),
    _c(_INCREMENT[0], _L, False, _INCREMENT[1]),
)
FEATURE_STATE_EVENT_IDS = Table(
    "feature_state_event_ids",
    "Incremental feature state: the usable events already counted, so a copy arriving in a "
    "later increment is still a duplicate.",
    _WRITERS, (), FEATURE_STATE_EVENT_IDS_SCHEMA, properties=_NO_STATS,
)
FEATURE_STATE_REJECTED_SCHEMA = schema(
    *CANONICAL_EVENTS.fields,
    _c("reason", _S, False, "Why the event was quarantined (as in rejected_events)."),
    _c("raw_values", T.MapType(_S, _S), text="The input row's raw text, for rows that could "
                                             "not be read."),
    _c(RAW_ID, _S, text="With identity stitching: the row's normalised identifiers, a JSON "
                        "array in identity.identifiers order (null: none, or no stitching); "
                        "customer_id is re-keyed from it when a key changes."),
    _c(_INCREMENT[0], _L, False, _INCREMENT[1]),
)
FEATURE_STATE_REJECTED = Table(
    "feature_state_rejected",
    "Incremental feature state: every quarantined input row so far; each rejected_events "
    "snapshot of an incremental run holds them all.",
    _WRITERS, (), FEATURE_STATE_REJECTED_SCHEMA, properties=_NO_STATS,
)
FEATURE_STATE_LEVELS_SCHEMA = schema(
    _c("column", _S, False, "A mix column whose levels are discovered (category, channel or "
                            "device; features.categories ... null)."),
    _c("value", _S, False, "One of its values, as the input has it."),
    _c("events", _L, False, "Usable, de-duplicated events with that value this run read."),
    _c(_INCREMENT[0], _L, False, _INCREMENT[1]),
)
FEATURE_STATE_LEVELS = Table(
    "feature_state_levels",
    "Incremental feature state: events per value of each mix column whose levels are "
    "discovered; the levels are the features.max_levels values with the most events summed "
    "over all runs (empty when every level is configured).",
    _WRITERS, (), FEATURE_STATE_LEVELS_SCHEMA,
)
FEATURE_STATE_KEYS_SCHEMA = schema(
    _c(RAW_ID, _S, False, "A combination of normalised identifiers read from the events, a "
                          "JSON array in identity.identifiers order."),
    _c(CUSTOMER_ID, _S, text="Its stitched customer_key in identity_map of the state's as_of "
                             "(null: none of them is in the map: its rows are quarantined)."),
)
FEATURE_STATE_KEYS = Table(
    "feature_state_keys",
    "Incremental feature state with identity stitching: the stitched key of every raw_id of "
    "the other state tables as of the state's as_of; a run re-keys them from identity_map "
    "and recomputes only the customers whose raw_ids moved (merges and splits).",
    _WRITERS, (), FEATURE_STATE_KEYS_SCHEMA, properties=_NO_STATS,
)
FEATURE_STATE_LOG_SCHEMA = schema(
    _c("increment", _L, False, "The run's number: 1, 2, ... (a rebuild too)."),
    _c(AS_OF, _DATE, False, "The day the state's customer aggregates are as of."),
    _c("mode", _S, False, "rebuild (from every event) or incremental (from the new input)."),
    _c("reason", _S, False, "Why this mode (a rebuild names what made the state unusable)."),
    _c("state_version", _I, False, "The code's state format; another one forces a rebuild."),
    _c("fingerprint", _S, False, "SHA-256 of the settings the state depends on (settings)."),
    _c("settings", _S, False, "Those settings, JSON: input mapping and formats, time zone, "
                              "levels (configured, or discovered_top: features.max_levels), "
                              "duplicate and date rules."),
    _c("input_kind", _S, False, "delta (table versions) or files (the file listing)."),
    _c("input_marker", _S, False, "JSON: the input's Delta version, or each file's size and "
                                  "modification time, up to which rows were read."),
    _c("input_rows", _L, False, "Input rows read since the rebuild."),
    _c("timed_rows", _L, False, "Of which with a time of day (the auto duplicate rule)."),
    _c("parsed_times", _L, False, "Of which with a readable time."),
    _c("duplicate_rule", _S, False, "The duplicate rule resolved at the rebuild."),
    _c("table_versions", T.MapType(_S, _L), False,
       "The state tables' Delta versions this increment left: any other version means a "
       "half-written state, which is never used."),
    _c("new_rows", _L, False, "Input rows this run read."),
    _c(RUN_ID, _S),
    _c("written_at", _TS, False, "When the run wrote the row (UTC)."),
)
FEATURE_STATE_LOG = Table(
    "feature_state_log",
    "Incremental feature state: one row per feature run that kept the state; the last row "
    "says what the state holds and is valid only with the table versions it records.",
    _WRITERS, (), FEATURE_STATE_LOG_SCHEMA,
)
# fmt: on
